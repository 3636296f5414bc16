import assert from "node:assert/strict";
import { test } from "node:test";

import { Inbox } from "../lib/inbox.js";
import { message } from "./fakes.mjs";

const seqs = (messages) => messages.map((m) => m.seq);

test("messages leave in seq order, once", () => {
  const inbox = new Inbox();
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
  const inbox = new Inbox();
  const pushed = inbox.receive(message("c", 5));
  assert.deepEqual(pushed.ready, []);
  assert.equal(pushed.gap, true);
  assert.deepEqual(inbox.since(), {}, "nothing known yet: the pull starts at the acked cursor");
  assert.deepEqual(seqs(inbox.receive(message("c", 4), { fromPull: true }).ready), [4, 5]);
});

test("a pushed message waiting for its start is released when the pull brings the same seq", () => {
  const inbox = new Inbox();
  inbox.receive(message("c", 2)); // pushed; where does "c" start?
  const pulled = inbox.receive(message("c", 2), { fromPull: true }); // the pull: right after the cursor
  assert.deepEqual(seqs(pulled.ready), [2]);
  assert.equal(pulled.gap, false);
  assert.equal(pulled.ack, 2);
});

test("settleUnknown releases messages the pull did not cover", () => {
  const inbox = new Inbox();
  inbox.receive(message("c", 7));
  inbox.receive(message("c", 8));
  assert.deepEqual(seqs(inbox.settleUnknown()), [7, 8]);
  assert.equal(inbox.have("c"), 8);
});

test("since lists conversations with a gap first and at most 100", () => {
  const inbox = new Inbox();
  for (let i = 0; i < 120; i += 1) inbox.receive(message(`c${i}`, 1));
  inbox.receive(message("c119", 3));
  const since = inbox.since();
  assert.equal(Object.keys(since).length, 100);
  assert.equal(Object.keys(since)[0], "c119");
  assert.deepEqual(inbox.gaps(), ["c119"]);
});
