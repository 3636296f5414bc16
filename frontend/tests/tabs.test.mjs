import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatClient } from "../lib/client.js";
import { createBus, leaseElector, SharedClient } from "../lib/tabs.js";
import { BusHub, FakeClock, FakeConnection, LockHub, MemoryStorage, settle } from "./fakes.mjs";

const ALICE = { kind: "user", id: "alice" };
const BOB = { kind: "user", id: "bob" };

/** One conversation "c" on a server that stores each send id once, as the real one does. */
class FakeServer {
  messages = [];
  acked = 0;
  ids = new Map();
  connections = new Set();
  changes = []; // group change frames received (repeats included)
  applied = new Map(); // group change id -> its answer: applied once
  hold = false; // true: changes get no answer (a leader that dies before it)
  peerAcked = 0; // bob's acked cursor in "c", as the conversation list tells it (0: not told)

  connect(clock) {
    const connection = new FakeConnection();
    connection.answer = (frame) => this.#handle(connection, frame);
    const transmit = connection.transmit.bind(connection);
    connection.transmit = (frame) => {
      const ok = transmit(frame);
      if (ok && (frame.action === "send" || frame.action === "ack")) setImmediate(() => this.#handle(connection, frame));
      return ok;
    };
    connection.start = () => { this.connections.add(connection); connection.goOnline(ALICE); };
    connection.stop = () => { this.connections.delete(connection); connection.online = false; };
    connection.clock = clock;
    return connection;
  }

  fromBob(text) {
    const stored = { type: "message", conversation_id: "c", seq: this.messages.length + 1, from: BOB, text, time: 1, client_id: `b${text}` };
    this.messages.push(stored);
    for (const connection of this.connections) connection.push(stored);
  }

  #handle(connection, frame) {
    switch (frame.action) {
      case "sync": {
        const after = frame.since?.c ?? this.acked;
        return { type: "sync", messages: this.messages.filter((m) => m.seq > after), more: false };
      }
      case "ack": this.acked = Math.max(this.acked, frame.seq); return undefined;
      case "send": {
        if (!this.ids.has(frame.id)) {
          this.messages.push({ type: "message", conversation_id: "c", seq: this.messages.length + 1, from: ALICE,
            text: frame.text, time: 2, client_id: frame.id });
          this.ids.set(frame.id, this.messages.length);
        }
        connection.push({ type: "sent", ref: frame.id, conversation_id: "c", seq: this.ids.get(frame.id), time: 2 });
        return undefined;
      }
      case "group_create": case "group_rename": {
        this.changes.push(frame);
        if (frame.title === "refused") return { type: "error", code: "not_allowed", message: "no" };
        if (this.hold) return undefined;
        if (!this.applied.has(frame.id)) {
          const seq = this.applied.size + 1;
          this.applied.set(frame.id, frame.action === "group_create"
            ? { type: "group", conversation_id: "g_1", title: frame.title, role: "owner", seq, time: 3, members_count: 2 }
            : { type: "group_changed", conversation_id: "g_1", seq, time: 3 });
        }
        return this.applied.get(frame.id);
      }
      case "conversations": // two pages: the cursor of the first asks for the second
        return frame.cursor === "k1"
          ? { type: "conversations", conversations: [{ conversation_id: "d" }], more: false, cursor: null }
          : { type: "conversations", conversations: [{ conversation_id: "c", ...(this.peerAcked ? { peer_acked_seq: this.peerAcked } : {}) }],
            more: frame.limit === 1, cursor: frame.limit === 1 ? "k1" : null };
      case "ping": return { type: "pong" };
      default: return undefined;
    }
  }
}

function tab(world) {
  const { hub, locks, server, storage, clock } = world;
  const elector = locks.elector();
  const shared = new SharedClient({
    name: "webim:user:alice", bus: hub.bus(), elector, timers: clock, now: clock.now,
    createClient: () => new ChatClient({
      connection: server.connect(clock), timers: clock, ackDelayMs: 5,
      outboxStore: { load: () => JSON.parse(storage.getItem("outbox") ?? "[]"), save: (l) => storage.setItem("outbox", JSON.stringify(l)) },
    }),
  });
  const seen = { message: [], outgoing: [], status: [] };
  for (const event of Object.keys(seen)) shared.on(event, (data) => seen[event].push(data));
  shared.start();
  return { shared, seen, elector };
}

function world() {
  return { hub: new BusHub(), locks: new LockHub(), server: new FakeServer(), storage: new MemoryStorage(), clock: new FakeClock() };
}

const texts = (seen) => seen.message.map((m) => m.text);

/** Two tabs of alice, settled: the first leads. */
async function twoTabs() {
  const w = world();
  const first = tab(w);
  const second = tab(w);
  await w.clock.advance(10);
  return { w, first, second };
}

test("one tab holds the connection; the others receive and send through it", async () => {
  const { w, first, second } = await twoTabs();
  assert.equal(first.shared.isLeader, true);
  assert.equal(second.shared.isLeader, false);
  assert.equal(w.server.connections.size, 1, "exactly one connection for two tabs");
  assert.equal(second.seen.status.at(-1).leader, false);

  w.server.fromBob("hello");
  await w.clock.advance(10);
  assert.deepEqual(texts(first.seen), ["hello"]);
  assert.deepEqual(texts(second.seen), ["hello"]);

  second.shared.send({ text: "from the second tab", conversationId: "c" });
  await w.clock.advance(10);
  assert.deepEqual(w.server.messages.map((m) => m.text), ["hello", "from the second tab"]);
  for (const t of [first, second]) {
    assert.equal(t.seen.outgoing.at(-1).state, "sent", "both tabs see the message as sent");
  }
  assert.deepEqual((await second.shared.conversations()).conversations, [{ conversation_id: "c" }]);
  const page = await second.shared.conversations({ limit: 1 }); // a follower tab pages through the leader
  assert.deepEqual(page, { conversations: [{ conversation_id: "c" }], more: true, cursor: "k1" });
  const next = await second.shared.conversations({ cursor: page.cursor, limit: 1 });
  assert.deepEqual(next, { conversations: [{ conversation_id: "d" }], more: false, cursor: null });
});

test("when the leader tab goes, another takes over: nothing lost, nothing shown twice", async () => {
  const { w, first, second } = await twoTabs();
  w.server.fromBob("one");
  await w.clock.advance(10);

  // The leader dies without a word (a crash): its connection and bus vanish with it.
  [...w.server.connections][0].stop();
  first.shared.bus.close();
  w.server.fromBob("two"); // pushed to nobody: no tab holds a connection
  second.shared.send({ text: "typed during the handover", conversationId: "c" });
  w.locks.release(); // the browser frees the dead tab's lock
  await w.clock.advance(10);

  assert.equal(second.shared.isLeader, true);
  assert.deepEqual(texts(second.seen), ["one", "two", "typed during the handover"]);
  assert.deepEqual(w.server.messages.map((m) => m.text), ["one", "two", "typed during the handover"]);
  assert.equal(second.seen.outgoing.at(-1).state, "sent");
});

test("a message accepted by the old leader but not yet sent goes out from the new one, once", async () => {
  const { w, first, second } = await twoTabs();
  const old = [...w.server.connections][0];
  old.online = false; // the leader's link died: the send waits in its outbox (kept in storage)
  first.shared.send({ text: "pending", conversationId: "c" });
  await w.clock.advance(10);
  old.stop();
  first.shared.bus.close();
  w.locks.release();
  await w.clock.advance(10);
  assert.deepEqual(w.server.messages.map((m) => m.text), ["pending"]);
  assert.equal(second.seen.message.filter((m) => m.text === "pending").length, 1);
});

test("a hung leader (alive, silent) is replaced by a visible tab, and steps down if it wakes", async () => {
  const { w, first, second } = await twoTabs();
  w.server.fromBob("one");
  await w.clock.advance(10);
  // The leader's script stops running: no beats, no answers, its connection silent.
  const hungBus = first.shared.bus;
  const post = hungBus.post;
  hungBus.post = () => {};
  await w.clock.advance(8000);
  assert.equal(second.shared.isLeader, true, "took over after 6 s of silence");
  assert.equal(first.shared.isLeader, false, "the hung tab learns it lost the lock");
  assert.equal(w.server.connections.size, 1, "one connection again: the old one was closed");
  w.server.fromBob("two");
  await w.clock.advance(1100); // the new leader's inbox starts empty: seq 2 waits its gap grace, then a pull
  assert.deepEqual(texts(second.seen), ["one", "two"]);
  hungBus.post = post;
  await w.clock.advance(2000);
  assert.equal(first.shared.isLeader, false);
  assert.equal(second.shared.isLeader, true);
  second.shared.stop(); // and when the new leader goes, the woken tab is next in line
  await w.clock.advance(10);
  assert.equal(first.shared.isLeader, true);
});

test("lease election without Web Locks: one leader, and a new one after it stops renewing", async () => {
  const storage = new MemoryStorage();
  const clock = new FakeClock();
  const leaders = [];
  const a = leaseElector("x", { storage, timers: clock, now: clock.now, tabId: "a" });
  const b = leaseElector("x", { storage, timers: clock, now: clock.now, tabId: "b" });
  a.start(() => leaders.push("a"));
  b.start(() => leaders.push("b"));
  await clock.advance(5000);
  assert.deepEqual(leaders, ["a"]);
  a.stop(); // a closing tab gives the lease up
  await clock.advance(1100);
  assert.deepEqual(leaders, ["a", "b"]);
  await settle();
});

test("without BroadcastChannel the bus carries messages through localStorage events", async () => {
  const storage = new MemoryStorage();
  const listeners = new Set();
  const target = { addEventListener: (type, f) => listeners.add(f), removeEventListener: (type, f) => listeners.delete(f) };
  // Another tab's write reaches this tab as a "storage" event (never the writer itself).
  const otherTab = { setItem: (key, value) => { storage.setItem(key, value); for (const f of listeners) f({ key, newValue: value }); },
    getItem: (key) => storage.getItem(key), removeItem: (key) => storage.removeItem(key) };
  const here = createBus("webim:user:x", { BroadcastChannelImpl: null, storage, target });
  const there = createBus("webim:user:x", { BroadcastChannelImpl: null, storage: otherTab, target: { addEventListener() {}, removeEventListener() {} } });
  const received = [];
  here.onmessage = (message) => received.push(message);
  assert.equal(here.kind, "storage");
  there.post({ type: "hello", from: "b" });
  there.post({ type: "hello", from: "b" }); // the same message twice is still two events
  assert.deepEqual(received, [{ type: "hello", from: "b" }, { type: "hello", from: "b" }]);
  here.close();
  there.post({ type: "late", from: "b" });
  assert.equal(received.length, 2);
});

test("a follower tab's group calls go through the leader, with an id made in the follower; refusals keep their code", async () => {
  const { w, first, second } = await twoTabs();
  const answer = await second.shared.createGroup("Bikes", [BOB]);
  assert.equal(answer.type, "group");
  assert.equal(answer.conversation_id, "g_1");
  const [frame] = w.server.changes;
  assert.ok(frame.id.startsWith(`t${second.shared.tabId}`), `the follower's id (${frame.id})`);
  assert.deepEqual(frame.members, [BOB]);
  await w.clock.advance(10);
  for (const t of [first, second]) {
    assert.deepEqual(t.seen.message.map((m) => [m.conversation_id, m.seq, m.event?.type]), [["g_1", 1, "created"]],
      "our created event, once in every tab");
  }
  await assert.rejects(second.shared.renameGroup("g_1", "refused"), (error) => error.code === "not_allowed" && error.id === w.server.changes.at(-1).id);
});

test("the leader goes with a follower's group change unanswered: the next leader repeats it, same id, applied once", async () => {
  const { w, first, second } = await twoTabs();
  w.server.hold = true;
  const renaming = second.shared.renameGroup("g_1", "New");
  await w.clock.advance(10);
  assert.equal(w.server.changes.length, 1);
  // The leader crashes: it says nothing more, its connection and lock go.
  first.shared.bus.post = () => {};
  [...w.server.connections][0].stop();
  w.server.hold = false;
  w.locks.release();
  await w.clock.advance(10);
  assert.equal(second.shared.isLeader, true);
  assert.equal((await renaming).type, "group_changed");
  assert.equal(w.server.changes.length, 2);
  assert.equal(w.server.changes[0].id, w.server.changes[1].id, "the same change");
  assert.equal(w.server.applied.size, 1);
});

test("flushAcks in the leader tab sends the batched group ack at once; in a follower it does nothing", async () => {
  const { w, first, second } = await twoTabs();
  const connection = [...w.server.connections][0];
  connection.push({ type: "message", conversation_id: "g_1", seq: 1, from: BOB, text: "", time: 1, client_id: "b",
    event: { type: "created", title: "t", members: [BOB, ALICE] } });
  await w.clock.advance(100);
  assert.equal(connection.framesOf("ack").length, 0, "a group ack waits up to 2 s");
  second.shared.flushAcks();
  await w.clock.advance(0);
  assert.equal(connection.framesOf("ack").length, 0);
  first.shared.flushAcks();
  assert.deepEqual(connection.framesOf("ack").map((a) => [a.conversation_id, a.seq]), [["g_1", 1]]);
});

test("a follower tab's typingNow, refreshDelivered and request go through the leader's client", async () => {
  const { w, first, second } = await twoTabs();
  const connection = [...w.server.connections][0];
  connection.push({ type: "typing", conversation_id: "c", from: BOB });
  await w.clock.advance(10);
  assert.deepEqual(await second.shared.typingNow("c"), [BOB], "the leader's client saw bob typing");
  assert.deepEqual(await first.shared.typingNow("c"), [BOB]);
  assert.deepEqual(await second.shared.typingNow("d"), []);

  second.shared.send({ text: "hi", conversationId: "c" });
  await w.clock.advance(10);
  assert.equal(second.seen.outgoing.at(-1).state, "sent");
  w.server.peerAcked = 1; // bob's `delivered` was lost; the list knows
  await second.shared.refreshDelivered();
  await w.clock.advance(10);
  for (const t of [first, second]) assert.equal(t.seen.outgoing.at(-1).state, "delivered");

  const pong = await second.shared.request("ping", { groups: true });
  assert.equal(pong.type, "pong");
  const [ping] = connection.framesOf("ping");
  assert.equal(ping.groups, true);
  assert.ok(ping.id.startsWith(`t${second.shared.tabId}`), `the follower's id (${ping.id})`);
});
