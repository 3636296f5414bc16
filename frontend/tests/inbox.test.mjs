import assert from "node:assert/strict";
import { test } from "node:test";

import { Inbox } from "../lib/inbox.js";
import { FakeClock, message } from "./fakes.mjs";

const seqs = (messages) => messages.map((m) => m.seq);

test("messages leave in seq order, once", () => {
  const inbox = new Inbox({ timers: new FakeClock() });
  assert.deepEqual(seqs(inbox.receive(message("c", 1)).ready), [1]);
  const late = inbox.receive(message("c", 3));
  assert.deepEqual(seqs(late.ready), []);
  assert.equal(late.gap, true, "seq 3 after 1 reveals a gap");
  assert.deepEqual(seqs(inbox.receive(message("c", 2)).ready), [2, 3]);
  const again = inbox.receive(message("c", 2));
  assert.equal(again.duplicate, true);
  assert.equal(again.ack, 3, "a duplicate is acked again: the earlier ack may be lost");
  assert.equal(inbox.have("c"), 3);
});

test("a conversation first seen past seq 1 waits for a pull to say where it starts", () => {
  const inbox = new Inbox({ timers: new FakeClock() });
  const pushed = inbox.receive(message("c", 5));
  assert.deepEqual(pushed.ready, []);
  assert.equal(pushed.gap, true);
  assert.deepEqual(inbox.since(), [], "nothing known yet: the pull starts at the acked cursor");
  assert.deepEqual(seqs(inbox.receive(message("c", 4), { fromPull: true }).ready), [4, 5]);
});

test("a pushed message waiting for its start is released when the pull brings the same seq", () => {
  const inbox = new Inbox({ timers: new FakeClock() });
  inbox.receive(message("c", 2)); // pushed; where does "c" start?
  const pulled = inbox.receive(message("c", 2), { fromPull: true }); // the pull: right after the cursor
  assert.deepEqual(seqs(pulled.ready), [2]);
  assert.equal(pulled.gap, false);
  assert.equal(pulled.ack, 2);
});

test("a complete pull releases messages of a conversation it did not cover", () => {
  const shown = [];
  const inbox = new Inbox({ timers: new FakeClock(), onShow: (m) => shown.push(m.seq) });
  inbox.receive(message("c", 7));
  inbox.receive(message("c", 8));
  inbox.pulled();
  assert.deepEqual(shown, [7, 8]);
  assert.equal(inbox.have("c"), 8);
});

test("since: only conversations the server's cursor is behind, gaps first, in chunks of 100", () => {
  const inbox = new Inbox({ timers: new FakeClock() });
  for (let i = 0; i < 250; i += 1) inbox.receive(message(`c${i}`, 1));
  inbox.receive(message("c249", 3));
  for (let i = 0; i < 20; i += 1) inbox.acked(`c${i}`, 1); // the server has these: no since needed
  const chunks = inbox.since();
  assert.deepEqual(chunks.map((c) => Object.keys(c).length), [100, 100, 30]);
  assert.equal(Object.keys(chunks[0])[0], "c249");
  assert.ok(!chunks.some((c) => "c0" in c));
  assert.deepEqual(inbox.gaps(), ["c249"]);
});
