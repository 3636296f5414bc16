// report (docs/protocol.md §17): one frame id for every try, so a lost answer is one report.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatClient } from "../lib/client.js";
import { FakeClock, FakeConnection } from "./fakes.mjs";

function setup(answer) {
  const clock = new FakeClock();
  const connection = new FakeConnection();
  connection.timers = clock;
  connection.answer = (frame) => (frame.action === "report" ? answer(frame) : frame.action === "sync" ? { type: "sync", messages: [], more: false } : undefined);
  let n = 0;
  const client = new ChatClient({ connection, timers: clock, newId: () => `id-${(n += 1)}`, changeTimeoutMs: 1000 });
  client.start();
  return { clock, connection, client };
}

test("a report whose answer is lost goes again with the same id", async () => {
  let tries = 0;
  const { clock, connection, client } = setup((frame) => {
    tries += 1;
    return tries === 1 ? undefined : { type: "reported", report_id: "r_1", conversation_id: frame.conversation_id, seq: frame.seq };
  });
  await clock.advance(0);
  const answer = client.report("d_c", "spam", { seq: 3, note: "asks for money" });
  await clock.advance(0);
  await clock.advance(1000); // the first try times out: asked again
  const reported = await answer;
  assert.equal(reported.report_id, "r_1");
  const frames = connection.framesOf("report");
  assert.equal(frames.length, 2);
  assert.deepEqual(new Set(frames.map((f) => f.id)).size, 1);
  assert.deepEqual({ ...frames[0], id: undefined }, { action: "report", id: undefined, conversation_id: "d_c", reason: "spam", seq: 3, note: "asks for money" });
});

test("a whole conversation is reported without seq; rate_limited and bad input are final", async () => {
  const { clock, connection, client } = setup((frame) => (frame.reason === "spam"
    ? { type: "error", code: "rate_limited", message: "too many reports", retry_after: 3000 }
    : { type: "error", code: "invalid_field", message: "reason" }));
  await clock.advance(0);
  await assert.rejects(client.report("d_c", "spam"), (error) => error.code === "rate_limited");
  await assert.rejects(client.report("d_c", "rude"), (error) => error.code === "invalid_field");
  await clock.advance(10_000);
  const frames = connection.framesOf("report");
  assert.equal(frames.length, 2, "neither was asked again");
  assert.equal("seq" in frames[0], false);
  assert.equal("note" in frames[0], false);
});
