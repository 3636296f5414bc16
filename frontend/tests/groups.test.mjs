// The JS client's group calls (docs/protocol.md §13): changes idempotent by an id kept across
// retries, our own change's event filling its seq, members and receipts, batched acks flushed
// before closing, the end of a group for us.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatClient } from "../lib/client.js";
import { FakeClock, FakeConnection, message } from "./fakes.mjs";

const ALICE = { kind: "user", id: "alice" };
const BOB = { kind: "user", id: "bob" };
const CAROL = { kind: "user", id: "carol" };

function counter() {
  let n = 0;
  return () => `id-${(n += 1)}`;
}

/** server(frame) -> answer or undefined (none); the connection times requests out on the clock. */
function setup({ server = () => undefined, syncPages = [], ...options } = {}) {
  const clock = new FakeClock();
  const connection = new FakeConnection();
  connection.timers = clock;
  const pages = [...syncPages];
  connection.answer = (frame) => {
    if (frame.action === "sync") return { type: "sync", ...(pages.shift() ?? { messages: [], more: false }) };
    return server(frame);
  };
  const client = new ChatClient({ connection, timers: clock, newId: counter(), ...options });
  const seen = { message: [] };
  client.on("message", (m) => seen.message.push(m));
  return { clock, connection, client, seen, pages };
}

const shown = (seen) => seen.message.map((m) => `${m.conversation_id}/${m.seq}`);
const group = (m) => ({ ...m, from: BOB });

async function started(options) {
  const world = setup(options);
  world.client.start();
  await world.clock.advance(0);
  return world;
}

test("createGroup sends group_create, resolves to the answer, and shows our created event as seq 1", async () => {
  const { clock, connection, client, seen } = await started({
    server: (frame) => frame.action === "group_create"
      ? { type: "group", conversation_id: "g_1", title: frame.title, role: "owner", seq: 1, time: 5, members_count: 3 }
      : undefined,
  });
  const answer = await client.createGroup("Bike parts", [{ ...BOB, name: "ignored" }, CAROL, BOB, ALICE]);
  assert.equal(answer.type, "group");
  assert.equal(answer.conversation_id, "g_1");
  const [frame] = connection.framesOf("group_create");
  assert.deepEqual(frame.members, [BOB, CAROL, BOB, ALICE], "identities only; the server drops duplicates and us");
  assert.equal(answer.ref, frame.id);
  await clock.advance(0);
  assert.deepEqual(shown(seen), ["g_1/1"]);
  const [created] = seen.message;
  assert.equal(created.own, true);
  assert.equal(created.text, "");
  assert.equal(created.client_id, frame.id);
  assert.deepEqual(created.event, { type: "created", title: "Bike parts", members: [ALICE, BOB, CAROL] });
  connection.push(group(message("g_1", 2)));
  await clock.advance(0);
  assert.deepEqual(shown(seen), ["g_1/1", "g_1/2"], "seq 1 started the group: the next one follows without a pull");
  assert.equal(connection.framesOf("sync").length, 1, "only the connect pull");
});

test("a change without an answer goes again with the same id, up to 4 tries, then rejects carrying the id", async () => {
  const ids = new Set();
  const { clock, connection, client } = await started({
    server: (frame) => { if (frame.action === "group_rename") ids.add(frame.id); return undefined; },
  });
  const renaming = client.renameGroup("g_1", "New title");
  const outcome = renaming.then(() => null, (error) => error);
  await clock.advance(10_000 * 4);
  const error = await outcome;
  assert.equal(error.code, "timeout");
  const frames = connection.framesOf("group_rename");
  assert.equal(frames.length, 4);
  assert.equal(ids.size, 1, "every try is the same frame id: the server applies it once");
  assert.equal(error.id, frames[0].id);
  assert.deepEqual(frames.map((f) => f.title), Array(4).fill("New title"));
  // Later, the user tries again: the same change, the same id.
  const again = client.renameGroup("g_1", "New title", { id: error.id }).catch((e) => e);
  assert.equal(connection.framesOf("group_rename").at(-1).id, error.id);
  await clock.advance(40_000);
  assert.equal((await again).id, error.id);
  assert.equal(ids.size, 1);
});

test("internal_error (outcome unknown) retries the same id; a refusal rejects at once with its code", async () => {
  let tries = 0;
  const { clock, connection, client } = await started({
    server: (frame) => {
      if (frame.action === "group_add") {
        tries += 1;
        return tries === 1 ? { type: "error", code: "internal_error", message: "x" }
          : { type: "group_changed", conversation_id: "g_1", seq: 4, time: 9 };
      }
      if (frame.action === "group_remove") return { type: "error", code: "not_allowed", message: "no" };
      return undefined;
    },
  });
  const answer = await client.addMembers("g_1", [CAROL]);
  assert.equal(answer.seq, 4);
  const adds = connection.framesOf("group_add");
  assert.equal(adds.length, 2);
  assert.equal(adds[0].id, adds[1].id);
  assert.equal(adds[0].role, "member");
  await assert.rejects(client.removeMember("g_1", BOB), (error) => error.code === "not_allowed" && typeof error.id === "string");
  assert.equal(connection.framesOf("group_remove").length, 1, "a refusal is final");
  await clock.advance(0);
});

test("rate_limited waits retry_after, then the same frame, not counted as a try", async () => {
  let tries = 0;
  const { clock, connection, client } = await started({
    server: (frame) => {
      if (frame.action !== "group_role") return undefined;
      tries += 1;
      return tries <= 4 ? { type: "error", code: "rate_limited", message: "slow", retry_after: 3 }
        : { type: "group_changed", conversation_id: "g_1", seq: 7, time: 1 };
    },
  });
  const setting = client.setRole("g_1", BOB, "admin");
  await clock.advance(2999);
  assert.equal(connection.framesOf("group_role").length, 1, "nothing before retry_after");
  await clock.advance(1);
  assert.equal(connection.framesOf("group_role").length, 2);
  await clock.advance(9000);
  assert.equal((await setting).seq, 7, "four rate limits did not use up the tries");
  const frames = connection.framesOf("group_role");
  assert.equal(new Set(frames.map((f) => f.id)).size, 1);
  assert.deepEqual(frames[0].member, BOB);
  assert.equal(frames[0].role, "admin");
});

test("the connection drops during a change: after reconnecting the same frame goes again", async () => {
  const { clock, connection, client } = await started();
  const leaving = client.leaveGroup("g_1");
  await clock.advance(0);
  connection.goOffline();
  await clock.advance(0);
  connection.goOnline(ALICE);
  await clock.advance(0);
  const frames = connection.framesOf("group_leave");
  assert.equal(frames.length, 2);
  assert.equal(frames[0].id, frames[1].id);
  connection.push({ type: "group_changed", ref: frames[0].id, conversation_id: "g_1", seq: 3, time: 1 });
  assert.equal((await leaving).seq, 3);
});

test("a group_add that changed nothing (seq null) fills no seq", async () => {
  const { clock, client, seen } = await started({
    server: (frame) => frame.action === "group_add" ? { type: "group_changed", conversation_id: "g_1", seq: null, time: 1 } : undefined,
  });
  assert.equal((await client.addMembers("g_1", [BOB], "admin")).seq, null);
  await clock.advance(0);
  assert.deepEqual(seen.message, []);
});

test("our change in flight explains a gap (as a send does): no pull; its answer fills the seq", async () => {
  const { clock, connection, client, seen } = await started({
    syncPages: [{ messages: [group(message("g_1", 3))], more: false }] });
  assert.deepEqual(shown(seen), ["g_1/3"]);
  const renaming = client.renameGroup("g_1", "Bikes");
  const [frame] = connection.framesOf("group_rename");
  connection.push(group(message("g_1", 5))); // stored after our rename, pushed before its answer
  await clock.advance(5000);
  assert.equal(connection.framesOf("sync").length, 1, "our change may be seq 4: wait for its answer");
  connection.push({ type: "group_changed", ref: frame.id, conversation_id: "g_1", seq: 4, time: 8 });
  await renaming;
  await clock.advance(0);
  assert.deepEqual(shown(seen), ["g_1/3", "g_1/4", "g_1/5"]);
  assert.deepEqual(seen.message[1].event, { type: "renamed", title: "Bikes" });
  assert.equal(seen.message[1].own, true);
  assert.equal(connection.framesOf("sync").length, 1);
});

test("group acks are batched (T, K options), quiet; 1:1 acks are not; stop() sends the pending ones first, keepalive", async () => {
  const { clock, connection, client } = await started({ groupAckMs: 500, groupAckMessages: 3,
    syncPages: [{ messages: [group(message("g_1", 1)), message("d_1", 1)], more: false }] });
  await clock.advance(20);
  assert.deepEqual(connection.framesOf("ack").map((a) => [a.conversation_id, a.seq]), [["d_1", 1]]);
  await clock.advance(480);
  assert.deepEqual(connection.framesOf("ack").map((a) => [a.conversation_id, a.seq]), [["d_1", 1], ["g_1", 1]]);
  for (const seq of [2, 3, 4]) connection.push(group(message("g_1", seq)));
  assert.deepEqual(connection.framesOf("ack").at(-1), { action: "ack", id: connection.framesOf("ack").at(-1).id,
    conversation_id: "g_1", seq: 4, quiet: true }, "K messages: at once");
  connection.push(group(message("g_1", 5)));
  connection.push(message("d_1", 2));
  const before = connection.framesOf("ack").length;
  client.stop();
  const flushed = connection.framesOf("ack").slice(before).map((a) => [a.conversation_id, a.seq]);
  assert.deepEqual(flushed, [["g_1", 5], ["d_1", 2]], "every pending ack, before the connection closes");
  assert.deepEqual(connection.keepalive.map((a) => a.seq), [5, 2], "may outlive the page (long poll)");
  await clock.advance(5000);
  assert.equal(connection.framesOf("ack").length, before + 2, "their timers went with them");
});

test("flushAcks sends the batched group ack at once (the page hidden); never past a gap", async () => {
  const { clock, connection, client } = await started();
  connection.push(group(message("g_1", 1, { text: "", event: { type: "created", title: "t", members: [BOB, ALICE] } })));
  connection.push(group(message("g_1", 2)));
  connection.push(group(message("g_1", 4)));
  await clock.advance(100);
  assert.equal(connection.framesOf("ack").length, 0);
  client.flushAcks();
  assert.deepEqual(connection.framesOf("ack").map((a) => a.seq), [2]);
  client.flushAcks();
  assert.equal(connection.framesOf("ack").length, 1, "nothing pending: nothing sent");
});

test("leaving: our left event is shown, then no ack, no pull and no since for that group", async () => {
  const { clock, connection, client, seen, pages } = await started({
    syncPages: [{ messages: [group(message("g_1", 1)), group(message("g_1", 2))], more: false }],
    server: (frame) => frame.action === "group_leave" ? { type: "group_changed", conversation_id: "g_1", seq: 4, time: 1 } : undefined,
  });
  await client.leaveGroup("g_1");
  await clock.advance(0);
  assert.deepEqual(shown(seen), ["g_1/1", "g_1/2", "g_1/4"], "seq 3 we never get: we are no longer in the group");
  assert.deepEqual(seen.message.at(-1).event, { type: "left" });
  await clock.advance(10_000);
  assert.equal(connection.framesOf("ack").length, 0, "the server would refuse it (not_member)");
  assert.equal(connection.framesOf("sync").length, 1, "no pull for a group we left");
  pages.push({ messages: [], more: false });
  await client.pull();
  assert.deepEqual(connection.framesOf("sync").at(-1).since, {});
});

test("removed: the pushed removal ends the group even past a gap, with no pull loop; a later joined starts it again", async () => {
  const { clock, connection, seen } = await started({ syncPages: [{ messages: [group(message("g_1", 1))], more: false }] });
  connection.push(group(message("g_1", 3, { text: "", event: { type: "removed", member: ALICE } })));
  await clock.advance(0);
  assert.deepEqual(shown(seen), ["g_1/1", "g_1/3"], "the end: what is missing we may no longer pull");
  await clock.advance(10_000);
  assert.equal(connection.framesOf("sync").length, 1);
  assert.equal(connection.framesOf("ack").length, 0, "the batched ack of seq 1 went with the group (not_member now)");
  connection.push(group(message("g_1", 9, { text: "", event: { type: "joined", members: [ALICE], role: "member" } })));
  connection.push(group(message("g_1", 10)));
  await clock.advance(2000);
  assert.deepEqual(shown(seen), ["g_1/1", "g_1/3", "g_1/9", "g_1/10"]);
  assert.equal(connection.framesOf("sync").length, 1);
  assert.deepEqual(connection.framesOf("ack").at(-1).seq, 10);
});

test("groupMembers and receipts: the answer frame, cursor and limit passed on, a refusal's code", async () => {
  const { client, connection } = await started({
    server: (frame) => {
      if (frame.action === "group_members") {
        return { type: "group_members", conversation_id: frame.conversation_id, title: "t", members_count: 1,
          members: [{ member: ALICE, role: "owner", joined_seq: 1 }], more: false, cursor: null };
      }
      if (frame.action === "receipts") return { type: "error", code: "seq_out_of_range", message: "no" };
      return undefined;
    },
  });
  const page = await client.groupMembers("g_1", { cursor: "abc", limit: 10 });
  assert.equal(page.members[0].role, "owner");
  assert.deepEqual(connection.framesOf("group_members")[0], { action: "group_members", id: page.ref, conversation_id: "g_1", cursor: "abc", limit: 10 });
  await client.groupMembers("g_1");
  assert.deepEqual(Object.keys(connection.framesOf("group_members")[1]).sort(), ["action", "conversation_id", "id"]);
  await assert.rejects(client.receipts("g_1", 99, { limit: 5 }), (error) => error.code === "seq_out_of_range");
  assert.deepEqual(connection.framesOf("receipts")[0].seq, 99);
  assert.deepEqual(connection.framesOf("receipts")[0].limit, 5);
});

test("a createGroup waiting for its answer explains no gap elsewhere (its event is seq 1 of a new group)", async () => {
  const { clock, connection, client } = await started({ syncPages: [{ messages: [group(message("g_1", 1))], more: false }] });
  client.createGroup("Pending", [BOB]).catch(() => {});
  connection.push(group(message("g_1", 3)));
  await clock.advance(1000);
  assert.equal(connection.framesOf("sync").length, 2, "the gap's grace, then a pull, as without the create");
  assert.deepEqual(connection.framesOf("sync")[1].since, { g_1: 1 });
});

test("the tail check: the keepalive asks for the groups' last seqs while a group is held; a pong naming one past what we have pulls it (no reconnect)", async () => {
  const { clock, connection, client, seen, pages } = await started({
    syncPages: [{ messages: [], more: false }],
    server: (frame) => frame.action === "conversations"
      ? { type: "conversations", more: false, cursor: null, conversations: [
        { conversation_id: "g_1", group: { title: "t", members_count: 2, role: "member" } }] }
      : undefined,
  });
  assert.equal(connection.keepaliveFields(), null, "no group held: a plain keepalive");
  await client.conversations();
  assert.deepEqual(connection.keepaliveFields(), { groups: true });
  connection.push(group(message("g_1", 5))); // its start is unknown: the grace, then a pull
  pages.push({ messages: [group(message("g_1", 4)), group(message("g_1", 5))], more: false });
  await clock.advance(1000);
  assert.deepEqual(shown(seen), ["g_1/4", "g_1/5"]);
  const syncs = connection.framesOf("sync").length;
  // seqs 6 and 7 were stored, both pushes lost: the next keepalive's pong says so
  pages.push({ messages: [group(message("g_1", 6)), group(message("g_1", 7))], more: false });
  connection.push({ type: "pong", v: 3, time: 1, ref: "keepalive-1", groups: { g_1: 7, g_9: 3 } });
  await clock.advance(1000);
  assert.equal(connection.framesOf("sync").length, syncs + 1, "one pull");
  assert.deepEqual(connection.framesOf("sync").at(-1).since, { g_1: 5 }, "since for the group behind (g_9, not held, is ignored)");
  assert.deepEqual(shown(seen), ["g_1/4", "g_1/5", "g_1/6", "g_1/7"]);
  connection.push({ type: "pong", v: 3, time: 1, ref: "keepalive-2", groups: { g_1: 7 } });
  await clock.advance(10_000);
  assert.equal(connection.framesOf("sync").length, syncs + 1, "nothing behind: no pull");
});

test("the settle check: a group burst that showed a loss, quiet for settleCheckMs, sends one ping with groups: true and pulls only if behind; a fault-free burst sends nothing", async () => {
  const { clock, connection, seen, pages } = await started({
    syncPages: [{ messages: [], more: false }],
    server: (frame) => frame.action === "ping" ? { type: "pong", v: 3, time: 1, groups: { g_1: 4 } } : undefined,
  });
  connection.push(group(message("g_1", 1, { text: "", event: { type: "created", title: "t", members: [BOB, ALICE] } })));
  connection.push(group(message("g_1", 2)));
  await clock.advance(60_000);
  assert.equal(connection.framesOf("ping").length, 0, "in order: no check");
  assert.equal(connection.framesOf("sync").length, 1, "only the connect's pull");
  connection.push(group(message("g_1", 4))); // seq 3 lost, and the pong will say nothing more came
  pages.push({ messages: [group(message("g_1", 3))], more: false });
  await clock.advance(1000);
  assert.equal(connection.framesOf("sync").length, 2, "the gap's pull");
  await clock.advance(1999);
  assert.equal(connection.framesOf("ping").length, 0, "Q counts from the last push");
  await clock.advance(1);
  assert.deepEqual(connection.framesOf("ping").map((f) => f.groups), [true]);
  await clock.advance(10_000);
  assert.equal(connection.framesOf("sync").length, 2, "the pong shows nothing behind: no pull");
  assert.deepEqual(shown(seen), ["g_1/1", "g_1/2", "g_1/3", "g_1/4"]);
});

test("not_member for a group we hold (removed while away): its ack's or a request's refusal drops it, 'gone' tells the page, nothing is retried", async () => {
  const { clock, connection, client, seen } = await started({
    syncPages: [{ messages: [group(message("g_1", 1)), group(message("g_2", 4))], more: false }],
    server: (frame) => (frame.action === "history" || frame.action === "group_remove")
      ? { type: "error", code: "not_member", message: "not a member" } : undefined,
  });
  const gone = [];
  client.on("gone", (event) => gone.push(event));
  await clock.advance(2000);
  const ack = connection.framesOf("ack").find((f) => f.conversation_id === "g_1");
  connection.push({ type: "error", code: "not_member", message: "not a member", ref: ack.id });
  assert.deepEqual(gone, [{ conversation_id: "g_1", code: "not_member" }]);
  connection.push(group(message("g_1", 2)));
  await clock.advance(200_000);
  assert.deepEqual(shown(seen), ["g_1/1", "g_2/4"], "nothing more of it is shown");
  assert.equal(connection.framesOf("ack").filter((f) => f.conversation_id === "g_1").length, 1, "nor acked");
  await assert.rejects(client.removeMember("g_2", CAROL), { code: "not_member" });
  assert.equal(gone.length, 1, "group_remove's not_member is about the member named, not us");
  await assert.rejects(client.history("g_2"), { code: "not_member" });
  assert.deepEqual(gone.map((g) => g.conversation_id), ["g_1", "g_2"]);
  const syncs = connection.framesOf("sync").length;
  await clock.advance(500_000);
  assert.equal(connection.framesOf("sync").length, syncs, "no group held: no pull");
  assert.equal(connection.keepaliveFields(), null, "nor a tail check");
  assert.deepEqual(connection.framesOf("sync").at(-1).since ?? {}, {});
});
