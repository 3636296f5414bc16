// What the UI shows, kept in one place: conversations (by peer), their messages (by seq, and our
// unsent ones by id), unread counts and presence. Fed by the client's events; views subscribe to
// "conversations" (the list changed) and "thread" (one conversation's messages changed).

import { Emitter } from "../lib/emitter.js";
import { identityKey, sameIdentity } from "../lib/ids.js";

const HISTORY_PAGE = 30;
const LIST_PAGE = 50; // conversations per page of the list (protocol.md §6.6)

export class ChatStore extends Emitter {
  me = null;
  status = { state: "connecting", transport: null, leader: false };
  conversations = new Map(); // peer key -> conversation
  #byId = new Map(); // conversation id -> conversation
  #pendingPeer = new Map(); // send id -> conversation (before its conversation id is known)
  #presenceTimer = null; // one presence pull for a burst of new peers
  #loadedOnce = false; // a reconnect after the first load reloads the list (missed receipts)
  conversationsMore = false; // the server has more (older) conversations than loaded so far
  #listCursor = null; // where the next page of the list starts (opaque, from the server)
  #pagesLoaded = 0;
  #pageLoading = null; // the next page's request, while one is in flight

  constructor(client) {
    super();
    this.client = client;
    client.on("identity", (me) => { this.me = me; this.emit("conversations"); });
    client.on("status", (status) => {
      const back = status.state === "online" && this.status.state !== "online" && this.#loadedOnce;
      this.status = status;
      this.emit("status", status);
      // Receipts pushed while we were away are not pushed again: the list says how far peers got.
      if (back) this.loadConversations().catch(() => {});
    });
    client.on("message", (m) => this.#message(m));
    client.on("outgoing", (v) => this.#outgoing(v));
    client.on("delivered", (d) => this.#delivered(d));
    client.on("read", (r) => this.#read(r));
    client.on("presence", (p) => this.#presence(p));
  }

  /** The conversation with a peer; a new, empty one until its first message. */
  conversationWith(peer) {
    const key = identityKey(peer);
    let conversation = this.conversations.get(key);
    if (!conversation) {
      conversation = {
        key, peer: { kind: peer.kind, id: peer.id }, id: null, last: null, lastSeq: 0, readSeq: 0, unread: 0,
        deliveredSeq: 0, presence: null, entries: new Map(), oldestSeq: null, more: true, loaded: false,
      };
      this.conversations.set(key, conversation);
      this.#presenceSoon(); // a new peer: nobody pushes its presence to us until we have asked once
    }
    return conversation;
  }

  /** Newest first, as a chat list shows them. */
  sortedConversations() {
    return [...this.conversations.values()]
      .filter((c) => c.last || c.entries.size > 0)
      .sort((a, b) => (b.last?.time ?? Infinity) - (a.last?.time ?? Infinity));
  }

  /** The first page of the list (at start, and again after a reconnect). Pages already loaded
   * beyond it stay, and so does where the next one starts. */
  async loadConversations() {
    const page = await this.client.conversations({ limit: LIST_PAGE });
    if (this.#pagesLoaded <= 1) this.#nextPageAt(page);
    this.#pagesLoaded = Math.max(this.#pagesLoaded, 1);
    this.#mergeList(page.conversations);
    this.#loadedOnce = true;
    this.emit("conversations");
    for (const conversation of this.conversations.values()) this.emit("thread", conversation);
    this.refreshPresence().catch(() => {});
  }

  /** The next page of the list (the user scrolled to its end). Resolves to whether a page came;
   * one request at a time, and none once the server said there is no more. */
  loadMoreConversations() {
    if (!this.conversationsMore || !this.#listCursor) return Promise.resolve(false);
    this.#pageLoading ??= this.#loadPage(this.#listCursor);
    return this.#pageLoading;
  }

  async #loadPage(cursor) {
    try {
      await null; // so that #pageLoading is set before the finally below can clear it
      const page = await this.client.conversations({ limit: LIST_PAGE, cursor });
      this.#nextPageAt(page);
      this.#pagesLoaded += 1;
      this.#mergeList(page.conversations);
      this.emit("conversations");
      for (const item of page.conversations) {
        const conversation = this.#byId.get(item.conversation_id);
        if (conversation) this.emit("thread", conversation);
      }
      return true;
    } finally {
      this.#pageLoading = null;
    }
  }

  #nextPageAt({ more, cursor }) {
    this.#listCursor = more && cursor ? cursor : null;
    this.conversationsMore = Boolean(this.#listCursor);
  }

  #mergeList(conversations) {
    for (const item of conversations) {
      const conversation = this.conversationWith(item.peer);
      this.#setId(conversation, item.conversation_id);
      conversation.readSeq = Math.max(conversation.readSeq, item.read_seq);
      this.#delivered({ conversation_id: item.conversation_id, seq: item.peer_acked_seq ?? 0 }, { quiet: true });
      if (item.last_message && item.last_message.seq >= conversation.lastSeq) {
        conversation.last = item.last_message;
        conversation.lastSeq = item.last_message.seq;
      }
      this.#recount(conversation);
    }
  }

  /** Older messages of a conversation (or the newest, the first time). */
  async loadHistory(conversation) {
    if (!conversation.id || !conversation.more) return;
    const { messages, more } = await this.client.history(conversation.id, {
      before: conversation.oldestSeq, limit: HISTORY_PAGE,
    });
    for (const message of messages) this.#store(conversation, message);
    conversation.oldestSeq = messages[0]?.seq ?? conversation.oldestSeq;
    conversation.more = more;
    conversation.loaded = true;
    this.emit("thread", conversation);
  }

  send(conversation, text) {
    const view = conversation.id
      ? this.client.send({ text, conversationId: conversation.id })
      : this.client.send({ text, to: conversation.peer });
    this.#outgoing(view);
    return view;
  }

  resend(id) {
    return this.client.resend(id);
  }

  /** The user has seen everything in this conversation. */
  async markRead(conversation) {
    const seq = conversation.lastSeq;
    if (!conversation.id || seq <= Math.max(conversation.readSeq, conversation.marking ?? 0)) return;
    conversation.marking = seq; // one read call in flight per conversation
    try {
      await this.client.markRead(conversation.id, seq);
    } finally {
      if (conversation.marking === seq) conversation.marking = 0;
    }
  }

  async refreshPresence() {
    const peers = [...this.conversations.values()].map((c) => c.peer).slice(0, 100);
    if (peers.length === 0) return;
    for (const item of await this.client.presence(peers)) this.#presence(item);
  }

  /** A conversation's entries in display order: stored by seq, then ours not stored yet. */
  entries(conversation) {
    return [...conversation.entries.values()].sort((a, b) => {
      if (a.seq !== null && b.seq !== null) return a.seq - b.seq;
      if (a.seq !== null) return -1;
      if (b.seq !== null) return 1;
      return a.order - b.order;
    });
  }

  async unsettled() {
    for (const view of await this.client.unsettled()) this.#outgoing(view);
  }

  #presenceSoon() {
    if (this.#presenceTimer) return;
    this.#presenceTimer = setTimeout(() => {
      this.#presenceTimer = null;
      this.refreshPresence().catch(() => {});
    }, 300);
  }

  #setId(conversation, id) {
    if (!id || conversation.id === id) return;
    conversation.id = id;
    this.#byId.set(id, conversation);
  }

  #conversationOf(message) {
    const known = this.#byId.get(message.conversation_id);
    if (known) return known;
    if (!message.own) {
      const conversation = this.conversationWith(message.from);
      this.#setId(conversation, message.conversation_id);
      return conversation;
    }
    const pending = this.#pendingPeer.get(message.client_id);
    if (pending) { this.#setId(pending, message.conversation_id); return pending; }
    this.loadConversations().catch(() => {}); // our message from another device, in a conversation new here
    return null;
  }

  #message(message) {
    const conversation = this.#conversationOf(message);
    if (!conversation) return;
    this.#store(conversation, message);
    if (message.seq > conversation.lastSeq) {
      conversation.lastSeq = message.seq;
      conversation.last = { seq: message.seq, time: message.time, text: message.text, from: message.from };
      if (message.own) conversation.readSeq = Math.max(conversation.readSeq, message.seq); // sending reads
    }
    this.#recount(conversation);
    this.emit("thread", conversation);
    this.emit("conversations");
  }

  #store(conversation, message) {
    const own = message.own ?? sameIdentity(message.from, this.me);
    const pendingKey = `p:${message.client_id}`;
    const pending = own ? conversation.entries.get(pendingKey) : null;
    if (pending) conversation.entries.delete(pendingKey);
    const key = `s:${message.seq}`;
    const existing = conversation.entries.get(key);
    const state = own ? (message.seq <= conversation.deliveredSeq ? "delivered" : existing?.state ?? pending?.state ?? "sent") : null;
    conversation.entries.set(key, {
      key, seq: message.seq, id: message.client_id, own, from: message.from, text: message.text, time: message.time,
      state: state === "sending" || state === "failed" ? "sent" : state, order: 0,
    });
  }

  #outgoing(view) {
    const conversation = view.conversation_id
      ? this.#byId.get(view.conversation_id) ?? (view.to ? this.conversationWith(view.to) : null)
      : view.to ? this.conversationWith(view.to) : null;
    if (!conversation) return;
    if (view.conversation_id) this.#setId(conversation, view.conversation_id);
    else this.#pendingPeer.set(view.id, conversation);
    if (view.seq !== null && view.seq !== undefined) {
      const stored = conversation.entries.get(`s:${view.seq}`);
      conversation.entries.delete(`p:${view.id}`);
      const state = view.seq <= conversation.deliveredSeq ? "delivered" : view.state;
      conversation.entries.set(`s:${view.seq}`, {
        ...(stored ?? { key: `s:${view.seq}`, own: true, from: this.me, text: view.text, order: 0 }),
        seq: view.seq, id: view.id, time: view.time, state: stored?.state === "delivered" ? "delivered" : state,
      });
      if (view.seq > conversation.lastSeq) {
        conversation.lastSeq = view.seq;
        conversation.last = { seq: view.seq, time: view.time, text: view.text, from: this.me };
        conversation.readSeq = Math.max(conversation.readSeq, view.seq);
      }
    } else {
      const key = `p:${view.id}`;
      const existing = conversation.entries.get(key);
      conversation.entries.set(key, {
        key, seq: null, id: view.id, own: true, from: this.me, text: view.text, time: null, state: view.state,
        error: view.error, order: existing?.order ?? performance.now(),
      });
    }
    this.emit("thread", conversation);
    this.emit("conversations");
  }

  #delivered({ conversation_id: id, seq }, { quiet = false } = {}) {
    const conversation = this.#byId.get(id);
    if (!conversation || seq <= conversation.deliveredSeq) return;
    conversation.deliveredSeq = Math.max(conversation.deliveredSeq, seq);
    for (const entry of conversation.entries.values()) {
      if (entry.own && entry.seq !== null && entry.seq <= seq && entry.state === "sent") entry.state = "delivered";
    }
    if (!quiet) this.emit("thread", conversation);
  }

  #read({ conversation_id: id, seq }) {
    const conversation = this.#byId.get(id);
    if (!conversation) return;
    conversation.readSeq = Math.max(conversation.readSeq, seq);
    this.#recount(conversation);
    this.emit("conversations");
  }

  #presence({ identity, online, last_seen: lastSeen }) {
    const conversation = this.conversations.get(identityKey(identity));
    if (!conversation || (online === null && conversation.presence)) return; // pushed beats "not told"
    conversation.presence = { online, lastSeen };
    this.emit("presence", conversation);
    this.emit("conversations");
  }

  #recount(conversation) {
    conversation.unread = Math.max(0, conversation.lastSeq - conversation.readSeq);
  }
}
