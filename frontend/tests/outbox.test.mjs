import assert from "node:assert/strict";
import { test } from "node:test";

import { DELIVERED, FAILED, Outbox, SENDING, SENT } from "../lib/outbox.js";
import { FakeClock, MemoryStorage } from "./fakes.mjs";

function setup({ online = true, store = null } = {}) {
  const clock = new FakeClock();
  const wire = [];
  let connected = online;
  const changes = [];
  const outbox = new Outbox({
    transmit: (frame) => { if (!connected) return false; wire.push(frame); return true; },
    timers: clock, ackTimeoutMs: 3000, maxAttempts: 4, store, onChange: (view) => changes.push(view),
  });
  outbox.setOnline(online);
  return { clock, wire, outbox, changes, connect: (value) => { connected = value; outbox.setOnline(value); } };
}

const send = (id, extra = {}) => ({ action: "send", id, text: `text ${id}`, conversation_id: "c", ...extra });
const sent = (ref, seq) => ({ type: "sent", ref, conversation_id: "c", seq, time: 5 });

test("a send without msg:A goes again with the same id, then fails after four attempts", async () => {
  const { clock, wire, outbox, changes } = setup();
  outbox.add(send("a-1"));
  await clock.advance(3000 * 3);
  assert.deepEqual(wire.map((f) => f.id), ["a-1", "a-1", "a-1", "a-1"]);
  assert.equal(changes.at(-1).state, SENDING);
  await clock.advance(3000);
  assert.equal(changes.at(-1).state, FAILED);
  assert.equal(changes.at(-1).error, "timeout");
  assert.equal(wire.length, 4);
});

test("resend of a failed message sends the same frame, and a late msg:A still counts", async () => {
  const { clock, wire, outbox, changes } = setup();
  outbox.add(send("a-1"));
  await clock.advance(12_000);
  assert.equal(changes.at(-1).state, FAILED);
  outbox.resend("a-1");
  assert.deepEqual(wire.at(-1), send("a-1"));
  outbox.accepted(sent("a-1", 1));
  assert.equal(changes.at(-1).state, SENT);
  assert.equal(outbox.accepted(sent("a-1", 1)), null, "a second msg:A is ignored");
});

test("messages of one conversation leave one at a time, in the order typed", () => {
  const { wire, outbox } = setup();
  outbox.add(send("a-1"));
  outbox.add(send("a-2"));
  outbox.add(send("x-1", { conversation_id: "other" }));
  assert.deepEqual(wire.map((f) => f.id), ["a-1", "x-1"], "a-2 waits for a-1's msg:A; another line does not");
  outbox.accepted(sent("a-1", 1));
  assert.deepEqual(wire.map((f) => f.id), ["a-1", "x-1", "a-2"]);
});

test("an error answer fails the message at once and the next one goes", () => {
  const { wire, outbox, changes } = setup();
  outbox.add(send("a-1"));
  outbox.add(send("a-2"));
  outbox.rejected("a-1", { code: "text_too_long" });
  assert.equal(changes.find((c) => c.id === "a-1" && c.state === FAILED).error, "text_too_long");
  assert.equal(wire.at(-1).id, "a-2");
});

test("delivered that overtakes sent is applied when sent arrives", () => {
  const { outbox, changes } = setup();
  outbox.add(send("a-1"));
  outbox.delivered("c", 4);
  outbox.accepted(sent("a-1", 4));
  assert.equal(changes.at(-1).state, DELIVERED);
});

test("delivered marks every sent message up to its seq", () => {
  const { outbox } = setup();
  outbox.add(send("a-1"));
  outbox.accepted(sent("a-1", 1));
  outbox.add(send("a-2"));
  outbox.accepted(sent("a-2", 2));
  outbox.add(send("a-3"));
  outbox.accepted(sent("a-3", 3));
  assert.deepEqual(outbox.delivered("c", 2).map((v) => v.id), ["a-1", "a-2"]);
});

test("offline, a message waits as sending (no attempts burnt) and goes on reconnect", async () => {
  const { clock, wire, outbox, changes, connect } = setup({ online: false });
  outbox.add(send("a-1"));
  await clock.advance(60_000);
  assert.equal(wire.length, 0);
  assert.equal(changes.at(-1).state, SENDING);
  connect(true);
  assert.deepEqual(wire.map((f) => f.id), ["a-1"]);
});

test("after a reconnect the message in flight is sent again at once, same frame", async () => {
  const { clock, wire, outbox, connect } = setup();
  outbox.add(send("a-1"));
  connect(false);
  await clock.advance(1000);
  connect(true);
  assert.deepEqual(wire.map((f) => f.id), ["a-1", "a-1"]);
});

test("unsent and failed messages survive a reload through the store", async () => {
  const storage = new MemoryStorage();
  const store = { load: () => JSON.parse(storage.getItem("o") ?? "[]"), save: (l) => storage.setItem("o", JSON.stringify(l)) };
  const first = setup({ online: false, store });
  first.outbox.add(send("a-1"));
  first.outbox.add(send("a-2"));
  const second = setup({ online: true, store });
  assert.deepEqual(second.outbox.unsettled().map((v) => v.id), ["a-1", "a-2"]);
  assert.deepEqual(second.wire.map((f) => f.id), ["a-1"]);
  second.outbox.accepted(sent("a-1", 1));
  second.outbox.accepted(sent("a-2", 2));
  assert.deepEqual(JSON.parse(storage.getItem("o")), [], "stored messages leave the store");
});

test("adding the same id twice keeps one message", () => {
  const { wire, outbox } = setup();
  outbox.add(send("a-1"));
  outbox.add(send("a-1"));
  assert.equal(outbox.unsettled().length, 1);
  assert.equal(wire.length, 1);
});
