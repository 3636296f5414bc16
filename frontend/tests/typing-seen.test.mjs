// Typing, seen and the read-receipts setting in the JS client and the page's store (protocol.md
// §14.2, §14.3), and photos across tabs: a follower tab uploads itself, only frames go through
// the leader.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ChatStore } from "../app/store.js";
import { previewText, typingText } from "../app/format.js";
import { ChatClient } from "../lib/client.js";
import { SharedClient } from "../lib/tabs.js";
import { BusHub, FakeClock, FakeConnection, LockHub, settle } from "./fakes.mjs";

const ME = { kind: "user", id: "alice" };
const BOB = { kind: "user", id: "bob" };

function setup() {
  const clock = new FakeClock();
  const connection = new FakeConnection();
  connection.timers = clock;
  const server = { readReceipts: true, list: [] };
  connection.answer = (frame) => {
    switch (frame.action) {
      case "sync": return { type: "sync", messages: [], more: false };
      case "settings":
        if ("read_receipts" in frame) server.readReceipts = frame.read_receipts;
        return { type: "settings", read_receipts: server.readReceipts };
      case "conversations": return { type: "conversations", conversations: server.list, more: false };
      default: return undefined;
    }
  };
  let n = 0;
  const client = new ChatClient({ connection, timers: clock, now: clock.now, newId: () => `id-${(n += 1)}` });
  const store = new ChatStore(client, { timers: clock });
  client.start();
  return { clock, connection, client, store, server };
}

test("typing: at most one frame per 3 s per conversation, none without a conversation id", async () => {
  const { clock, connection, client } = setup();
  await clock.advance(0);
  assert.equal(client.typing("d_ab"), true);
  for (let i = 0; i < 10; i += 1) { await clock.advance(250); client.typing("d_ab"); }
  assert.equal(client.typing("d_other"), true, "another conversation has its own interval");
  assert.equal(client.typing(null), false);
  await clock.advance(500); // 3 s after the first
  client.typing("d_ab");
  assert.deepEqual(connection.framesOf("typing").map((f) => f.conversation_id), ["d_ab", "d_other", "d_ab"]);
  assert.deepEqual(Object.keys(connection.framesOf("typing")[0]).sort(), ["action", "conversation_id"]);
});

test("typing shows for 6 s after the last frame, and ends at once when that person's message arrives", async () => {
  const { clock, connection, store } = setup();
  await clock.advance(0);
  const changes = [];
  store.on("typing", (conversation) => changes.push(store.typingNow(conversation).map((i) => i.id)));
  connection.push({ type: "typing", conversation_id: "d_ab", from: BOB });
  const conversation = store.conversationWith(BOB);
  assert.equal(conversation.id, "d_ab", "a typing frame of a new 1:1 conversation names it");
  assert.deepEqual(store.typingNow(conversation), [BOB]);
  await clock.advance(5000);
  connection.push({ type: "typing", conversation_id: "d_ab", from: BOB }); // still typing: 6 s again
  await clock.advance(5000);
  assert.deepEqual(store.typingNow(conversation), [BOB]);
  await clock.advance(1000);
  assert.deepEqual(store.typingNow(conversation), [], "6 s after the last one: gone");

  connection.push({ type: "typing", conversation_id: "d_ab", from: BOB });
  connection.push({ type: "message", conversation_id: "d_ab", seq: 1, from: BOB, text: "hi", time: 1, client_id: "b1" });
  await clock.advance(50);
  assert.deepEqual(store.typingNow(conversation), [], "the message ends it");
  assert.deepEqual(changes, [["bob"], [], ["bob"], []], "a change only when who is typing changes");
  connection.push({ type: "typing", conversation_id: "d_ab", from: ME }); // our other device
  assert.deepEqual(store.typingNow(conversation), [], "never our own typing");
});

test("in a group, who is typing is named", () => {
  assert.equal(typingText([BOB]), "typing…");
  assert.equal(typingText([BOB], { group: true }), "bob is typing…");
  assert.equal(typingText([BOB, { kind: "user", id: "carol" }], { group: true }), "bob and carol are typing…");
  assert.equal(typingText([]), "");
});

test("the store sends typing only for a conversation with an id, through the client", async () => {
  const { clock, connection, store } = setup();
  await clock.advance(0);
  const fresh = store.conversationWith({ kind: "user", id: "new" });
  store.typing(fresh);
  assert.equal(connection.framesOf("typing").length, 0, "no conversation id yet");
  fresh.id = "d_new";
  store.typing(fresh);
  assert.equal(connection.framesOf("typing").length, 1);
});

test("seen marks our messages up to seq (and delivered), from the push and from peer_read_seq after a reload", async () => {
  const { clock, connection, store, server } = setup();
  await store.loadSettings();
  server.list = [{ conversation_id: "d_ab", peer: BOB, unread: 0, acked_seq: 3, read_seq: 3, peer_acked_seq: 1,
    peer_read_seq: 2, last_message: { seq: 3, time: 3, text: "x", from: ME } }];
  await store.loadConversations();
  const conversation = store.conversationWith(BOB);
  assert.equal(conversation.peerReadSeq, 2, "after a reload: from the list");
  for (const seq of [1, 2, 3]) {
    connection.push({ type: "message", conversation_id: "d_ab", seq, from: ME, text: `m${seq}`, time: seq, client_id: `a${seq}` });
  }
  await clock.advance(50);
  let thread = 0;
  store.on("thread", () => { thread += 1; });
  connection.push({ type: "seen", conversation_id: "d_ab", seq: 3, by: BOB });
  assert.equal(conversation.peerReadSeq, 3);
  assert.equal(thread, 1);
  assert.equal(conversation.entries.get("s:3").state, "delivered", "read implies delivered");
  connection.push({ type: "seen", conversation_id: "d_ab", seq: 2, by: BOB });
  assert.equal(conversation.peerReadSeq, 3, "never backwards");
  assert.equal(thread, 1);
});

test("read receipts off: the setting is sent, and no Seen is shown any more, until on again", async () => {
  const { clock, connection, store, server } = setup();
  await store.loadSettings();
  assert.equal(store.readReceipts, true, "on by default");
  assert.deepEqual(connection.framesOf("settings")[0], { action: "settings", id: connection.framesOf("settings")[0].id },
    "no field: just read it");
  server.list = [{ conversation_id: "d_ab", peer: BOB, unread: 0, acked_seq: 0, read_seq: 0, peer_acked_seq: 2,
    peer_read_seq: 2, last_message: { seq: 2, time: 2, text: "x", from: ME } }];
  await store.loadConversations();
  const conversation = store.conversationWith(BOB);
  assert.equal(conversation.peerReadSeq, 2);
  await store.setReadReceipts(false);
  assert.equal(connection.framesOf("settings").at(-1).read_receipts, false);
  assert.equal(store.readReceipts, false);
  assert.equal(conversation.peerReadSeq, 0, "off: we see none either");
  connection.push({ type: "seen", conversation_id: "d_ab", seq: 2, by: BOB }); // one already on its way
  assert.equal(conversation.peerReadSeq, 0);
  await store.setReadReceipts(true);
  await clock.advance(0);
  assert.equal(conversation.peerReadSeq, 2, "on again: the list is asked again for the read marks");
});

test("the list says Photo, or Photo: caption", () => {
  assert.equal(previewText({ seq: 1, time: 1, text: "", image: true, from: BOB }, ME), "Photo");
  assert.equal(previewText({ seq: 1, time: 1, text: "the chain", image: true, from: BOB }, ME), "Photo: the chain");
  assert.equal(previewText({ seq: 1, time: 1, text: "", image: true, from: ME }, ME), "You: Photo");
  assert.equal(previewText({ seq: 1, time: 1, text: "", image: true, from: BOB }, ME, { group: true }), "bob: Photo");
});

test("a photo in the store: the preview at once, our own upload's local URL, a refreshed URL when expired", async () => {
  const { clock, connection, store } = setup();
  await clock.advance(0);
  const now = Date.now();
  connection.answer = (frame) => (frame.action === "media_url"
    ? { type: "media_url", conversation_id: frame.conversation_id, seq: frame.seq, url: "http://s3/fresh", url_expires: now + 900_000 }
    : undefined);
  connection.push({ type: "message", conversation_id: "d_ab", seq: 1, from: BOB, text: "", time: 1, client_id: "b1",
    image: { url: "http://s3/old", url_expires: now - 1, width: 800, height: 600, content_type: "image/png", size: 9, preview: "data:image/jpeg;base64,AA" } });
  await clock.advance(50);
  const conversation = store.conversationWith(BOB);
  const entry = conversation.entries.get("s:1");
  assert.equal(conversation.last.image, true);
  assert.equal(store.imageSource(entry), null, "expired: not used");
  await store.refreshImage(conversation, entry);
  const fresh = conversation.entries.get("s:1");
  assert.equal(store.imageSource(fresh), "http://s3/fresh");
  store.imageFailed(conversation, fresh, "http://s3/fresh"); // the <img> could not load it
  await clock.advance(0);
  assert.equal(connection.framesOf("media_url").length, 2, "a load error asks for a fresh URL once");
  store.imageFailed(conversation, conversation.entries.get("s:1"), "http://s3/old");
  assert.equal(connection.framesOf("media_url").length, 2, "an error of a URL no longer used asks nothing");
});

test("a follower tab uploads the photo itself; the upload and send frames go through the leader", async () => {
  const clock = new FakeClock();
  const hub = new BusHub();
  const locks = new LockHub();
  const connection = new FakeConnection();
  let slots = 0;
  connection.answer = (frame) => {
    if (frame.action === "sync") return { type: "sync", messages: [], more: false };
    if (frame.action === "upload") return { type: "upload", upload_id: `u/o/s${(slots += 1)}`, url: "http://s3/b", fields: {} };
    return undefined;
  };
  const uploadsBy = [];
  const media = (tab) => ({
    prepare: async () => ({ blob: "B", contentType: "image/png", size: 10, width: 2, height: 2, preview: null }),
    upload: async (slot) => { uploadsBy.push([tab, slot.upload_id]); },
    objectUrl: () => `blob:${tab}`,
  });
  const tab = (name) => new SharedClient({
    name: "webim:user:alice", bus: hub.bus(), elector: locks.elector(), tabId: name, timers: clock, now: clock.now,
    media: media(name),
    createClient: () => new ChatClient({ connection, timers: clock, now: clock.now, newId: () => `${name}-${Math.random()}` }),
  });
  const leader = tab("one");
  const follower = tab("two");
  leader.start();
  follower.start();
  await settle();
  assert.equal(leader.isLeader, true);
  const seen = [];
  follower.on("outgoing", (view) => seen.push(view.state));
  const view = follower.sendImage({ file: "f", conversationId: "d_ab", text: "caption" });
  await settle(30);
  assert.deepEqual(uploadsBy, [["two", "u/o/s1"]], "the tab with the file POSTs it");
  const [send] = connection.framesOf("send");
  assert.equal(send.id, view.id);
  assert.equal(send.image.upload_id, "u/o/s1");
  assert.equal(send.text, "caption");
  assert.equal("local" in send.image, false, "a tab's object URL never goes to the server");
  assert.ok(seen.includes("uploading") && seen.includes("sending"));
  assert.equal(follower.typing("d_ab"), true);
  assert.equal(follower.typing("d_ab"), false, "throttled in the tab already");
  await settle(30);
  assert.equal(connection.framesOf("typing").length, 1, "relayed by the leader");
  leader.stop();
  follower.stop();
});

test("our message read by the peer: the outbox says seen, the page's tick stays delivered and Seen is a line", async () => {
  const { clock, connection, client, store, server } = setup();
  server.list = [{ conversation_id: "d_ab", peer: BOB, unread: 0, acked_seq: 0, read_seq: 0, peer_acked_seq: 0 }];
  await store.loadConversations();
  const states = [];
  client.on("outgoing", (view) => states.push(view.state));
  const conversation = store.conversationWith(BOB);
  const view = store.send(conversation, "hi");
  connection.push({ type: "sent", ref: view.id, conversation_id: "d_ab", seq: 1, time: 1 });
  connection.push({ type: "seen", conversation_id: "d_ab", seq: 1, by: BOB });
  await clock.advance(50);
  assert.deepEqual(states, ["sending", "sent", "seen"]);
  assert.equal(conversation.entries.get("s:1").state, "delivered");
  assert.equal(conversation.peerReadSeq, 1);
});
