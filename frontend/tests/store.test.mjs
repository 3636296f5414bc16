// The chat page's store and the paged conversation list (protocol.md §6.6): the first page at
// start, the next one when the list is scrolled to its end, each exactly once.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Emitter } from "../lib/emitter.js";
import { ChatStore } from "../app/store.js";
import { FakeClock } from "./fakes.mjs";

/** A client whose server holds `entries` (newest first) and answers pages of them. */
class PagedClient extends Emitter {
  requests = [];
  failNext = false;

  constructor(entries) {
    super();
    this.entries = entries;
  }

  async conversations({ limit = 50, cursor } = {}) {
    this.requests.push({ limit, cursor });
    await null;
    if (this.failNext) { this.failNext = false; throw new Error("timeout"); }
    const start = cursor === undefined ? 0 : Number(cursor.slice("after-".length));
    const page = this.entries.slice(start, start + limit);
    const more = start + limit < this.entries.length;
    return { conversations: page, more, cursor: more ? `after-${start + limit}` : null };
  }

  async presence() { return []; }
  async unsettled() { return []; }
}

function entry(peer, time) {
  return {
    conversation_id: `d_${peer.id}`, peer, unread: 1, acked_seq: 0, read_seq: 0, peer_acked_seq: 0,
    last_message: { seq: 1, time, text: `from ${peer.id}`, from: peer },
  };
}

const BUYER = { kind: "user", id: "real-buyer" };

function sellersList() {
  const strangers = Array.from({ length: 110 }, (_, i) => entry({ kind: "visitor", id: `fresh-${i}` }, 2000 - i));
  return [...strangers, entry(BUYER, 1000)]; // the buyer wrote first: the oldest, last
}

test("110 strangers, then the buyer: reachable by scrolling to the end of the list", async () => {
  const client = new PagedClient(sellersList());
  const store = new ChatStore(client);
  await store.loadConversations();
  assert.equal(store.sortedConversations().length, 50);
  assert.equal(store.conversations.has("user:real-buyer"), false);
  assert.equal(store.conversationsMore, true);
  assert.equal(await store.loadMoreConversations(), true);
  assert.equal(await store.loadMoreConversations(), true);
  assert.equal(store.conversationsMore, false);
  assert.equal(await store.loadMoreConversations(), false, "the end: nothing more is asked");
  const shown = store.sortedConversations();
  assert.equal(shown.length, 111);
  assert.deepEqual(shown.at(-1).peer, BUYER);
  assert.equal(shown.at(-1).id, "d_real-buyer");
  assert.deepEqual(client.requests, [
    { limit: 50, cursor: undefined }, { limit: 50, cursor: "after-50" }, { limit: 50, cursor: "after-100" },
  ], "each page asked once, with the server's cursor unchanged");
});

test("scrolling fast asks for the next page once", async () => {
  const client = new PagedClient(sellersList());
  const store = new ChatStore(client);
  await store.loadConversations();
  const [first, second] = [store.loadMoreConversations(), store.loadMoreConversations()];
  assert.equal(first, second);
  await first;
  assert.equal(client.requests.length, 2);
  assert.equal(store.sortedConversations().length, 100);
});

test("a failed page can be asked for again", async () => {
  const client = new PagedClient(sellersList());
  const store = new ChatStore(client);
  await store.loadConversations();
  client.failNext = true;
  await assert.rejects(store.loadMoreConversations());
  assert.equal(store.conversationsMore, true);
  assert.equal(await store.loadMoreConversations(), true);
  assert.deepEqual(client.requests.map((r) => r.cursor), [undefined, "after-50", "after-50"]);
});

test("reloading the first page (a reconnect) keeps the pages already loaded and where the next starts", async () => {
  const client = new PagedClient(sellersList());
  const store = new ChatStore(client);
  await store.loadConversations();
  await store.loadMoreConversations();
  await store.loadConversations();
  assert.equal(store.sortedConversations().length, 100);
  await store.loadMoreConversations();
  assert.deepEqual(client.requests.map((r) => r.cursor), [undefined, "after-50", undefined, "after-100"]);
  assert.equal(store.sortedConversations().length, 111);
});

test("after a reconnect the list (the receipts missed while away) is asked again until it answers", async () => {
  const clock = new FakeClock();
  const client = new PagedClient([entry(BUYER, 1000)]);
  const store = new ChatStore(client, { timers: clock });
  client.emit("status", { state: "online" });
  await store.loadConversations();
  client.emit("status", { state: "offline" });
  let refusals = 2;
  const answer = client.conversations.bind(client);
  client.conversations = async (options) => {
    if (refusals > 0) {
      refusals -= 1;
      client.requests.push(options);
      throw Object.assign(new Error("internal_error"), { code: "internal_error" });
    }
    return answer(options);
  };
  client.emit("status", { state: "online" });
  await clock.advance(0);
  assert.equal(client.requests.length, 2, "the reconnect's reload, refused");
  await clock.advance(1000);
  assert.equal(client.requests.length, 3, "again after 1 s, refused");
  await clock.advance(2000);
  assert.equal(client.requests.length, 4, "again after 2 s: answered");
  await clock.advance(60_000);
  assert.equal(client.requests.length, 4, "nothing more once it answered");
});

test("a short list has no next page", async () => {
  const client = new PagedClient([entry(BUYER, 1000)]);
  const store = new ChatStore(client);
  await store.loadConversations();
  assert.equal(store.conversationsMore, false);
  assert.equal(await store.loadMoreConversations(), false);
  assert.equal(client.requests.length, 1);
});

test("a message deleted for everyone (§16) shows as deleted whichever copy comes first, and the list says so", async () => {
  const client = new PagedClient([]);
  const store = new ChatStore(client);
  client.emit("identity", { kind: "user", id: "me" });
  const id = "d_buyer";
  const message = (seq, fields = {}) => ({ type: "message", conversation_id: id, seq, from: BUYER, text: `m${seq}`, time: seq, client_id: `b-${seq}`, ...fields });
  const deleted = (seq, of) => message(seq, { text: "", client_id: `deleted:${of}`, event: { type: "deleted", seq: of, by: BUYER } });
  client.emit("message", message(1, { text: "my phone is 555" }));
  client.emit("message", message(2));
  const conversation = store.conversations.get("user:real-buyer");
  assert.equal(store.canDelete(conversation, conversation.entries.get("s:1")), false, "not ours");
  client.emit("message", deleted(3, 1));
  const first = conversation.entries.get("s:1");
  assert.deepEqual([first.deleted, first.text], [true, ""]);
  assert.equal(store.canDelete(conversation, first), false, "deleted already");
  assert.equal(conversation.last.event.type, "deleted");
  client.emit("message", deleted(4, 2));
  client.emit("message", message(2)); // a late copy of 2, its text: still deleted
  assert.deepEqual([conversation.entries.get("s:2").deleted, conversation.entries.get("s:2").text], [true, ""]);
  client.emit("message", message(5, { from: { kind: "user", id: "me" }, own: true, client_id: "a-5" }));
  assert.equal(store.canDelete(conversation, conversation.entries.get("s:5")), true, "ours");
});
