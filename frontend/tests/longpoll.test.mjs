// The long-poll transport of protocol version 4 (docs/protocol.md §2b) against a scripted server
// (longpoll-server.mjs): waits at wait_url with the newest wait_token, rings in order once, polls
// on a gap, a ring without a copy and after any failed wait, releases owed (a send carries them,
// else a poll within releaseMs), the heartbeat poll, and the chaos of lost, repeated and
// reordered answers. The ring cases themselves are shared with Python (rings.test.mjs).

import assert from "node:assert/strict";
import { test } from "node:test";

import { LongPollTransport } from "../lib/transports.js";
import { FakeClock, settle } from "./fakes.mjs";
import { API, LongPollServer, seeded } from "./longpoll-server.mjs";

function setup(options = {}) {
  const clock = new FakeClock();
  const server = new LongPollServer({ timers: clock, ...options });
  const transport = new LongPollTransport(`${API}/`, "tok", { fetchImpl: server.fetchImpl, timers: clock });
  const frames = [];
  const closes = [];
  transport.onframe = (frame) => frames.push(frame);
  transport.onclose = (info) => closes.push(info);
  const seqs = () => frames.filter((f) => f.type === "message").map((f) => f.seq);
  return { clock, server, transport, frames, closes, seqs };
}

const message = (seq) => ({ type: "message", seq });

test("long poll v4: the wait carries the wait token (no body); rings come in order; the release is a poll within a second", async () => {
  const { clock, server, transport, seqs } = setup();
  await transport.open();
  await settle();
  assert.equal(server.made("wait").length, 1, "one wait is open");
  assert.equal(server.waitTokens[0], "Bearer w1");
  assert.equal(server.made("wait")[0].body, undefined);
  server.push(message(1));
  server.push(message(2));
  await settle();
  assert.deepEqual(seqs(), [1, 2]);
  assert.equal(server.made("/lp/poll").length, 0, "in order, with copies: no poll");
  assert.equal(server.released, 0);
  await clock.advance(1000);
  assert.deepEqual(server.made("/lp/poll").map((c) => [c.body.cursor, c.body.base]), [[2, 1]], "one release for the burst");
  assert.equal(server.released, 2);
  assert.deepEqual(server.made("/lp/poll")[0].headers.Authorization, "Bearer tok");
  server.push(message(3));
  await settle();
  assert.equal(server.waitTokens.at(-1), "Bearer w2", "the next wait carries the poll's (newest) token");
  transport.close();
});

test("long poll v4: a send carries the release owed (cursor and base); no poll is needed for it", async () => {
  const { clock, server, transport } = setup();
  await transport.open();
  server.push(message(1));
  await settle();
  assert.equal(transport.send({ action: "ping", id: "p1" }), true);
  await settle();
  assert.deepEqual(server.made("/lp/send")[0].query, { connection_id: "lp-1", cursor: "1", base: "1" });
  assert.equal(server.released, 1);
  await clock.advance(1000);
  assert.equal(server.made("/lp/poll").length, 0, "the send released it");
  transport.send({ action: "ping", id: "p2" });
  await settle();
  assert.deepEqual(server.made("/lp/send")[1].query, { connection_id: "lp-1" }, "nothing owed: no cursor");
  transport.close();
});

test("long poll v4: a lost wait answer (its rings are gone) is recovered by the poll that follows it", async () => {
  const { server, transport, seqs } = setup();
  await transport.open();
  server.faults.loseWait = 1;
  server.push(message(1));
  await settle();
  server.faults.loseWait = 0;
  assert.equal(server.rings.length, 0, "the rings were handed out, and lost");
  assert.deepEqual(seqs(), [1], "the poll returned the frame");
  assert.equal(server.made("/lp/poll").length, 1);
  server.push(message(2));
  await settle();
  assert.deepEqual(seqs(), [1, 2], "waiting again");
  transport.close();
});

test("long poll v4: a gap or a ring without a copy polls; a refused wait polls and waits with the fresh token", async () => {
  const { clock, server, transport, seqs } = setup();
  await transport.open();
  server.frames.push(message(1)); // stored, its ring not rung yet
  server.push(message(2));
  await settle();
  assert.deepEqual(seqs(), [1, 2], "ring 2 past a gap: the poll filled it");
  server.faults.copyless = 1;
  server.push(message(3));
  server.faults.copyless = 0;
  await settle();
  assert.deepEqual(seqs(), [1, 2, 3]);
  assert.equal(server.made("/lp/poll").length, 2);
  server.faults.refuseWait = 1;
  server.push(message(4)); // the held wait returns it; the next one is refused
  await settle();
  assert.deepEqual(seqs(), [1, 2, 3, 4]);
  assert.ok(server.made("/lp/poll").length > 2, "a 403 from the wait: poll");
  server.faults.refuseWait = 0;
  await clock.advance(5000);
  server.push(message(5));
  await settle();
  assert.deepEqual(seqs(), [1, 2, 3, 4, 5]);
  assert.equal(server.waitTokens.at(-1), `Bearer w${server.token}`);
  transport.close();
});

test("long poll v4: a wait that hangs is given up after its hold plus 15 s, then polled", async () => {
  const { clock, server, transport } = setup({ holdMs: 3_600_000 });
  await transport.open();
  await clock.advance(34_000);
  assert.equal(server.made("/lp/poll").length, 0);
  await clock.advance(1_000);
  assert.equal(server.made("/lp/poll").length, 1);
  assert.equal(server.made("wait").length, 2, "and waiting again");
  transport.close();
});

test("long poll v4: a poll at least every heartbeat, even with nothing to release", async () => {
  const { clock, server, transport, closes } = setup();
  await transport.open();
  await clock.advance(239_000);
  assert.equal(server.made("/lp/poll").length, 0);
  await clock.advance(1_000);
  assert.equal(server.made("/lp/poll").length, 1);
  await clock.advance(240_000);
  assert.equal(server.made("/lp/poll").length, 2);
  assert.deepEqual(closes, []);
  transport.close();
});

test("long poll v4: gone (410) on a poll or a send ends the line; sends then refuse", async () => {
  for (const via of ["poll", "send"]) {
    const { server, transport, closes } = setup();
    await transport.open();
    server.gone = true;
    if (via === "poll") { server.frames.push(message(1)); server.push(message(2)); } // a gap: poll
    else transport.send({ action: "ping", id: "p1" });
    await settle();
    assert.deepEqual(closes, [{ code: 410, reason: "connection_gone" }], via);
    assert.equal(transport.send({ action: "ping", id: "p2" }), false, via);
  }
});

test("long poll v4: polls failing on the network are retried, then the connection counts as lost", async () => {
  const { clock, server, transport, closes } = setup();
  server.faults.losePoll = 1;
  server.faults.refuseWait = 1;
  await transport.open();
  await clock.advance(500);
  assert.deepEqual(closes, []);
  await clock.advance(1000);
  assert.equal(server.made("/lp/poll").length, 3);
  assert.deepEqual(closes, [{ code: 0, reason: "network" }]);
});

test("long poll v4 chaos: lost wait, poll and send answers, repeated, reordered and copyless rings: every frame once, in order", async () => {
  const random = seeded(23);
  const { clock, server, transport, seqs, closes } = setup({ random });
  Object.assign(server.faults, { loseWait: 0.2, losePoll: 0.1, loseSend: 0.2, duplicate: 0.2, copyless: 0.1, reorder: 0.3, refuseWait: 0.05 });
  await transport.open();
  for (let seq = 1; seq <= 300; seq += 1) {
    server.push(message(seq));
    if (random() < 0.3) transport.send({ action: "ping", id: `p${seq}` });
    await clock.advance(Math.floor(random() * 400));
  }
  Object.assign(server.faults, { loseWait: 0, losePoll: 0, loseSend: 0, refuseWait: 0 });
  await clock.advance(60_000);
  assert.deepEqual(closes, [], "the loss never ended the line (3 lost polls in a row would: the client reconnects then)");
  assert.deepEqual(seqs(), Array.from({ length: 300 }, (_, i) => i + 1));
  assert.equal(server.released, 300, "everything processed was released");
  assert.ok(Object.values(server.lost).every((count) => count >= 5), JSON.stringify(server.lost));
  transport.close();
});

test("long poll: a frame sent with keepalive (the acks flushed as the page goes) is a keepalive request", async () => {
  const { server, transport } = setup();
  await transport.open();
  transport.send({ action: "ack", id: "a1", conversation_id: "g_1", seq: 3, quiet: true }, { keepalive: true });
  transport.send({ action: "ping", id: "p1" });
  await settle();
  assert.deepEqual(server.made("/lp/send").map((c) => [c.body.id, c.keepalive]), [["a1", true], ["p1", false]]);
  transport.close();
  await settle();
  assert.deepEqual(server.made("/lp/close").map((c) => [c.body.connection_id, c.keepalive]), [["lp-1", true]]);
});
