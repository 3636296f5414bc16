import assert from "node:assert/strict";
import { test } from "node:test";

// The long-poll transport (protocol version 4) is tested in longpoll.test.mjs.
import { WebSocketTransport } from "../lib/transports.js";
import { FakeClock } from "./fakes.mjs";

class FakeSocket {
  static made = [];
  readyState = 0;
  sent = [];
  constructor(url) { this.url = url; FakeSocket.made.push(this); }
  send(data) { this.sent.push(JSON.parse(data)); }
  close() { this.readyState = 3; }
}

test("websocket: the token travels URL-encoded; frames are JSON objects; close is reported once", async () => {
  const transport = new WebSocketTransport("ws://x/ws", "a+b/c", { WebSocketImpl: FakeSocket, timers: new FakeClock() });
  const frames = [];
  const closes = [];
  transport.onframe = (f) => frames.push(f);
  transport.onclose = (info) => closes.push(info);
  const opening = transport.open();
  const socket = FakeSocket.made.at(-1);
  assert.equal(socket.url, "ws://x/ws?token=a%2Bb%2Fc");
  socket.readyState = 1;
  socket.onopen();
  await opening;
  assert.equal(transport.send({ action: "ping" }), true);
  socket.onmessage({ data: "not json" });
  socket.onmessage({ data: JSON.stringify({ type: "pong" }) });
  socket.onclose({ code: 1001, reason: "Going away" });
  socket.onclose({ code: 1001, reason: "Going away" });
  assert.deepEqual(frames, [{ type: "pong" }]);
  assert.deepEqual(closes, [{ code: 1001, reason: "Going away" }]);
});

test("websocket: a handshake that never completes is given up", async () => {
  const clock = new FakeClock();
  const transport = new WebSocketTransport("ws://x/ws", "t", { WebSocketImpl: FakeSocket, timers: clock, openTimeoutMs: 8000 });
  const opening = transport.open();
  const outcome = opening.then(() => "opened", (error) => error.message);
  await clock.advance(8000);
  assert.match(await outcome, /timed out/);
});
