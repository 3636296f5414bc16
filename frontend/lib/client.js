// The chat client: the protocol logic the page and the widget share (docs/protocol.md §9, §11,
// §13). It sends through the ack queue (outbox.js), receives in order and once (inbox.js), acks
// cumulatively (in groups batched: at most every groupAckMs, at least every groupAckMessages),
// pulls what it missed on every (re)connect and on every gap, and reports to the UI as events:
//   "status"   {state, transport}          connection state
//   "identity" {kind, id}                  who this connection proved to be
//   "message"  message frame + {own}       a stored message, in seq order, once per tab session;
//                                          in a group also the events (text "" + `event`, §13.3):
//                                          show them as system lines (an unknown type: nothing)
//   "outgoing" outbox view                 a message we send: uploading / sending / sent / delivered /
//                                          seen / failed
//   "delivered" {conversation_id, seq}     the peer has everything up to seq (1:1 only)
//   "read"     {conversation_id, seq}      our read mark moved (unread counts)
//   "presence" presence frame              a peer came or went
//   "typing"   {conversation_id, from}     someone is typing there (§14.2; show it for 6 s)
//   "seen"     {conversation_id, seq, by}  the peer has read our messages up to seq (§14.3)
//   "settings" {read_receipts}             our settings, as the server answered them
//   "gone"     {conversation_id, code}     a group we held refused a frame naming it (`not_member`:
//                                          removed while away): it is dropped, show it as left
//
// The API (ChatClient here; SharedClient in tabs.js has the same calls, from any tab):
//   send({text, to | conversationId, id?}) -> outbox view at once; a group: conversationId only
//   resend(id), unsettled(), conversations({cursor, limit}), history(id, {before, limit}),
//   markRead(id, seq), presence(identities)
//   Photos, typing, seen (§14): sendImage({file, text?, to | conversationId, id?}) -> view at
//   once ("uploading" with `progress`, then as send); resend(id) also retries a failed upload
//   (same id); mediaUrl(conversationId, seq) -> {url, url_expires}; typing(conversationId) (at
//   most one per 3 s per conversation); settings({read_receipts}?) -> {read_receipts};
//   requestUpload({content_type, size}) -> the upload slot (sendImage uses it).
//   Groups (§13). Each returns a promise of the server's answer frame, or rejects with an Error
//   whose `code` is the protocol's error code (not_member, not_allowed, group_full,
//   too_many_groups, cannot_add, owner_must_stay, invalid_field, seq_out_of_range, ...) or, when no answer
//   came after the retries, "timeout" / "offline" / "stopped". Changes are idempotent by an id
//   kept across retries (a lost answer, internal_error, a reconnect: the same frame again, up to
//   4 tries; rate_limited waits retry_after); the error carries it as `id`: pass {id} to try the
//   very same change again later. Our own change's event is shown ("message", own: true) when
//   its answer comes (the server pushes it only to the others).
//   createGroup(title, members, {id}?)            -> {type:"group", conversation_id, title, role,
//                                                     seq, time, members_count}
//   addMembers(conversationId, members, role = "member", {id}?) -> {type:"group_changed",
//                                                     conversation_id, seq (null: all were in), time}
//   removeMember(conversationId, member, {id}?)   -> group_changed
//   leaveGroup(conversationId, {id}?)             -> group_changed (then nothing more comes)
//   renameGroup(conversationId, title, {id}?)     -> group_changed
//   setRole(conversationId, member, role, {id}?)  -> group_changed ("owner": hand ownership on)
//   groupMembers(conversationId, {cursor, limit}?) -> {type:"group_members", title, members_count,
//                                                     members: [{member, role, joined_seq}], more, cursor}
//   receipts(conversationId, seq, {cursor, limit}?) -> {type:"receipts", seq, members_count, acked,
//                                                     read, members: [{member, acked, read}], more, cursor}
//   flushAcks(): the batched acks now (the page calls it when hidden; stop() does it too)
//   members and member are identities {kind, id}. conversations() lists groups too: an entry
//   with `group: {title, members_count, role}` instead of `peer` (§13.4).
//   Groups have no retransmission (§13.8): while we hold a group the connection's keepalive ping
//   carries `groups: true`, and a group whose last seq in the pong is past what we have is pulled
//   (the tail check); a burst that showed a loss (a gap) gets one such ping once no group push has
//   come for settleCheckMs (Q). Any pong with `groups` is taken, whoever sent the ping.

import { Emitter } from "./emitter.js";
import { idFactory, sameIdentity } from "./ids.js";
import { GROUP_CHANGES, ownEventMessage } from "./groups.js";
import { Inbox, isGroupId } from "./inbox.js";
import { Outbox } from "./outbox.js";
import { PhotoSender } from "./photos.js";
import { Typing } from "./typing.js";
import { assertSendable } from "./text.js";

// outcome unknown, or (connection_gone) nothing done: the connection reconnects at once
const RETRIED = new Set(["timeout", "internal_error", "disconnected", "offline", "connection_gone"]);
const KEEP_CHANGES = 200; // group changes remembered for a late answer
const TARGETS_MEMBER = new Set(["group_remove", "group_role"]); // their not_member may be about the target
const KEEP_ACK_IDS = 500; // recent ack ids remembered for a refusal naming only the id

function identityOf(value) {
  return { kind: value.kind, id: value.id };
}

function paging(cursor, limit) {
  const fields = {};
  if (cursor !== null && cursor !== undefined) fields.cursor = cursor;
  if (limit !== null && limit !== undefined) fields.limit = limit;
  return fields;
}

export { GROUP_CHANGES };

export class ChatClient extends Emitter {
  me = null;
  status = { state: "offline", transport: null };
  #inbox;
  #outbox;
  #pulling = null;
  #pullAgain = false;
  #changes = new Map(); // id -> {request, pending}: our group changes, for their answers
  #leaving = false;
  #photos;
  #typing;
  #ackIds = new Map(); // our recent ack ids -> conversation

  constructor({ connection, api = null, session = null, timers = globalThis, outboxStore = null, media = {},
    now = () => Date.now(), typingIntervalMs = 3000,
    ackDelayMs = 20, gapGraceMs = 1000, syncLimit = 100, newId = idFactory(), ackTimeoutMs = 3000, maxAttempts = 4,
    groupAckMs = 2000, groupAckMessages = 20, changeTimeoutMs = 10_000, settleCheckMs = 3000 }) {
    super();
    Object.assign(this, { connection, api, session, timers, syncLimit, newId, maxAttempts, changeTimeoutMs });
    this.#inbox = new Inbox({
      timers, ackDelayMs, gapGraceMs, groupAckMs, groupAckMessages, settleCheckMs,
      me: () => this.me,
      inFlight: (conversationId) => this.#outbox.inFlight(conversationId) + this.#changesInFlight(conversationId),
      onShow: (message) => this.#show(message),
      // quiet: the server answers only a refusal, not `acked` (one billed frame fewer per message);
      // the cursor is where this ack puts it (were the ack lost, the next pull starts lower: duplicates)
      onAck: (conversationId, seq) => {
        const id = this.newId();
        this.#ackIds.set(id, conversationId); // a refusal (`not_member`) names only the id
        if (this.#ackIds.size > KEEP_ACK_IDS) this.#ackIds.delete(this.#ackIds.keys().next().value);
        connection.transmit({ action: "ack", id, conversation_id: conversationId, seq, quiet: true },
          { keepalive: this.#leaving });
        this.#inbox.acked(conversationId, seq);
      },
      onPull: () => void this.pull().catch(() => {}),
      // the settle check: one ping asking for the groups' last seqs; its pong comes through #dispatch
      onPing: () => void connection.request("ping", { groups: true }).catch(() => {}),
    });
    // while we hold a group the keepalive asks for the groups' last seqs (on long poll too, §13.8)
    connection.keepaliveFields = () => (this.#inbox.holdsGroup() ? { groups: true } : null);
    this.#outbox = new Outbox({
      transmit: (frame) => connection.transmit(frame), timers, ackTimeoutMs, maxAttempts, store: outboxStore,
      onChange: (view) => {
        this.emit("outgoing", view);
        this.#inbox.recheck(); // a gap our send explained may now need a pull
      },
    });
    this.#photos = new PhotoSender({
      ...media,
      requestUpload: (fields) => this.requestUpload(fields),
      send: (options) => this.send(options),
      onChange: (view) => this.emit("outgoing", view),
    });
    this.#typing = new Typing({ transmit: (frame) => connection.transmit(frame), timers, now, intervalMs: typingIntervalMs });
    connection.on("frame", (frame) => this.#dispatch(frame));
    connection.on("open", (opened) => this.#opened(opened));
    connection.on("state", (status) => {
      this.status = status;
      if (status.state !== "online") {
        this.#outbox.setOnline(false);
        this.#inbox.setOnline(false); // no settle check while no pull can run
      }
      this.emit("status", status);
    });
  }

  start() {
    this.connection.start();
  }

  stop() {
    this.flushAcks();
    this.connection.stop();
  }

  /** Send the pending (batched) acks now: before the page goes hidden or away (§13.5). */
  flushAcks() {
    this.#leaving = true; // on long poll the ack's request may outlive the page
    try {
      this.#inbox.flush();
    } finally {
      this.#leaving = false;
    }
  }

  // Groups (§13): see the API at the top of this file.
  createGroup(title, members = [], { id = null } = {}) {
    return this.#change("group_create", { title, members: members.map(identityOf) }, id);
  }

  addMembers(conversationId, members, role = "member", { id = null } = {}) {
    return this.#change("group_add", { conversation_id: conversationId, members: members.map(identityOf), role }, id);
  }

  removeMember(conversationId, member, { id = null } = {}) {
    return this.#change("group_remove", { conversation_id: conversationId, member: identityOf(member) }, id);
  }

  leaveGroup(conversationId, { id = null } = {}) {
    return this.#change("group_leave", { conversation_id: conversationId }, id);
  }

  renameGroup(conversationId, title, { id = null } = {}) {
    return this.#change("group_rename", { conversation_id: conversationId, title }, id);
  }

  setRole(conversationId, member, role, { id = null } = {}) {
    return this.#change("group_role", { conversation_id: conversationId, member: identityOf(member), role }, id);
  }

  groupMembers(conversationId, { cursor = null, limit = null } = {}) {
    return this.#ask("group_members", { conversation_id: conversationId, ...paging(cursor, limit) });
  }

  receipts(conversationId, seq, { cursor = null, limit = null } = {}) {
    return this.#ask("receipts", { conversation_id: conversationId, seq, ...paging(cursor, limit) });
  }

  /** A request naming a conversation: `not_member` for a group we hold drops it (removed while away). */
  async #ask(action, fields, options = {}) {
    try {
      return await this.connection.request(action, fields, options);
    } catch (error) {
      // (group_remove and group_role answer not_member for a target who is not a member: not about us)
      if (error.code === "not_member" && !TARGETS_MEMBER.has(action)) this.#groupGone(fields.conversation_id);
      throw error;
    }
  }

  /** We are no longer in this group (§13.8): drop it, never retry; the page shows it as left. */
  #groupGone(conversationId) {
    if (!isGroupId(conversationId) || this.#inbox.gone(conversationId)) return;
    this.#inbox.leave(conversationId);
    this.emit("gone", { conversation_id: conversationId, code: "not_member" });
  }

  /**
   * A group change, idempotent by its id: with no answer (lost, internal_error, the connection
   * dropped) the same frame goes again, up to maxAttempts; rate_limited waits, uncounted.
   */
  async #change(action, fields, id) {
    const request = { action, id: id ?? this.newId(), ...fields };
    const change = { request, pending: true };
    this.#changes.delete(request.id); // re-inserted last: the oldest are forgotten first
    this.#changes.set(request.id, change);
    let attempts = 0;
    try {
      for (;;) {
        attempts += 1;
        try {
          return await this.#ask(action, fields, { id: request.id, timeoutMs: this.changeTimeoutMs });
        } catch (error) {
          if (error.code === "rate_limited") {
            attempts -= 1;
            await new Promise((resolve) => this.timers.setTimeout(resolve, (error.frame?.retry_after ?? 1) * 1000));
            continue;
          }
          if (!RETRIED.has(error.code) || attempts >= this.maxAttempts) throw Object.assign(error, { id: request.id });
        }
      }
    } finally {
      change.pending = false;
      for (const old of [...this.#changes.keys()].slice(0, Math.max(0, this.#changes.size - KEEP_CHANGES))) this.#changes.delete(old);
      this.#inbox.recheck(); // a gap this change explained may now need a pull
    }
  }

  #changesInFlight(conversationId) {
    let count = 0;
    for (const { request, pending } of this.#changes.values()) {
      // a group_create's event is seq 1 of a new group: it fills no gap anywhere
      if (pending && request.conversation_id === conversationId) count += 1;
    }
    return count;
  }

  /** `group` / `group_changed`: our change's event fills its seq, as `sent` fills a message's. */
  #changed(answer) {
    const message = ownEventMessage(answer, this.#changes.get(answer.ref)?.request ?? null, this.me);
    if (message) this.#receive(message, { fromPull: false, own: true });
  }

  /** Queue a message; returns its view at once (then "outgoing" events follow). With `image`
   * (an uploaded photo, §14.1) the text is an optional caption. */
  send({ text = "", to = null, conversationId = null, id = null, image = null }) {
    if (image && !/\S/u.test(text ?? "")) text = "";
    else assertSendable(text);
    const frame = { action: "send", id: id ?? this.newId(), text };
    if (image) frame.image = image;
    if (conversationId) {
      frame.conversation_id = conversationId;
      const have = this.#inbox.have(conversationId);
      if (have) frame.last_seq = have; // a hint; the server decides
    } else {
      frame.to = { kind: to.kind, id: to.id };
    }
    return this.#outbox.add(frame);
  }

  resend(id) {
    return this.#photos.has(id) ? this.#photos.retry(id) : this.#outbox.resend(id);
  }

  /** A photo: scaled, uploaded, then sent under one id; the view at once (§14.1). */
  sendImage({ file, text = "", to = null, conversationId = null, id = null }) {
    return this.#photos.start({ id: id ?? this.newId(), file, text, to, conversationId });
  }

  /** An upload slot: {upload_id, url, fields, max_bytes, expires_at}. */
  requestUpload({ content_type: contentType, size }) {
    return this.connection.request("upload", { content_type: contentType, size });
  }

  /** A fresh signed URL of a photo message (the one in the message expired, or failed to load). */
  async mediaUrl(conversationId, seq) {
    const answer = await this.#ask("media_url", { conversation_id: conversationId, seq });
    return { url: answer.url, url_expires: answer.url_expires };
  }

  /** The user is typing in this conversation: one frame per 3 s at most; true if it went. */
  typing(conversationId) {
    return this.#typing.typed(conversationId);
  }

  /** Read (no argument) or change the read-receipts setting; every tab hears "settings". */
  async settings({ read_receipts: readReceipts } = {}) {
    const fields = readReceipts === undefined ? {} : { read_receipts: Boolean(readReceipts) };
    const answer = await this.connection.request("settings", fields);
    const settings = { read_receipts: answer.read_receipts !== false };
    this.emit("settings", settings);
    return settings;
  }

  /** Messages not yet stored (sending, uploading) or failed: to show after a reload. */
  unsettled() {
    return [...this.#photos.unsettled(), ...this.#outbox.unsettled()];
  }

  /** One page of the conversation list, newest first; pass `cursor` from the last page for the next. */
  async conversations({ cursor = null, limit = null } = {}) {
    const fields = {};
    if (cursor !== null) fields.cursor = cursor;
    if (limit !== null) fields.limit = limit;
    const answer = await this.connection.request("conversations", fields);
    for (const entry of answer.conversations) if (entry.group) this.#inbox.member(entry.conversation_id); // the keepalive checks its tail
    return { conversations: answer.conversations, more: Boolean(answer.more), cursor: answer.cursor ?? null };
  }

  async history(conversationId, { before = null, limit = 30 } = {}) {
    const fields = { conversation_id: conversationId, limit };
    if (before !== null) fields.before = before;
    const answer = await this.#ask("history", fields);
    return { messages: answer.messages, more: answer.more };
  }

  /** Move the read mark (unread counts); every tab hears "read". */
  async markRead(conversationId, seq) {
    const answer = await this.#ask("read", { conversation_id: conversationId, seq });
    this.emit("read", { conversation_id: conversationId, seq: answer.seq });
    return answer.seq;
  }

  /** Online state of up to 100 identities, pulled over REST (docs/presence.md). */
  async presence(identities) {
    if (!this.api || identities.length === 0) return [];
    const token = await this.session.token();
    const answer = await this.api.call("POST", "/presence", { token, body: { identities: identities.slice(0, 100) } });
    return answer.presence;
  }

  /** The offline pull, page by page; one at a time (a call during one runs another after it). */
  pull() {
    if (this.#pulling) {
      this.#pullAgain = true;
      return this.#pulling;
    }
    this.#pulling = (async () => {
      try {
        do {
          this.#pullAgain = false;
          await this.#pullAll();
        } while (this.#pullAgain);
      } finally {
        this.#pulling = null;
      }
    })();
    return this.#pulling;
  }

  async #pullAll() {
    let limit = this.syncLimit;
    let more = true;
    while (more) {
      more = false;
      // `since` only where the server's acked cursor is behind us, at most 100 per sync
      const chunks = this.#inbox.since();
      for (const since of chunks.length ? chunks : [{}]) {
        let page;
        try {
          page = await this.connection.request("sync", { since, limit });
        } catch (error) {
          if (error.code !== "timeout") return; // offline: the next connect pulls again
          limit = Math.max(10, Math.floor(limit / 2)); // an answer too big for one frame never arrives
          more = true;
          break;
        }
        for (const message of page.messages) this.#receive(message, { fromPull: true });
        more ||= page.more;
      }
    }
    this.#inbox.pulled();
  }

  #opened({ identity }) {
    const changed = !sameIdentity(identity, this.me);
    this.me = identity;
    if (changed) this.emit("identity", identity);
    this.#outbox.setOnline(true); // pending sends again, same frames
    this.#inbox.setOnline(true); // the settle check runs again
    this.pull().catch(() => {});
  }

  #dispatch(frame) {
    switch (frame.type) {
      case "sent": return this.#accepted(frame);
      case "message": return this.#receive(frame, { fromPull: false });
      case "delivered":
        this.#outbox.delivered(frame.conversation_id, frame.seq);
        return this.emit("delivered", { conversation_id: frame.conversation_id, seq: frame.seq, by: frame.by });
      case "presence": return this.emit("presence", frame);
      case "typing": return this.emit("typing", { conversation_id: frame.conversation_id, from: frame.from });
      case "seen":
        this.#outbox.seen(frame.conversation_id, frame.seq);
        return this.emit("seen", { conversation_id: frame.conversation_id, seq: frame.seq, by: frame.by });
      case "resync": return void this.pull().catch(() => {}); // the mailbox overflowed: the store has it all
      case "acked": return this.#inbox.acked(frame.conversation_id, frame.seq);
      case "group": case "group_changed": return this.#changed(frame);
      case "pong": return void this.#inbox.tails(frame.groups); // §13.8: a group past what we have is pulled
      case "error": return this.#refused(frame);
      default: return undefined; // answers to requests, and types added later (§1)
    }
  }

  /**
   * An error frame not answering a request: a send's (final, except internal_error, rate_limited
   * and connection_gone, which the connection answers by reconnecting at once), or an ack's.
   * `not_member` for a group we hold: we were removed while away, the group is dropped.
   */
  #refused(frame) {
    let conversationId = this.#ackIds.get(frame.ref) ?? null;
    this.#ackIds.delete(frame.ref);
    const view = this.#outbox.rejected(frame.ref, frame);
    if (view) conversationId = view.conversation_id;
    if (frame.code === "not_member") this.#groupGone(conversationId);
  }

  #accepted(sent) {
    const view = this.#outbox.accepted(sent);
    if (!view) return; // a second msg:A for a send we repeated
    // Our own message is part of the conversation: it fills its seq.
    this.#receive({
      type: "message", conversation_id: sent.conversation_id, seq: sent.seq, from: this.me, text: view.text,
      time: sent.time, client_id: view.id, ...(view.image ? { image: view.image } : {}),
    }, { fromPull: false, own: true });
  }

  #receive(message, { fromPull, own = false }) {
    // A copy of our own message (pulled, or pushed to our other device) is its `sent` too: a
    // message whose `sent` was lost, or that was shown failed, was stored after all.
    if (!own && sameIdentity(message.from, this.me) && this.#outbox.has(message.client_id)) {
      this.#outbox.accepted({ ref: message.client_id, conversation_id: message.conversation_id, seq: message.seq, time: message.time });
    }
    this.#inbox.receive(message, { fromPull, own });
  }

  #show(message) {
    this.emit("message", { ...message, own: sameIdentity(message.from, this.me) });
  }
}
