// The chat page's store with groups (protocol.md §13): list entries with `group`, event messages
// as system entries that move the title, role and members in seq order, removal, and the calls
// the page makes (create, add, rename, leave, members with presence).

import assert from "node:assert/strict";
import { test } from "node:test";

import { Emitter } from "../lib/emitter.js";
import { ChatStore } from "../app/store.js";
import { eventText, previewText } from "../app/format.js";

const ME = { kind: "user", id: "alice" };
const BOB = { kind: "user", id: "bob" };
const CAROL = { kind: "user", id: "carol" };
const DAVE = { kind: "user", id: "dave" };
const G = "g_3mQb7uGm0ZgC1d2Vx9kq5A";

/** A client whose server holds one group's log; records the calls the store makes. Like
 * ChatClient, it shows our own change's event as a message when the change is answered. */
class GroupClient extends Emitter {
  calls = [];
  list = [];
  log = []; // the group's messages, seq 1..n
  members = [];
  presenceOf = new Map();

  async conversations() { this.calls.push(["conversations"]); return { conversations: this.list, more: false, cursor: null }; }
  async unsettled() { return []; }
  async presence(identities) {
    this.calls.push(["presence", identities.map((i) => i.id)]);
    return identities.map((identity) => ({ identity, online: this.presenceOf.get(identity.id) ?? false, last_seen: null }));
  }

  async history(conversationId, { before = null, limit = 30 } = {}) {
    this.calls.push(["history", conversationId, before, limit]);
    const older = this.log.filter((m) => before === null || m.seq < before);
    return { messages: older.slice(-limit), more: older.length > limit };
  }

  async markRead(conversationId, seq) { this.calls.push(["read", conversationId, seq]); return seq; }

  #append(from, event, id) {
    const message = { type: "message", conversation_id: G, seq: this.log.length + 1, from, text: "", time: 1000 + this.log.length, client_id: id, event };
    this.log.push(message);
    // as the client does: our change's answer fills its seq with our own event message
    queueMicrotask(() => this.emit("message", { ...message, own: true }));
    return { type: "group_changed", ref: id, conversation_id: G, seq: message.seq, time: message.time };
  }

  async createGroup(title, members) {
    this.calls.push(["createGroup", title, members.map((m) => m.id)]);
    this.#append(ME, { type: "created", title, members: [ME, ...members] }, "c-1");
    return { type: "group", ref: "c-1", conversation_id: G, title, role: "owner", seq: 1, time: 1000, members_count: members.length + 1 };
  }

  async addMembers(conversationId, members, role) {
    this.calls.push(["addMembers", conversationId, members.map((m) => m.id), role]);
    return this.#append(ME, { type: "joined", members, role }, "a-1");
  }

  async renameGroup(conversationId, title) {
    this.calls.push(["renameGroup", conversationId, title]);
    return this.#append(ME, { type: "renamed", title }, "r-1");
  }

  async leaveGroup(conversationId) {
    this.calls.push(["leaveGroup", conversationId]);
    return this.#append(ME, { type: "left" }, "l-1");
  }

  async groupMembers(conversationId, { cursor = null, limit = 100 } = {}) {
    this.calls.push(["groupMembers", conversationId, cursor, limit]);
    const start = cursor ? Number(cursor) : 0;
    const page = this.members.slice(start, start + 2); // small pages: the store must follow the cursor
    const more = start + 2 < this.members.length;
    return { type: "group_members", conversation_id: G, title: "Bike parts", members_count: this.members.length,
      members: page, more, cursor: more ? String(start + 2) : null };
  }
}

function storeWith(client = new GroupClient()) {
  const store = new ChatStore(client);
  client.emit("identity", ME);
  return { client, store };
}

function message(seq, from, fields = {}) {
  return { type: "message", conversation_id: G, seq, from, text: fields.event ? "" : `m${seq}`, time: 1000 + seq,
    client_id: `x-${seq}`, own: from === ME, ...fields };
}

const groupEntry = (fields = {}) => ({
  conversation_id: G, group: { title: "Bike parts", members_count: 3, role: "member" },
  last_message: { seq: 5, time: 5000, text: "Which size?", from: BOB }, unread: 2, acked_seq: 5, read_seq: 3, joined_seq: 1,
  ...fields,
});

test("a group in the list: keyed by its id, with title, role and unread; never asked for presence", async () => {
  const { client, store } = storeWith();
  client.list = [groupEntry(), {
    conversation_id: "d_bob", peer: BOB, last_message: { seq: 1, time: 4000, text: "hi", from: BOB },
    unread: 1, acked_seq: 1, read_seq: 0, peer_acked_seq: 0,
  }];
  await store.loadConversations();
  const [group, direct] = store.sortedConversations();
  assert.equal(group.key, G);
  assert.equal(group.id, G);
  assert.equal(group.peer, null);
  assert.deepEqual(group.group, { title: "Bike parts", role: "member", membersCount: 3 });
  assert.equal(group.unread, 2);
  assert.equal(direct.key, "user:bob");
  await new Promise((resolve) => setTimeout(resolve, 0));
  const asked = client.calls.filter(([name]) => name === "presence").flatMap(([, ids]) => ids);
  assert.deepEqual(asked, ["bob"], "a group is no peer");
  assert.equal(previewText(group.last, ME, { group: true }), "bob: Which size?");
  // the list's preview of an event message has no event: said without its details
  assert.equal(previewText({ seq: 6, time: 1, text: "", from: BOB }, ME, { group: true }), "bob changed the group");
  assert.equal(previewText({ seq: 6, time: 1, text: "", from: ME }, ME, { group: true }), "You changed the group");
});

test("a group learned by a push starts at its event, named by it; each seq is one entry", () => {
  const { store } = storeWith();
  const created = message(1, BOB, { event: { type: "created", title: "Bike parts", members: [BOB, ME, CAROL] } });
  store.client.emit("message", created);
  store.client.emit("message", message(2, CAROL));
  store.client.emit("message", message(2, CAROL)); // a push racing a pull
  const group = store.conversations.get(G);
  assert.equal(group.group.title, "Bike parts");
  assert.equal(group.group.membersCount, 3);
  const entries = store.entries(group);
  assert.deepEqual(entries.map((e) => [e.seq, Boolean(e.event), e.from.id]), [[1, true, "bob"], [2, false, "carol"]]);
  assert.equal(entries[0].state, null, "a system line has no tick");
  assert.equal(group.unread, 2);
  assert.equal(eventText(entries[0].event, entries[0].from, ME), "bob created the group “Bike parts”");
});

test("events move the group's state in seq order; an older one from history shows but changes nothing", async () => {
  const { client, store } = storeWith();
  client.list = [groupEntry({ last_message: { seq: 5, time: 5000, text: "", from: BOB, event: { type: "renamed", title: "Bike parts" } } })];
  await store.loadConversations();
  const group = store.conversations.get(G);
  client.emit("message", message(6, BOB, { event: { type: "joined", members: [DAVE], role: "member" } }));
  client.emit("message", message(7, BOB, { event: { type: "role", member: ME, role: "admin" } }));
  client.emit("message", message(8, BOB, { event: { type: "renamed", title: "Wheels" } }));
  assert.deepEqual(group.group, { title: "Wheels", role: "admin", membersCount: 4 });
  client.log = [message(4, BOB, { event: { type: "renamed", title: "Old name" } })];
  await store.loadHistory(group);
  assert.equal(group.group.title, "Wheels");
  assert.equal(store.entries(group).filter((e) => e.event).length, 4);
  assert.equal(previewText(group.last, ME), "bob renamed the group to “Wheels”");
  client.emit("message", message(9, BOB, { event: { type: "role", member: CAROL, role: "owner" } }));
  assert.equal(group.group.role, "admin");
  client.emit("message", message(10, CAROL, { event: { type: "role", member: ME, role: "owner" } }));
  assert.equal(group.group.role, "owner");
});

test("removed: the group is marked, its members drop, and no read is sent for it any more", async () => {
  const { client, store } = storeWith();
  client.list = [groupEntry()];
  await store.loadConversations();
  const group = store.conversations.get(G);
  client.members = [
    { member: ME, role: "member", joined_seq: 1 }, { member: BOB, role: "owner", joined_seq: 1 },
    { member: CAROL, role: "member", joined_seq: 1 },
  ];
  await store.loadMembers(group);
  client.emit("message", message(6, BOB, { event: { type: "removed", member: CAROL } }));
  assert.equal(group.removed, false);
  assert.deepEqual(group.members.map((m) => m.member.id), ["alice", "bob"]);
  assert.equal(group.group.membersCount, 2);
  client.emit("message", message(7, BOB, { event: { type: "removed", member: ME } }));
  assert.equal(group.removed, "removed");
  assert.equal(eventText(store.entries(group).at(-1).event, BOB, ME), "bob removed you");
  await store.markRead(group);
  assert.deepEqual(client.calls.filter(([name]) => name === "read"), []);
  assert.equal(store.sortedConversations()[0], group, "still listed, marked");
  client.emit("message", message(8, BOB, { event: { type: "joined", members: [ME], role: "member" } }));
  assert.equal(group.removed, false, "added again");
});

test("create, add, rename, leave: the calls, the state, and each event shown once", async () => {
  const { client, store } = storeWith();
  const group = await store.createGroup("Bike parts", [BOB, CAROL]);
  assert.deepEqual(client.calls[0], ["createGroup", "Bike parts", ["bob", "carol"]]);
  assert.deepEqual(group.group, { title: "Bike parts", role: "owner", membersCount: 3 });
  assert.equal(group.unread, 0, "our own creation is read");
  assert.equal(store.sortedConversations()[0], group, "listed before any message is loaded");
  await store.loadHistory(group);
  await store.addMembers(group, [DAVE]);
  assert.deepEqual(client.calls.find(([name]) => name === "addMembers"), ["addMembers", G, ["dave"], "member"]);
  assert.equal(group.group.membersCount, 4);
  await store.renameGroup(group, "Wheels");
  assert.equal(group.group.title, "Wheels");
  client.emit("message", { ...client.log[2], own: true }); // the same event again, from the client's pull
  await store.leaveGroup(group);
  await null;
  assert.equal(group.removed, "left");
  const lines = store.entries(group).map((e) => eventText(e.event, e.from, ME));
  assert.deepEqual(lines, [
    "You created the group “Bike parts”", "You added dave", "You renamed the group to “Wheels”", "You left",
  ]);
});

test("the member list follows every page and pulls each member's presence", async () => {
  const { client, store } = storeWith();
  client.list = [groupEntry()];
  await store.loadConversations();
  const group = store.conversations.get(G);
  client.members = [ME, BOB, CAROL, DAVE].map((member, i) => ({ member, role: i === 1 ? "owner" : "member", joined_seq: 1 }));
  client.presenceOf.set("bob", true);
  let told = 0;
  store.on("members", () => { told += 1; });
  await store.loadMembers(group);
  assert.deepEqual(client.calls.filter(([name]) => name === "groupMembers").map(([, , cursor]) => cursor), [null, "2"]);
  assert.deepEqual(group.members.map((m) => [m.member.id, m.role, m.presence.online]),
    [["alice", "member", false], ["bob", "owner", true], ["carol", "member", false], ["dave", "member", false]]);
  assert.ok(told >= 2);
  client.emit("presence", { identity: CAROL, online: true, last_seen: 9000 });
  assert.equal(group.members[2].presence.online, true, "a pushed presence updates the panel too");
});

test("a text of an unknown event type shows nothing but fills its seq", () => {
  const { store } = storeWith();
  store.client.emit("message", message(1, BOB, { event: { type: "created", title: "T", members: [BOB, ME] } }));
  store.client.emit("message", message(2, BOB, { event: { type: "pinned" } }));
  const group = store.conversations.get(G);
  assert.equal(group.lastSeq, 2);
  assert.equal(eventText(store.entries(group)[1].event, BOB, ME), null);
});

test("removed while away: the client's 'gone' (a not_member for the group) marks it removed, as the pushed removal does", async () => {
  const { client, store } = storeWith();
  client.list = [groupEntry()];
  await store.loadConversations();
  const group = store.conversations.get(G);
  assert.equal(group.removed, false);
  client.emit("gone", { conversation_id: G, code: "not_member" });
  assert.equal(group.removed, "removed");
  await store.markRead(group);
  assert.deepEqual(client.calls.filter(([name]) => name === "read"), [], "nothing more is sent for it");
  assert.equal(store.sortedConversations()[0], group, "still listed, marked");
});
