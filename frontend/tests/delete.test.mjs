// deleteMessage (docs/protocol.md §16): asked again when its answer is lost (a repeat is answered
// the same), refusals final; the answer fills the event's seq and tells message_deleted.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatClient } from "../lib/client.js";
import { FakeClock, FakeConnection } from "./fakes.mjs";

function setup(answer) {
  const clock = new FakeClock();
  const connection = new FakeConnection();
  connection.timers = clock;
  connection.answer = (frame) => (frame.action === "delete" ? answer(frame) : frame.action === "sync" ? { type: "sync", messages: [], more: false } : undefined);
  let n = 0;
  const client = new ChatClient({ connection, timers: clock, newId: () => `id-${(n += 1)}`, changeTimeoutMs: 1000 });
  client.start();
  return { clock, connection, client };
}

test("a delete whose answer is lost is asked again; its answer fills the event's seq and is told", async () => {
  let tries = 0;
  const { clock, connection, client } = setup((frame) => {
    tries += 1;
    return tries === 1 ? undefined : { type: "deleted", conversation_id: frame.conversation_id, seq: frame.seq, tombstone_seq: 2, time: 2 };
  });
  const told = [];
  const shown = [];
  client.on("message_deleted", (event) => told.push(event));
  client.on("message", (message) => shown.push(message.seq));
  await clock.advance(0);
  connection.push({ type: "message", conversation_id: "d_c", seq: 1, from: { kind: "user", id: "bob" }, text: "oops", time: 1, client_id: "b-1" });
  const answer = client.deleteMessage("d_c", 1);
  await clock.advance(0);
  await clock.advance(1000); // the first try times out: asked again
  const deleted = await answer;
  assert.deepEqual([deleted.seq, deleted.tombstone_seq], [1, 2]);
  const frames = connection.framesOf("delete");
  assert.equal(frames.length, 2);
  assert.equal(new Set(frames.map((f) => f.id)).size, 1);
  assert.deepEqual({ ...frames[0], id: undefined }, { action: "delete", id: undefined, conversation_id: "d_c", seq: 1 });
  assert.deepEqual(told.map((e) => [e.conversation_id, e.seq, e.tombstone_seq]), [["d_c", 1, 2]]);
  assert.deepEqual(shown, [1, 2], "the message, then our own deleted event in its seq");
});

test("refusals are final", async () => {
  const { clock, connection, client } = setup(() => ({ type: "error", code: "delete_window_passed", message: "too old" }));
  await clock.advance(0);
  await assert.rejects(client.deleteMessage("d_c", 1), (error) => error.code === "delete_window_passed");
  await clock.advance(10_000);
  assert.equal(connection.framesOf("delete").length, 1);
});
