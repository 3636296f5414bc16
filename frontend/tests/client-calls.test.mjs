// The calls ChatClient gained to match the Python SDK (docs/client.md, "The two clients"):
// typingNow, refreshDelivered, request.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatClient } from "../lib/client.js";
import { FakeClock, FakeConnection, message } from "./fakes.mjs";

const BOB = { kind: "user", id: "bob" };

function setup(answer = () => undefined) {
  const clock = new FakeClock();
  const connection = new FakeConnection();
  connection.answer = (frame) => (frame.action === "sync" ? { type: "sync", messages: [], more: false } : answer(frame));
  let n = 0;
  const client = new ChatClient({ connection, timers: clock, newId: () => `id-${(n += 1)}` });
  const outgoing = [];
  client.on("outgoing", (view) => outgoing.push(view));
  client.start();
  return { clock, connection, client, outgoing };
}

test("typingNow: who the client shows typing, 6 s after their last typing or until their message; never ourselves", async () => {
  const { clock, connection, client } = setup();
  await clock.advance(0);
  connection.push({ type: "typing", conversation_id: "d_ab", from: BOB });
  connection.push({ type: "typing", conversation_id: "d_ab", from: { kind: "user", id: "alice" } }); // our other device
  assert.deepEqual(client.typingNow("d_ab"), [BOB]);
  await clock.advance(5999);
  assert.deepEqual(client.typingNow("d_ab"), [BOB]);
  connection.push(message("d_ab", 1));
  assert.deepEqual(client.typingNow("d_ab"), [], "their message ends it");
  connection.push({ type: "typing", conversation_id: "d_ab", from: BOB });
  await clock.advance(6000);
  assert.deepEqual(client.typingNow("d_ab"), [], "6 s without another");
});

test("refreshDelivered applies the list's peer cursors to our sent messages, page by page", async () => {
  const pages = [
    { type: "conversations", conversations: [{ conversation_id: "d_x", peer_acked_seq: 1 }], more: true, cursor: "p2" },
    { type: "conversations", conversations: [{ conversation_id: "d_y", peer_acked_seq: 1, peer_read_seq: 1 }], more: false, cursor: null },
  ];
  const { clock, connection, client, outgoing } = setup((frame) => (frame.action === "conversations" ? pages.shift() : undefined));
  await clock.advance(0);
  client.send({ conversationId: "d_x", text: "one" });
  client.send({ conversationId: "d_y", text: "two" });
  for (const sent of connection.framesOf("send")) {
    connection.push({ type: "sent", ref: sent.id, conversation_id: sent.conversation_id, seq: 1, time: 1 });
  }
  await client.refreshDelivered();
  const last = Object.fromEntries(outgoing.map((view) => [view.conversation_id, view.state]));
  assert.deepEqual(last, { d_x: "delivered", d_y: "seen" });
  assert.deepEqual(connection.framesOf("conversations").map((f) => f.cursor ?? null), [null, "p2"]);
});

test("request: any request, answered by its ref; an error rejects with its code", async () => {
  const { clock, client } = setup((frame) => (frame.action === "history"
    ? { type: "error", code: "not_member" } : { type: "pong", identity: { kind: "user", id: "alice" } }));
  await clock.advance(0);
  assert.equal((await client.request("ping")).type, "pong");
  await assert.rejects(client.request("history", { conversation_id: "g_gone", limit: 1 }), { code: "not_member" });
});
