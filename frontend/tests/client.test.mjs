import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatClient } from "../lib/client.js";
import { FakeClock, FakeConnection, message } from "./fakes.mjs";

function setup({ syncPages = [] } = {}) {
  const clock = new FakeClock();
  const connection = new FakeConnection();
  const pages = [...syncPages];
  connection.answer = (frame) => {
    if (frame.action === "sync") return { type: "sync", ...(pages.shift() ?? { messages: [], more: false }) };
    if (frame.action === "read") return { type: "read", conversation_id: frame.conversation_id, seq: frame.seq };
    return undefined;
  };
  const client = new ChatClient({ connection, timers: clock, ackDelayMs: 20, newId: counter() });
  const seen = { message: [], outgoing: [], read: [], presence: [] };
  for (const event of Object.keys(seen)) client.on(event, (data) => seen[event].push(data));
  return { clock, connection, client, seen, pages };
}

function counter() {
  let n = 0;
  return () => `id-${(n += 1)}`;
}

const shown = (seen) => seen.message.map((m) => `${m.conversation_id}/${m.seq}`);

test("on connect the client pulls, and shows each message once even when pushed again", async () => {
  const { clock, connection, client, seen } = setup({
    syncPages: [{ messages: [message("c", 3), message("c", 4)], more: false }],
  });
  client.start();
  await clock.advance(0);
  connection.push(message("c", 4)); // a retransmission of what the pull brought
  connection.push(message("c", 5));
  await clock.advance(50);
  assert.deepEqual(shown(seen), ["c/3", "c/4", "c/5"]);
  const acks = connection.framesOf("ack");
  assert.equal(acks.at(-1).seq, 5, "cumulative ack of everything received");
  assert.ok(acks.length <= 2, `a burst costs one ack, not one per message (${acks.length})`);
});

test("a lost message is noticed by the gap and pulled with since", async () => {
  const { clock, connection, client, seen, pages } = setup();
  client.start();
  await clock.advance(0);
  connection.push(message("c", 1));
  pages.push({ messages: [message("c", 2), message("c", 3)], more: false });
  connection.push(message("c", 3)); // seq 2 was lost on the way
  await clock.advance(50);
  assert.equal(connection.framesOf("sync").length, 1, "a gap first gets a grace: pushes may be reordered");
  await clock.advance(1000);
  const syncs = connection.framesOf("sync");
  assert.deepEqual(syncs.at(-1).since, { c: 1 }, "the pull starts from what the client has");
  assert.deepEqual(shown(seen), ["c/1", "c/2", "c/3"]);
  assert.equal(connection.framesOf("ack").at(-1).seq, 3);
});

test("a pull the server refuses (internal_error) is asked again, backing off, until it goes through", async () => {
  const { clock, connection, client, seen, pages } = setup();
  let refusals = 2;
  const answer = connection.answer;
  connection.answer = (frame) => {
    if (frame.action === "sync" && frame.since?.c !== undefined && refusals > 0) {
      refusals -= 1;
      return { type: "error", code: "internal_error", message: "injected" };
    }
    return answer(frame);
  };
  client.start();
  await clock.advance(0);
  connection.push(message("c", 1));
  pages.push({ messages: [message("c", 2), message("c", 3)], more: false });
  connection.push(message("c", 3)); // seq 2 lost: nothing pushes it again
  await clock.advance(1000); // the gap's grace: the pull, refused
  assert.deepEqual(shown(seen), ["c/1"]);
  await clock.advance(1000); // again after 1 s: refused
  assert.deepEqual(shown(seen), ["c/1"]);
  await clock.advance(2000); // again after 2 s: through
  assert.equal(connection.framesOf("sync").filter((f) => f.since?.c !== undefined).length, 3);
  assert.deepEqual(shown(seen), ["c/1", "c/2", "c/3"]);
  connection.goOffline();
  await clock.advance(60_000);
  assert.equal(connection.framesOf("sync").filter((f) => f.since?.c !== undefined).length, 3, "nothing asked offline");
});

test("a pull continues while the server says more", async () => {
  const { clock, connection, client, seen } = setup({
    syncPages: [{ messages: [message("c", 1)], more: true }, { messages: [message("c", 2)], more: false }],
  });
  client.start();
  await clock.advance(0);
  assert.equal(connection.framesOf("sync").length, 2);
  assert.deepEqual(connection.framesOf("sync")[1].since, { c: 1 });
  assert.deepEqual(shown(seen), ["c/1", "c/2"]);
});

test("resync from an overflowing mailbox pulls", async () => {
  const { clock, connection, client } = setup();
  client.start();
  await clock.advance(0);
  const before = connection.framesOf("sync").length;
  connection.push({ type: "resync" });
  await clock.advance(0);
  assert.equal(connection.framesOf("sync").length, before + 1);
});

test("own message: sending, sent with its seq, delivered; shown once in the conversation", async () => {
  const { clock, connection, client, seen } = setup();
  client.start();
  await clock.advance(0);
  const view = client.send({ text: "hello 👋", to: { kind: "user", id: "bob" } });
  assert.equal(view.state, "sending");
  assert.deepEqual(connection.framesOf("send")[0].to, { kind: "user", id: "bob" });
  connection.push({ type: "delivered", conversation_id: "c", seq: 1, by: { kind: "user", id: "bob" } });
  connection.push({ type: "sent", ref: view.id, conversation_id: "c", seq: 1, time: 9 });
  connection.push({ type: "sent", ref: view.id, conversation_id: "c", seq: 1, time: 9 });
  await clock.advance(50);
  assert.deepEqual(seen.outgoing.map((v) => v.state), ["sending", "delivered"], "delivered overtook sent");
  assert.deepEqual(seen.message.map((m) => [m.seq, m.own, m.client_id]), [[1, true, view.id]]);
  assert.equal(connection.framesOf("ack").length, 0, "own messages need no ack of their own");
});

test("an error answering a send marks it failed; resend uses the same id", async () => {
  const { clock, connection, client, seen } = setup();
  client.start();
  await clock.advance(0);
  const view = client.send({ text: "x", conversationId: "c" });
  connection.push({ type: "error", ref: view.id, code: "not_member", message: "no" });
  assert.equal(seen.outgoing.at(-1).state, "failed");
  client.resend(view.id);
  assert.equal(connection.framesOf("send").at(-1).id, view.id);
});

test("text rules are checked before anything is sent", () => {
  const { client } = setup();
  assert.throws(() => client.send({ text: "   ", conversationId: "c" }), /empty/);
  assert.throws(() => client.send({ text: "😀".repeat(4001), conversationId: "c" }), /too long/);
  client.send({ text: "😀".repeat(4000), conversationId: "c" }); // 4000 code points, 8000 UTF-16 units
});

test("markRead reports the server's read mark", async () => {
  const { clock, client, seen } = setup();
  client.start();
  await clock.advance(0);
  assert.equal(await client.markRead("c", 4), 4);
  assert.deepEqual(seen.read, [{ conversation_id: "c", seq: 4 }]);
});

test("frames of unknown types are ignored", async () => {
  const { clock, connection, client, seen } = setup();
  client.start();
  await clock.advance(0);
  connection.push({ type: "something_new", x: 1 });
  connection.push({ type: "presence", identity: { kind: "user", id: "bob" }, online: true, last_seen: 1 });
  assert.equal(seen.presence.length, 1);
});

test("beyond 100 conversations a pull sends since in chunks of at most 100 (the server refuses more)", async () => {
  const { clock, connection, client, seen, pages } = setup({
    syncPages: [{ messages: Array.from({ length: 150 }, (_, i) => message(`c${i}`, 1)), more: false }],
  });
  client.start();
  await clock.advance(0);
  assert.equal(seen.message.length, 150);
  pages.push({ messages: Array.from({ length: 150 }, (_, i) => message(`c${i}`, 2)), more: false },
    { messages: [], more: false }); // one answer per chunk
  for (let i = 0; i < 150; i += 1) connection.push(message(`c${i}`, 3)); // every seq 2 was lost: 150 gaps
  await clock.advance(1100);
  const syncs = connection.framesOf("sync").slice(1);
  assert.deepEqual(syncs.map((s) => Object.keys(s.since).length), [100, 50]);
  assert.equal(seen.message.length, 450);
});

test("acks are quiet (no acked answer, one billed frame fewer) and the cursor they set needs no since", async () => {
  const { clock, connection, client, pages } = setup();
  client.start();
  await clock.advance(0);
  connection.push(message("c1", 1));
  connection.push(message("c2", 1));
  await clock.advance(50);
  assert.ok(connection.framesOf("ack").every((ack) => ack.quiet === true));
  assert.equal(connection.framesOf("ack").length, 2);
  pages.push({ messages: [message("c2", 2)], more: false });
  connection.push(message("c2", 3)); // c2 has a gap; c1 is acked as far as we have it
  await clock.advance(1100);
  const [pull] = connection.framesOf("sync").slice(1);
  assert.deepEqual(pull.since, { c2: 1 }, "only the conversation with the gap");
});

test("a message shown failed moves to sent when a pull brings its copy (by client_id): it was stored", async () => {
  const { clock, connection, client, seen, pages } = setup();
  client.start();
  await clock.advance(0);
  const view = client.send({ text: "maybe stored", conversationId: "c" });
  connection.push({ type: "error", ref: view.id, code: "internal_error", message: "x" });
  await clock.advance(100);
  assert.equal(seen.outgoing.at(-1).state, "sending", "internal_error: outcome unknown, not failed");
  await clock.advance(12_000);
  assert.equal(seen.outgoing.at(-1).state, "failed");
  assert.equal(connection.framesOf("send").length, 4);
  pages.push({ messages: [{ ...message("c", 1), from: { kind: "user", id: "alice" }, client_id: view.id, text: "maybe stored" }], more: false });
  await client.pull();
  assert.equal(seen.outgoing.at(-1).state, "sent");
  assert.deepEqual(shown(seen), ["c/1"]);
});

test("a ban (an operator's, pushed) stops the connection and says so, instead of reconnecting", async () => {
  const { clock, connection, client } = setup();
  const heard = [];
  client.on("banned", (frame) => heard.push(frame.code));
  client.start();
  await clock.advance(0);
  connection.push({ type: "error", code: "banned", message: "this identity is banned" });
  await clock.advance(0);
  assert.deepEqual(heard, ["banned"]);
  assert.equal(connection.online, false, "stopped: no new line is knocked on");
});
