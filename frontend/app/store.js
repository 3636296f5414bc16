// What the UI shows, kept in one place: conversations (by peer, groups by id), their messages (by
// seq, and our unsent ones by id), unread counts and presence; for groups also the title, our role,
// the member list and whether we are still in it. Fed by the client's events; views subscribe to
// "conversations" (the list changed), "thread" (one conversation's messages changed) and
// "members" (a group's member list or presence changed). Photos, typing and seen (protocol.md
// §14): entries carry `image`, "typing" (who is typing in a conversation changed), "settings"
// (read receipts on or off), and `peerReadSeq` (the peer has read up to it: "Seen").

import { Emitter } from "../lib/emitter.js";
import { identityKey, sameIdentity } from "../lib/ids.js";
import { Typing } from "../lib/typing.js";

const HISTORY_PAGE = 30;
const LIST_PAGE = 50; // conversations per page of the list (protocol.md §6.6)
const MEMBERS_PAGE = 100; // group_members page (protocol.md §13.2)
const MEMBERS_SHOWN = 1000; // a group's limit: the panel lists them all
const URL_MARGIN_MS = 10_000; // a signed URL this close to its expiry is refreshed before use

/** Group ids start with `g_` (protocol.md §13): a pushed message of a group new to this page. */
export const isGroupId = (id) => typeof id === "string" && id.startsWith("g_");

export class ChatStore extends Emitter {
  me = null;
  status = { state: "connecting", transport: null, leader: false };
  conversations = new Map(); // peer key (groups: the group id) -> conversation
  #byId = new Map(); // conversation id -> conversation
  #pendingPeer = new Map(); // send id -> conversation (before its conversation id is known)
  #presenceTimer = null; // one presence pull for a burst of new peers
  #loadedOnce = false; // a reconnect after the first load reloads the list (missed receipts)
  conversationsMore = false; // the server has more (older) conversations than loaded so far
  #listCursor = null; // where the next page of the list starts (opaque, from the server)
  #pagesLoaded = 0;
  #pageLoading = null; // the next page's request, while one is in flight
  readReceipts = null; // our setting (null: not known yet)
  #localImages = new Map(); // message id -> object URL of the photo this tab uploaded
  #refreshing = new Set(); // "conversation/seq" of photos whose URL is being refreshed
  #typists; // who is typing where (lib/typing.js)

  /** timers: {setTimeout, clearTimeout} for "typing…" (a fake clock in tests). */
  constructor(client, { timers = globalThis } = {}) {
    super();
    this.client = client;
    this.timers = timers;
    this.#typists = new Typing({
      timers, me: () => this.me,
      onChange: (id) => { const conversation = this.#byId.get(id); if (conversation) this.emit("typing", conversation); },
    });
    client.on("identity", (me) => { this.me = me; this.emit("conversations"); });
    client.on("status", (status) => {
      const back = status.state === "online" && this.status.state !== "online" && this.#loadedOnce;
      this.status = status;
      this.emit("status", status);
      // Receipts pushed while we were away are not pushed again: the list says how far peers got.
      if (back) this.#reloadAfterReconnect();
    });
    client.on("message", (m) => this.#message(m));
    client.on("outgoing", (v) => this.#outgoing(v));
    client.on("delivered", (d) => this.#delivered(d));
    client.on("read", (r) => this.#read(r));
    client.on("presence", (p) => this.#presence(p));
    client.on("typing", (t) => this.#typing(t));
    client.on("seen", (s) => this.#seen(s));
    client.on("settings", (s) => this.#settings(s));
    client.on("blocked", ({ conversation_id: id, blocked }) => { // any tab blocked or unblocked (§15)
      const conversation = [...this.conversations.values()].find((c) => c.id === id);
      if (conversation && Boolean(conversation.blocked) !== blocked) {
        conversation.blocked = blocked;
        this.emit("conversations");
        this.emit("thread", conversation);
      }
    });
    client.on("gone", ({ conversation_id: id }) => { // refused not_member: removed while we were away
      const conversation = this.#byId.get(id);
      if (conversation && !conversation.removed) { conversation.removed = "removed"; this.emit("conversations"); this.emit("thread", conversation); }
    });
  }

  /** The conversation with a peer; a new, empty one until its first message. */
  conversationWith(peer) {
    const key = identityKey(peer);
    let conversation = this.conversations.get(key);
    if (!conversation) {
      conversation = {
        key, peer: { kind: peer.kind, id: peer.id }, id: null, last: null, lastSeq: 0, readSeq: 0, unread: 0,
        deliveredSeq: 0, presence: null, entries: new Map(), oldestSeq: null, more: true, loaded: false,
        peerReadSeq: 0,
      };
      this.conversations.set(key, conversation);
      this.#presenceSoon(); // a new peer: nobody pushes its presence to us until we have asked once
    }
    return conversation;
  }

  /** A group's conversation (created empty the first time; `group` merges what is known). */
  groupConversation(id, group = {}) {
    let conversation = this.#byId.get(id);
    if (!conversation) {
      conversation = {
        key: id, peer: null, id, last: null, lastSeq: 0, readSeq: 0, unread: 0, deliveredSeq: 0, presence: null,
        entries: new Map(), oldestSeq: null, more: true, loaded: false, peerReadSeq: 0,
        group: { title: null, role: "member", membersCount: 0 }, stateSeq: 0, removed: false,
        members: null, membersMore: false, // the member list, once asked for (the panel)
      };
      this.conversations.set(id, conversation);
      this.#byId.set(id, conversation);
    }
    Object.assign(conversation.group, Object.fromEntries(Object.entries(group).filter(([, v]) => v !== undefined)));
    return conversation;
  }

  /** Newest first, as a chat list shows them. */
  sortedConversations() {
    return [...this.conversations.values()]
      .filter((c) => c.last || c.entries.size > 0 || c.group)
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

  /** After a reconnect, the first page again until one answers on this line (refused
   * internal_error, rate_limited or no answer: again, backing off 1 s doubling to 30 s; offline:
   * the next reconnect asks). Nothing else tells of a receipt pushed while we were away. */
  async #reloadAfterReconnect() {
    for (let delay = 1000; this.status.state === "online"; delay = Math.min(delay * 2, 30_000)) {
      try {
        return await this.loadConversations();
      } catch (error) {
        if (!["internal_error", "rate_limited", "timeout"].includes(error?.code)) return undefined;
        await new Promise((resolve) => this.timers.setTimeout(resolve, delay));
      }
    }
    return undefined;
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
      if (item.group) { this.#mergeGroup(item); continue; }
      const conversation = this.conversationWith(item.peer);
      this.#setId(conversation, item.conversation_id);
      conversation.blocked = item.blocked === true; // we blocked this peer (§15)
      conversation.readSeq = Math.max(conversation.readSeq, item.read_seq);
      this.#delivered({ conversation_id: item.conversation_id, seq: item.peer_acked_seq ?? 0 }, { quiet: true });
      // present only while both have read receipts on (protocol.md §14.3)
      if (this.readReceipts !== false) conversation.peerReadSeq = Math.max(conversation.peerReadSeq, item.peer_read_seq ?? 0);
      if (item.last_message && item.last_message.seq >= conversation.lastSeq) {
        conversation.last = item.last_message;
        conversation.lastSeq = item.last_message.seq;
      }
      this.#recount(conversation);
    }
  }

  #mergeGroup(item) {
    const conversation = this.groupConversation(item.conversation_id);
    const asOf = item.last_message?.seq ?? 0;
    if (asOf >= conversation.stateSeq) { // the list's title and role are as of its last message
      Object.assign(conversation.group, {
        title: item.group.title, role: item.group.role, membersCount: item.group.members_count,
      });
      conversation.stateSeq = asOf;
      conversation.removed = false; // listed: a member (again)
    }
    conversation.readSeq = Math.max(conversation.readSeq, item.read_seq ?? 0);
    if (item.last_message && item.last_message.seq >= conversation.lastSeq) {
      conversation.last = item.last_message;
      conversation.lastSeq = item.last_message.seq;
    }
    this.#recount(conversation);
  }

  /** Older messages of a conversation (or the newest, the first time). */
  async loadHistory(conversation) {
    if (!conversation.id || !conversation.more) return;
    const { messages, more } = await this.client.history(conversation.id, {
      before: conversation.oldestSeq, limit: HISTORY_PAGE,
    });
    for (const message of messages) this.#take(conversation, message);
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

  /** Whether we may delete this entry for everyone (protocol.md §16): our own stored message, or
   * any message of a group we own or admin (the server decides the window: a refusal is shown). */
  canDelete(conversation, entry) {
    if (!conversation?.id || entry.seq === null || entry.event || entry.deleted || conversation.removed) return false;
    return entry.own || ["owner", "admin"].includes(conversation.group?.role);
  }

  /** Delete message `seq` for everyone (§16); its event comes as our own "message", which
   * replaces the entry, in every tab. Resolves to the server's answer. */
  deleteMessage(conversation, seq) {
    return this.client.deleteMessage(conversation.id, seq);
  }

  /** A picked photo, with what the composer holds as its caption (protocol.md §14.1). */
  sendImage(conversation, file, caption = "") {
    const target = conversation.id ? { conversationId: conversation.id } : { to: conversation.peer };
    const view = this.client.sendImage({ file, text: caption, ...target });
    this.#outgoing(view);
    return view;
  }

  /** The user typed in a non-empty composer (the client sends at most one frame per 3 s). */
  typing(conversation) {
    if (conversation.id && !conversation.removed) this.client.typing(conversation.id);
  }

  /** Who is typing in this conversation now (identities), for "typing…". */
  typingNow(conversation) {
    return conversation.id ? this.#typists.who(conversation.id) : [];
  }

  /** Reads our read-receipts setting from the server. */
  async loadSettings() {
    await this.client.settings();
  }

  /** Report the conversation to the site's operator (protocol.md §17): reason, optional note. */
  async report(conversation, reason, note) {
    if (!conversation.id) return null;
    return this.client.report(conversation.id, reason, { note: note.trim() || null });
  }

  /** Block (or unblock) the peer of a 1:1 conversation (protocol.md §15); every tab hears it. */
  async setBlocked(conversation, on) {
    if (!conversation.id || conversation.group) return;
    await (on ? this.client.block(conversation.id) : this.client.unblock(conversation.id));
    conversation.blocked = Boolean(on);
    this.emit("conversations");
    this.emit("thread", conversation);
  }

  async setReadReceipts(on) {
    await this.client.settings({ read_receipts: Boolean(on) });
  }

  /**
   * Where to load a photo from now: this tab's own upload, or a signed URL not about to expire;
   * null when a fresh URL is needed (show the preview meanwhile and call refreshImage).
   */
  imageSource(entry, now = Date.now()) {
    const image = entry.image;
    if (!image) return null;
    const local = this.#localImages.get(entry.id) ?? image.local;
    if (local) return local;
    // a URL just refreshed is used whatever our clock says (a skewed clock must not loop)
    if (image.url && !image.broken && (image.fresh || (image.url_expires ?? 0) > now + URL_MARGIN_MS)) return image.url;
    return null;
  }

  /** A fresh signed URL for a photo (expired, or the <img> failed to load it); one request at a time. */
  async refreshImage(conversation, entry) {
    const key = `${conversation.id}/${entry.seq}`;
    if (!conversation.id || entry.seq === null || !entry.image || this.#refreshing.has(key)) return;
    if ((entry.image.retryAt ?? 0) > Date.now()) return; // the last try failed: not in a loop
    this.#refreshing.add(key);
    const current = () => conversation.entries.get(entry.key) ?? entry;
    try {
      const { url, url_expires: expires } = await this.client.mediaUrl(conversation.id, entry.seq);
      current().image = { ...current().image, url, url_expires: expires, broken: false, fresh: true };
    } catch (error) {
      const gone = error?.code === "not_found" || error?.code === "not_member";
      current().image = { ...current().image, ...(gone ? { gone: true } : { retryAt: Date.now() + URL_MARGIN_MS }) };
      throw error;
    } finally {
      this.#refreshing.delete(key);
      this.emit("thread", conversation);
    }
  }

  /** The <img> could not load this URL: once per URL, ask for a fresh one. */
  imageFailed(conversation, entry, src) {
    const image = entry.image;
    if (!image || image.url !== src || image.failedUrl === src) return;
    const failures = (image.failures ?? 0) + 1;
    entry.image = { ...image, failedUrl: src, broken: true, fresh: false, failures, ...(failures > 2 ? { gone: true } : {}) };
    if (failures > 2) { this.emit("thread", conversation); return; } // fresh URLs fail too: the preview stays
    this.refreshImage(conversation, entry).catch(() => {});
  }

  /** The user has seen everything in this conversation. */
  async markRead(conversation) {
    const seq = conversation.lastSeq;
    if (!conversation.id || conversation.removed || seq <= Math.max(conversation.readSeq, conversation.marking ?? 0)) return;
    conversation.marking = seq; // one read call in flight per conversation
    try {
      await this.client.markRead(conversation.id, seq);
    } finally {
      if (conversation.marking === seq) conversation.marking = 0;
    }
  }

  async refreshPresence() {
    const peers = [...this.conversations.values()].filter((c) => c.peer).map((c) => c.peer).slice(0, 100);
    if (peers.length === 0) return;
    for (const item of await this.client.presence(peers)) this.#presence(item);
  }

  // -- groups (protocol.md §13) ----------------------------------------------------------------

  /** Creates a group (we are its owner) and resolves to its conversation. */
  async createGroup(title, members) {
    const answer = await this.client.createGroup(title, members);
    const conversation = this.groupConversation(answer.conversation_id, {
      title: answer.title, role: answer.role ?? "owner", membersCount: answer.members_count,
    });
    if (answer.seq >= conversation.stateSeq) conversation.stateSeq = answer.seq;
    if (answer.seq > conversation.lastSeq) {
      conversation.lastSeq = answer.seq;
      conversation.readSeq = Math.max(conversation.readSeq, answer.seq);
      conversation.last = { seq: answer.seq, time: answer.time, text: "", from: this.me, event: { type: "created", title: answer.title } };
    }
    this.#recount(conversation);
    this.emit("conversations");
    return conversation;
  }

  // The changes below resolve to the server's answer; their event comes as our own "message"
  // (the client builds it from the answer), which moves the state like anyone's event.
  addMembers(conversation, members, role = "member") {
    return this.client.addMembers(conversation.id, members, role);
  }

  removeMember(conversation, member) {
    return this.client.removeMember(conversation.id, member);
  }

  renameGroup(conversation, title) {
    return this.client.renameGroup(conversation.id, title);
  }

  setRole(conversation, member, role) {
    return this.client.setRole(conversation.id, member, role);
  }

  /** Leaves the group: its thread stays on screen, marked, until the page is reloaded. */
  leaveGroup(conversation) {
    return this.client.leaveGroup(conversation.id);
  }

  /** A group's members (every page, up to the group limit) with their presence pulled. */
  async loadMembers(conversation) {
    const members = [];
    let cursor = null;
    do {
      const page = await this.client.groupMembers(conversation.id, { cursor, limit: MEMBERS_PAGE });
      members.push(...page.members);
      if (page.title !== undefined) conversation.group.title = page.title;
      if (page.members_count !== undefined) conversation.group.membersCount = page.members_count;
      cursor = page.more ? page.cursor : null;
    } while (cursor && members.length < MEMBERS_SHOWN);
    const known = new Map((conversation.members ?? []).map((m) => [identityKey(m.member), m.presence]));
    conversation.members = members.map((m) => ({
      member: m.member, role: m.role, joinedSeq: m.joined_seq, presence: known.get(identityKey(m.member)) ?? null,
    }));
    this.emit("members", conversation);
    await this.refreshMembersPresence(conversation);
  }

  /** Presence is not pushed to group members (protocol.md §13.1): pulled, 100 at a time. */
  async refreshMembersPresence(conversation) {
    const members = conversation.members ?? [];
    for (let start = 0; start < members.length; start += 100) {
      const chunk = members.slice(start, start + 100);
      const answer = await this.client.presence(chunk.map((m) => m.member));
      for (const item of answer) this.#memberPresence(conversation, item);
    }
    this.emit("members", conversation);
  }

  #memberPresence(conversation, { identity, online, last_seen: lastSeen }) {
    const entry = conversation.members?.find((m) => identityKey(m.member) === identityKey(identity));
    if (entry && !(online === null && entry.presence)) entry.presence = { online, lastSeen };
  }

  /** An event message moves the group's state (title, our role, the members), in seq order only:
   * an event from an older history page is shown, but changes nothing. */
  #applyEvent(conversation, message) {
    const event = message.event;
    if (!conversation.group || !event || message.seq <= conversation.stateSeq) return;
    conversation.stateSeq = message.seq;
    const group = conversation.group;
    const isMe = (identity) => sameIdentity(identity, this.me);
    const members = conversation.members;
    const drop = (identity) => {
      if (members) conversation.members = members.filter((m) => !sameIdentity(m.member, identity));
    };
    switch (event.type) {
      case "created":
        group.title = event.title ?? group.title;
        group.membersCount = event.members?.length ?? group.membersCount;
        if (isMe(message.from)) group.role = "owner";
        break;
      case "joined":
        group.membersCount += event.members?.length ?? 0;
        for (const identity of event.members ?? []) {
          if (isMe(identity)) { conversation.removed = false; group.role = event.role ?? "member"; }
          if (members && !members.some((m) => sameIdentity(m.member, identity))) {
            members.push({ member: identity, role: event.role ?? "member", joinedSeq: message.seq, presence: null });
          }
        }
        break;
      case "removed":
        group.membersCount = Math.max(0, group.membersCount - 1);
        if (isMe(event.member)) conversation.removed = "removed";
        drop(event.member);
        break;
      case "left":
        group.membersCount = Math.max(0, group.membersCount - 1);
        if (isMe(message.from)) conversation.removed = "left";
        drop(message.from);
        break;
      case "renamed":
        group.title = event.title ?? group.title;
        break;
      case "role": {
        const setRole = (identity, role) => {
          if (isMe(identity)) group.role = role;
          const entry = conversation.members?.find((m) => sameIdentity(m.member, identity));
          if (entry) entry.role = role;
        };
        setRole(event.member, event.role);
        if (event.role === "owner") setRole(message.from, "admin"); // ownership handed on
        break;
      }
      default: break; // a type added later: shown as nothing, changes nothing
    }
    this.emit("members", conversation);
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
    if (isGroupId(message.conversation_id)) {
      // a group learned by a push: it starts at our joined (or created) event, which names it
      const conversation = this.groupConversation(message.conversation_id);
      if (message.event?.type !== "created") this.loadConversations().catch(() => {}); // its title
      return conversation;
    }
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
    this.#take(conversation, message);
    if (!message.own) this.#typists.message(message);
    this.emit("thread", conversation);
    this.emit("conversations");
  }

  /** A stored message (pushed, pulled or from history) into its conversation. */
  #take(conversation, message) {
    if (message.event?.type === "deleted") this.#deleted(conversation, message.event.seq);
    this.#store(conversation, message);
    this.#applyEvent(conversation, message);
    if (message.seq > conversation.lastSeq) {
      conversation.lastSeq = message.seq;
      conversation.last = { seq: message.seq, time: message.time, text: message.text, from: message.from };
      if (message.event) conversation.last.event = message.event;
      if (message.image) conversation.last.image = true;
      const own = message.own ?? sameIdentity(message.from, this.me);
      if (own) conversation.readSeq = Math.max(conversation.readSeq, message.seq); // sending reads
    }
    this.#recount(conversation);
  }

  #store(conversation, message) {
    const own = message.own ?? sameIdentity(message.from, this.me);
    const pendingKey = `p:${message.client_id}`;
    const pending = own ? conversation.entries.get(pendingKey) : null;
    if (pending) conversation.entries.delete(pendingKey);
    const key = `s:${message.seq}`;
    const existing = conversation.entries.get(key);
    if (message.event) { // a system line (protocol.md §13.3): no bubble, no state
      conversation.entries.set(key, {
        key, seq: message.seq, id: message.client_id, own: false, from: message.from, text: "", time: message.time,
        event: message.event, state: null, order: 0,
      });
      return;
    }
    const state = own ? (message.seq <= conversation.deliveredSeq ? "delivered" : existing?.state ?? pending?.state ?? "sent") : null;
    const image = message.image ? { ...(existing?.image ?? pending?.image ?? {}), ...message.image } : existing?.image ?? null;
    conversation.entries.set(key, {
      key, seq: message.seq, id: message.client_id, own, from: message.from, text: message.text, time: message.time,
      state: state === "sending" || state === "failed" ? "sent" : state, order: 0, image,
    });
    // deleted for everyone (§16): the copy says so, or its event came first (a later history page)
    if (message.deleted || conversation.deletedSeqs?.has(message.seq)) this.#deleted(conversation, message.seq);
  }

  /** Message `seq` was deleted for everyone (§16): "Message deleted", no text, no photo, from now
   * on whatever copy of it comes (remembered for a history page not loaded yet). */
  #deleted(conversation, seq) {
    (conversation.deletedSeqs ??= new Set()).add(seq);
    const entry = conversation.entries.get(`s:${seq}`);
    if (entry && !entry.event) Object.assign(entry, { deleted: true, text: "", image: null });
    if (conversation.last?.seq === seq) conversation.last = { ...conversation.last, text: "", image: false, deleted: true };
  }

  #outgoing(view) {
    if (view.image?.local) this.#localImages.set(view.id, view.image.local);
    const conversation = view.conversation_id
      ? this.#byId.get(view.conversation_id) ?? (view.to ? this.conversationWith(view.to) : null)
      : view.to ? this.conversationWith(view.to) : null;
    if (!conversation) return;
    if (view.conversation_id) this.#setId(conversation, view.conversation_id);
    else this.#pendingPeer.set(view.id, conversation);
    if (view.seq !== null && view.seq !== undefined) {
      const stored = conversation.entries.get(`s:${view.seq}`);
      conversation.entries.delete(`p:${view.id}`);
      // "seen" is shown as a line under the message (peerReadSeq); the tick says delivered
      const state = view.seq <= conversation.deliveredSeq || view.state === "seen" ? "delivered" : view.state;
      conversation.entries.set(`s:${view.seq}`, {
        ...(stored ?? { key: `s:${view.seq}`, own: true, from: this.me, text: view.text, order: 0, image: view.image ?? null }),
        seq: view.seq, id: view.id, time: view.time, state: stored?.state === "delivered" ? "delivered" : state,
      });
      if (view.seq > conversation.lastSeq) {
        conversation.lastSeq = view.seq;
        conversation.last = { seq: view.seq, time: view.time, text: view.text, from: this.me };
        if (view.image) conversation.last.image = true;
        conversation.readSeq = Math.max(conversation.readSeq, view.seq);
      }
    } else {
      const key = `p:${view.id}`;
      const existing = conversation.entries.get(key);
      conversation.entries.set(key, {
        key, seq: null, id: view.id, own: true, from: this.me, text: view.text, time: null, state: view.state,
        error: view.error, order: existing?.order ?? performance.now(),
        image: view.image ?? existing?.image ?? null, progress: view.progress ?? null,
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
    for (const group of this.conversations.values()) {
      if (group.members) { this.#memberPresence(group, { identity, online, last_seen: lastSeen }); this.emit("members", group); }
    }
    const conversation = this.conversations.get(identityKey(identity));
    if (!conversation || (online === null && conversation.presence)) return; // pushed beats "not told"
    conversation.presence = { online, lastSeen };
    this.emit("presence", conversation);
    this.emit("conversations");
  }

  /** Someone is typing (protocol.md §14.2): shown for 6 s, or until their message arrives. */
  #typing(frame) {
    const id = frame.conversation_id;
    if (!this.#byId.has(id) && !isGroupId(id) && frame.from && !sameIdentity(frame.from, this.me)) {
      this.#setId(this.conversationWith(frame.from), id); // the first thing of a new 1:1 conversation
    }
    this.#typists.received(frame);
  }

  /** The peer read our messages up to seq: "Seen" (and delivered, which reading implies). */
  #seen({ conversation_id: id, seq }) {
    const conversation = this.#byId.get(id);
    if (!conversation || this.readReceipts === false || seq <= conversation.peerReadSeq) return;
    conversation.peerReadSeq = seq;
    this.#delivered({ conversation_id: id, seq }, { quiet: true });
    this.emit("thread", conversation);
  }

  #settings({ read_receipts: on }) {
    const before = this.readReceipts;
    this.readReceipts = on;
    if (!on) { // off: we see no receipts from others either
      for (const conversation of this.conversations.values()) {
        if (conversation.peerReadSeq) { conversation.peerReadSeq = 0; this.emit("thread", conversation); }
      }
    } else if (before === false && this.#loadedOnce) {
      this.loadConversations().catch(() => {}); // the peers' read marks again
    }
    this.emit("settings", { read_receipts: on });
  }

  #recount(conversation) {
    conversation.unread = Math.max(0, conversation.lastSeq - conversation.readSeq);
  }
}
