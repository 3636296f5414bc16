import assert from "node:assert/strict";
import { test } from "node:test";

import { LongPollTransport, WebSocketTransport } from "../lib/transports.js";
import { FakeClock, settle } from "./fakes.mjs";

/** A scripted REST server: each handler answers one path; requests are recorded. */
function fakeFetch(handlers) {
  const calls = [];
  const fetchImpl = async (url, init) => {
    const path = new URL(url).pathname.replace(/^\/api/, "");
    const body = init.body === undefined ? undefined : JSON.parse(init.body);
    calls.push({ path, body, headers: init.headers, keepalive: init.keepalive });
    const [status, answer] = await handlers[path](body, url);
    return { ok: status < 400, status, json: async () => answer };
  };
  return { fetchImpl, calls };
}

test("long poll: frames in order, the cursor tells the server what was processed", async () => {
  const polls = [
    [200, { type: "poll", base: 1, cursor: 2, frames: [{ type: "message", seq: 1 }, { type: "message", seq: 2 }] }],
    [200, { type: "poll", base: 3, cursor: 2, frames: [] }],
  ];
  let release;
  const parked = new Promise((resolve) => { release = resolve; });
  const { fetchImpl, calls } = fakeFetch({
    "/lp/open": async () => [201, { type: "opened", connection_id: "lp-1", base: 1, window: 35 }],
    "/lp/poll": async () => polls.shift() ?? (await parked, [410, { error: { code: "connection_gone" } }]),
    "/lp/send": async (body) => [200, { frames: [{ type: "pong", ref: body.id }] }],
  });
  const transport = new LongPollTransport("http://x/api/", "tok", { fetchImpl, timers: new FakeClock() });
  const frames = [];
  const closes = [];
  transport.onframe = (f) => frames.push(f);
  transport.onclose = (info) => closes.push(info);
  await transport.open();
  await settle();
  assert.equal(transport.send({ action: "ping", id: "p1" }), true);
  await settle();
  const pollBodies = calls.filter((c) => c.path === "/lp/poll").map((c) => [c.body.cursor, c.body.base]);
  assert.deepEqual(pollBodies.slice(0, 3), [[0, 1], [2, 1], [2, 3]]);
  assert.deepEqual(frames.map((f) => f.seq ?? f.ref), [1, 2, "p1"]);
  assert.equal(calls[0].headers.Authorization, "Bearer tok");
  release();
  await settle();
  assert.deepEqual(closes, [{ code: 410, reason: "connection_gone" }], "gone: the client opens a new one and syncs");
  assert.equal(transport.send({ action: "ping", id: "p2" }), false);
});

test("long poll: a network failure is retried before the connection counts as lost", async () => {
  const clock = new FakeClock();
  let failures = 0;
  const { fetchImpl } = fakeFetch({
    "/lp/open": async () => [201, { type: "opened", connection_id: "lp-1", base: 1, window: 35 }],
    "/lp/poll": async () => { failures += 1; throw new TypeError("network"); },
  });
  const transport = new LongPollTransport("http://x/api", "tok", { fetchImpl, timers: clock });
  const closes = [];
  transport.onclose = (info) => closes.push(info);
  await transport.open();
  await clock.advance(500);
  assert.equal(closes.length, 0);
  await clock.advance(1000);
  assert.equal(failures, 3);
  assert.deepEqual(closes, [{ code: 0, reason: "network" }]);
});

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

test("long poll: a frame sent with keepalive (the acks flushed as the page goes) is a keepalive request", async () => {
  let release;
  const parked = new Promise((resolve) => { release = resolve; });
  const { fetchImpl, calls } = fakeFetch({
    "/lp/open": async () => [201, { type: "opened", connection_id: "lp-1", base: 1, window: 35 }],
    "/lp/poll": async () => (await parked, [410, { error: { code: "connection_gone" } }]),
    "/lp/send": async () => [200, { frames: [] }],
    "/lp/close": async () => [200, {}],
  });
  const transport = new LongPollTransport("http://x/api/", "tok", { fetchImpl, timers: new FakeClock() });
  await transport.open();
  transport.send({ action: "ack", id: "a1", conversation_id: "g_1", seq: 3, quiet: true }, { keepalive: true });
  transport.send({ action: "ping", id: "p1" });
  await settle();
  assert.deepEqual(calls.filter((c) => c.path === "/lp/send").map((c) => [c.body.id, c.keepalive]), [["a1", true], ["p1", false]]);
  transport.close();
  release();
  await settle();
});
