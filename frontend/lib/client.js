// The chat client: the protocol logic the page and the widget share (docs/protocol.md §9, §11,
// §13). Every frame goes to its protocol core (core.js, the mirror of webim_client/core.py;
// the shared scenarios drive both); this class does the I/O around it. Its public calls match
// the Python SDK's (docs/client.md's table, checked by tests/test_client_surface.py). It sends
// through the ack queue (outbox.js), receives in order and once (inbox.js), acks cumulatively
// (in groups batched: at most every groupAckMs, at least every groupAckMessages), pulls what it
// missed on every (re)connect and on every gap, and reports to the UI as events:
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
// The API (ChatClient here; SharedClient in tabs.js has the same calls, from any tab; there
// unsettled() and typingNow() answer with a promise, the leader tab's client having the state):
//   send({text, to | conversationId, id?}) -> outbox view at once; a group: conversationId only
//   resend(id), unsettled(), conversations({cursor, limit}), history(id, {before, limit}),
//   markRead(id, seq), presence(identities), pull(), refreshDelivered() (the list's receipt
//   cursors applied to our messages), request(action, fields, {id, timeoutMs}?) (any request)
//   Photos, typing, seen (§14): sendImage({file, text?, to | conversationId, id?}) -> view at
//   once ("uploading" with `progress`, then as send); resend(id) also retries a failed upload
//   (same id); mediaUrl(conversationId, seq) -> {url, url_expires}; typing(conversationId) (at
//   most one per 3 s per conversation); typingNow(conversationId) -> who is shown typing there;
//   settings({read_receipts}?) -> {read_receipts};
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

import { ONLINE } from "./connection.js";
import { ClientCore } from "./core.js";
import { Emitter } from "./emitter.js";
import { idFactory, sameIdentity } from "./ids.js";
import { GROUP_CHANGES } from "./groups.js";
import { PhotoSender } from "./photos.js";
import { assertSendable } from "./text.js";

// outcome unknown, or (connection_gone) nothing done: the connection reconnects at once
// refusals that say nothing about the request itself: the same request may go through later
const PASSING = new Set(["internal_error", "rate_limited"]);
const PULLED = "pulled", REFUSED = "refused", OFFLINE = "offline";
const RETRIED = new Set(["timeout", "internal_error", "disconnected", "offline", "connection_gone"]);
const TARGETS_MEMBER = new Set(["group_remove", "group_role"]); // their not_member may be about the target

/**
 * @typedef {import("./transports.js").Frame} Frame
 * @typedef {import("./ids.js").Identity} Identity
 * @typedef {{id?: string | null}} ChangeOptions a group change's id (its idempotency key, kept across retries)
 * @typedef {{cursor?: string | null, limit?: number | null}} Paging one page of a list: the last page's cursor
 */
/**
 * What the client needs of its connection (connection.js; the tests give a fake one).
 * @typedef {Pick<import("./connection.js").Connection, "start" | "stop" | "transmit" | "request" | "on" | "keepaliveFields"> & Partial<Pick<import("./connection.js").Connection, "state" | "backoffMs">>} ConnectionLike
 */
/**
 * A message to send: to a peer (`to`) or into a conversation (`conversationId`; a group: this only).
 * @typedef {object} SendOptions
 * @property {string} [text] @property {Identity | null} [to] @property {string | null} [conversationId]
 * @property {string | null} [id] the idempotency key (a fresh one if none)
 * @property {object | null} [image] an uploaded photo (§14.1): then the text is an optional caption
 * @property {string | null} [local] a photo's local object URL (for SharedClient's own view; not sent)
 */
/**
 * The ChatClient's parts and settings: the connection; api and session for the presence REST call
 * (without them presence() answers []); outboxStore keeps unsent messages across reloads (none:
 * kept in memory only); media: PhotoSender's browser parts (tests); the rest are the protocol's
 * timings (the core's, core.js), ids and the pull's page size.
 * @typedef {object} ClientOptions
 * @property {ConnectionLike} connection
 * @property {Pick<import("./http.js").Api, "call"> | null} [api]
 * @property {Pick<import("./auth.js").Session, "token"> | null} [session]
 * @property {import("./transports.js").Timers} [timers]
 * @property {import("./outbox.js").OutboxStore | null} [outboxStore]
 * @property {Partial<import("./photos.js").PhotoSenderOptions>} [media]
 * @property {() => number} [now] @property {number} [typingIntervalMs] @property {number} [ackDelayMs]
 * @property {number} [gapGraceMs] @property {number} [syncLimit] @property {() => string} [newId]
 * @property {number} [ackTimeoutMs] @property {number} [maxAttempts] @property {number} [groupAckMs]
 * @property {number} [groupAckMessages] @property {number} [changeTimeoutMs] @property {number} [settleCheckMs]
 */

/** @param {Identity} value @returns {Identity} */
function identityOf(value) {
  return { kind: value.kind, id: value.id };
}

/** @param {string | null | undefined} cursor @param {number | null | undefined} limit */
function paging(cursor, limit) {
  /** @type {{cursor?: string, limit?: number}} */
  const fields = {};
  if (cursor !== null && cursor !== undefined) fields.cursor = cursor;
  if (limit !== null && limit !== undefined) fields.limit = limit;
  return fields;
}

export { GROUP_CHANGES };

export class ChatClient extends Emitter {
  /** @type {Identity | null} */
  me = null;
  /** @type {{state: string, transport: string | null}} */
  status = { state: "offline", transport: null };
  /** @type {ClientCore} every frame in, and every protocol decision (core.js) */
  #core;
  /** @type {Promise<void> | null} */
  #pulling = null;
  #pullAgain = false;
  #leaving = false;
  /** @type {PhotoSender} */
  #photos;

  /** @param {ClientOptions} options */
  constructor({ connection, api = null, session = null, timers = globalThis, outboxStore = null, media = {},
    now = () => Date.now(), typingIntervalMs = 3000,
    ackDelayMs = 20, gapGraceMs = 1000, syncLimit = 100, newId = idFactory(), ackTimeoutMs = 3000, maxAttempts = 4,
    groupAckMs = 2000, groupAckMessages = 20, changeTimeoutMs = 10_000, settleCheckMs = 3000 }) {
    super();
    this.connection = connection;
    this.api = api;
    this.session = session;
    this.timers = timers;
    this.syncLimit = syncLimit;
    this.newId = newId;
    this.maxAttempts = maxAttempts;
    this.changeTimeoutMs = changeTimeoutMs;
    this.#core = new ClientCore({
      timers, now, store: outboxStore, newId: () => this.newId(),
      settings: { ackTimeoutMs, maxAttempts, ackDelayMs, gapGraceMs, groupAckMs, groupAckMessages, settleCheckMs, typingIntervalMs },
      // on long poll an ack's request may outlive the page (flushAcks as it goes)
      transmit: (/** @type {object} */ frame) => connection.transmit(frame, { keepalive: this.#leaving }),
      emit: (/** @type {string} */ event, /** @type {any} */ data) => this.#heard(event, data),
    });
    // while we hold a group the keepalive asks for the groups' last seqs (on long poll too, §13.8)
    connection.keepaliveFields = () => (this.#core.inbox.holdsGroup() ? { groups: true } : null);
    this.#photos = new PhotoSender({
      ...media,
      requestUpload: (fields) => this.requestUpload(fields),
      send: (options) => this.send(options),
      onChange: (view) => this.emit("outgoing", view),
    });
    connection.on("frame", (frame) => this.#core.dispatch(frame));
    connection.on("open", (opened) => this.#opened(opened));
    connection.on("state", (status) => {
      this.status = status;
      if (status.state !== "online") this.#core.setOnline(false); // the clocks stop; no settle check while no pull can run
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
      this.#core.inbox.flush();
    } finally {
      this.#leaving = false;
    }
  }

  // Groups (§13): see the API at the top of this file.
  /** @param {string} title @param {Identity[]} [members] @param {ChangeOptions} [options] */
  createGroup(title, members = [], { id = null } = {}) {
    return this.#change("group_create", { title, members: members.map(identityOf) }, id);
  }

  /** @param {string} conversationId @param {Identity[]} members @param {string} [role] @param {ChangeOptions} [options] */
  addMembers(conversationId, members, role = "member", { id = null } = {}) {
    return this.#change("group_add", { conversation_id: conversationId, members: members.map(identityOf), role }, id);
  }

  /** @param {string} conversationId @param {Identity} member @param {ChangeOptions} [options] */
  removeMember(conversationId, member, { id = null } = {}) {
    return this.#change("group_remove", { conversation_id: conversationId, member: identityOf(member) }, id);
  }

  /** @param {string} conversationId @param {ChangeOptions} [options] */
  async leaveGroup(conversationId, { id = null } = {}) {
    const answer = await this.#change("group_leave", { conversation_id: conversationId }, id);
    this.#core.left(conversationId); // no acks or pulls for it any more (its `left` filled its seq)
    return answer;
  }

  /** @param {string} conversationId @param {string} title @param {ChangeOptions} [options] */
  renameGroup(conversationId, title, { id = null } = {}) {
    return this.#change("group_rename", { conversation_id: conversationId, title }, id);
  }

  /** @param {string} conversationId @param {Identity} member @param {string} role @param {ChangeOptions} [options] */
  setRole(conversationId, member, role, { id = null } = {}) {
    return this.#change("group_role", { conversation_id: conversationId, member: identityOf(member), role }, id);
  }

  /** @param {string} conversationId @param {Paging} [options] */
  groupMembers(conversationId, { cursor = null, limit = null } = {}) {
    return this.#ask("group_members", { conversation_id: conversationId, ...paging(cursor, limit) });
  }

  /** @param {string} conversationId @param {number} seq @param {Paging} [options] */
  receipts(conversationId, seq, { cursor = null, limit = null } = {}) {
    return this.#ask("receipts", { conversation_id: conversationId, seq, ...paging(cursor, limit) });
  }

  /**
   * A request naming a conversation: `not_member` for a group we hold drops it (removed while away).
   * @param {string} action @param {Record<string, any>} fields
   * @param {{id?: string | null, timeoutMs?: number}} [options] @returns {Promise<Frame>}
   */
  async #ask(action, fields, options = {}) {
    try {
      return await this.connection.request(action, fields, options);
    } catch (error) {
      // (group_remove and group_role answer not_member for a target who is not a member: not about us)
      if (error.code === "not_member" && !TARGETS_MEMBER.has(action)) this.#core.groupGone(fields.conversation_id);
      throw error;
    }
  }

  /**
   * Any request, answered by its `ref` (an error frame rejects with its `code`); one naming a
   * group we no longer hold (`not_member`) drops the group.
   * @param {string} action
   * @param {Record<string, any>} [fields]
   * @param {{id?: string | null, timeoutMs?: number}} [options]
   * @returns {Promise<Frame>}
   */
  request(action, fields = {}, options = {}) {
    return this.#ask(action, fields, options);
  }

  /**
   * A group change, idempotent by its id: with no answer (lost, internal_error, the connection
   * dropped) the same frame goes again, up to maxAttempts; rate_limited waits, uncounted.
   * @param {string} action @param {Record<string, any>} fields @param {string | null} id @returns {Promise<Frame>}
   */
  async #change(action, fields, id) {
    const request = { action, id: id ?? this.newId(), ...fields };
    this.#core.changeStarted(request);
    let attempts = 0;
    try {
      for (;;) {
        attempts += 1;
        try {
          return await this.#ask(action, fields, { id: request.id, timeoutMs: this.changeTimeoutMs });
        } catch (error) {
          if (error.code === "rate_limited") {
            attempts -= 1;
            await new Promise((resolve) => this.timers.setTimeout(() => resolve(undefined), (error.frame?.retry_after ?? 1) * 1000));
            continue;
          }
          if (!RETRIED.has(error.code) || attempts >= this.maxAttempts) throw Object.assign(error, { id: request.id });
        }
      }
    } finally {
      this.#core.changeEnded(request.id); // a gap this change explained may now need a pull
    }
  }

  /** Queue a message; returns its view at once (then "outgoing" events follow). With `image`
   * (an uploaded photo, §14.1) the text is an optional caption. @param {SendOptions} message */
  send({ text = "", to = null, conversationId = null, id = null, image = null }) {
    if (image && !/\S/u.test(text ?? "")) text = "";
    else assertSendable(text);
    /** @type {Frame} */
    const frame = { action: "send", id: id ?? this.newId(), text };
    if (image) frame.image = image;
    if (conversationId) frame.conversation_id = conversationId;
    else if (to) frame.to = { kind: to.kind, id: to.id };
    else throw new TypeError("send: `to` or `conversationId` is needed");
    return this.#core.send(frame); // with the `last_seq` hint
  }

  /** @param {string} id */
  resend(id) {
    return this.#photos.has(id) ? this.#photos.retry(id) : this.#core.outbox.resend(id);
  }

  /**
   * A photo: scaled, uploaded, then sent under one id; the view at once (§14.1).
   * @param {{file: Blob, text?: string, to?: Identity | null, conversationId?: string | null, id?: string | null}} photo
   */
  sendImage({ file, text = "", to = null, conversationId = null, id = null }) {
    return this.#photos.start({ id: id ?? this.newId(), file, text, to, conversationId });
  }

  /**
   * An upload slot: {upload_id, url, fields, max_bytes, expires_at}.
   * @param {{content_type: string, size: number}} request @returns {Promise<import("./media.js").UploadSlot>}
   */
  requestUpload({ content_type: contentType, size }) {
    const answer = this.connection.request("upload", { content_type: contentType, size });
    return /** @type {Promise<import("./media.js").UploadSlot>} */ (answer); // the `upload` frame's answer (§14.1)
  }

  /** A fresh signed URL of a photo message (the one in the message expired, or failed to load). @param {string} conversationId @param {number} seq */
  async mediaUrl(conversationId, seq) {
    const answer = await this.#ask("media_url", { conversation_id: conversationId, seq });
    return { url: answer.url, url_expires: answer.url_expires };
  }

  /** The user is typing in this conversation: one frame per 3 s at most; true if it went. @param {string} conversationId */
  typing(conversationId) {
    return this.#core.typing.typed(conversationId);
  }

  /**
   * Who is shown typing in this conversation now (§14.2: 6 s after their last `typing`, or
   * until their message), in the order they started; never ourselves.
   * @param {string} conversationId
   * @returns {{kind: string, id: string}[]}
   */
  typingNow(conversationId) {
    return this.#core.typing.who(conversationId);
  }

  /**
   * Read (no argument) or change the read-receipts setting; every tab hears "settings".
   * @param {{read_receipts?: boolean}} [options] @returns {Promise<{read_receipts: boolean}>}
   */
  async settings({ read_receipts: readReceipts } = {}) {
    const fields = readReceipts === undefined ? {} : { read_receipts: Boolean(readReceipts) };
    const answer = await this.connection.request("settings", fields);
    const settings = { read_receipts: answer.read_receipts !== false };
    this.emit("settings", settings);
    return settings;
  }

  /**
   * Block the peer of a 1:1 conversation (§15): its sends to us are refused and no presence,
   * typing, delivered or seen passes either way until `unblock`. Idempotent; every tab hears
   * "blocked" ({conversation_id, blocked: true}).
   * @param {string} conversationId @returns {Promise<Frame>}
   */
  async block(conversationId) {
    return this.#blocking("block", conversationId);
  }

  /**
   * Undo `block` (idempotent); every tab hears "blocked" ({conversation_id, blocked: false}).
   * @param {string} conversationId @returns {Promise<Frame>}
   */
  async unblock(conversationId) {
    return this.#blocking("unblock", conversationId);
  }

  /**
   * Report message `seq` of a conversation, or the whole conversation (no `seq`), to the site's
   * operator (§17): reason "spam" | "abuse" | "scam" | "other", an optional note (at most 1,000
   * characters). The server keeps a copy of the message and those around it. Idempotent by its
   * id: with no answer the same frame goes again (up to maxAttempts), so it is one report;
   * rate_limited is final (too many reports). Resolves to {type: "reported", report_id, ...}.
   * @param {string} conversationId @param {string} reason
   * @param {{seq?: number | null, note?: string | null, id?: string | null}} [options] @returns {Promise<Frame>}
   */
  async report(conversationId, reason, { seq = null, note = null, id = null } = {}) {
    /** @type {Record<string, unknown>} */
    const fields = { conversation_id: conversationId, reason };
    if (seq !== null) fields.seq = seq;
    if (note) fields.note = note;
    const frameId = id ?? this.newId();
    for (let attempts = 1; ; attempts += 1) {
      try {
        return await this.#ask("report", fields, { id: frameId, timeoutMs: this.changeTimeoutMs });
      } catch (error) {
        if (error.code === "rate_limited" || !RETRIED.has(error.code) || attempts >= this.maxAttempts) throw error;
      }
    }
  }

  /**
   * Delete message `seq` for everyone (§16): our own within the server's window (48 h by default),
   * or any message of a group we own or admin. Idempotent: with no answer (lost, internal_error,
   * the connection dropped) the same frame goes again, up to maxAttempts, and a repeat is answered
   * the same. Resolves to {type: "deleted", conversation_id, seq, tombstone_seq, time}; the
   * tombstone event fills its seq as `sent` does and "message_deleted" is heard as for anyone's.
   * Refusals (final): message_not_found, not_your_message, delete_window_passed, not_deletable,
   * not_member, blocked, recipient_unavailable.
   * @param {string} conversationId @param {number} seq @returns {Promise<Frame>}
   */
  async deleteMessage(conversationId, seq) {
    const fields = { conversation_id: conversationId, seq };
    const id = this.newId();
    for (let attempts = 1; ; attempts += 1) {
      try {
        return await this.#ask("delete", fields, { id, timeoutMs: this.changeTimeoutMs });
      } catch (error) {
        if (error.code === "rate_limited") {
          attempts -= 1;
          await new Promise((resolve) => this.timers.setTimeout(() => resolve(undefined), (error.frame?.retry_after ?? 1) * 1000));
          continue;
        }
        if (!RETRIED.has(error.code) || attempts >= this.maxAttempts) throw error;
      }
    }
  }

  /** @param {"block" | "unblock"} action @param {string} conversationId @returns {Promise<Frame>} */
  async #blocking(action, conversationId) {
    const answer = await this.connection.request(action, { conversation_id: conversationId });
    this.emit("blocked", { conversation_id: conversationId, blocked: action === "block" });
    return answer;
  }

  /** Messages not yet stored (sending, uploading) or failed: to show after a reload. */
  unsettled() {
    return [...this.#photos.unsettled(), ...this.#core.outbox.unsettled()];
  }

  /**
   * One page of the conversation list, newest first; pass `cursor` from the last page for the next.
   * @param {Paging & {hideBlocked?: boolean}} [options] @returns {Promise<{conversations: Frame[], more: boolean, cursor: string | null}>}
   */
  async conversations({ cursor = null, limit = null, hideBlocked = false } = {}) {
    /** @type {Paging & {hide_blocked?: boolean}} */
    const fields = {};
    if (cursor !== null) fields.cursor = cursor;
    if (limit !== null) fields.limit = limit;
    if (hideBlocked) fields.hide_blocked = true; // leave out the peers we blocked (§15)
    const answer = await this.connection.request("conversations", fields);
    for (const entry of answer.conversations) if (entry.group) this.#core.inbox.member(entry.conversation_id); // the keepalive checks its tail
    return { conversations: answer.conversations, more: Boolean(answer.more), cursor: answer.cursor ?? null };
  }

  /**
   * One page of a conversation's messages, newest first; `before`: the lowest seq shown so far.
   * @param {string} conversationId @param {{before?: number | null, limit?: number}} [options]
   * @returns {Promise<{messages: Frame[], more: boolean}>}
   */
  async history(conversationId, { before = null, limit = 30 } = {}) {
    /** @type {{conversation_id: string, limit: number, before?: number}} */
    const fields = { conversation_id: conversationId, limit };
    if (before !== null) fields.before = before;
    const answer = await this.#ask("history", fields);
    return { messages: answer.messages, more: answer.more };
  }

  /**
   * `delivered` and `seen` are pushed once and may be lost (§9h, §14.3): the conversation list
   * keeps the peer's acked and read cursors (`peer_acked_seq`, `peer_read_seq`); apply them to our
   * messages ("outgoing" events follow). Call it when a receipt seems overdue.
   * @returns {Promise<void>}
   */
  async refreshDelivered() {
    let cursor = null;
    for (;;) {
      const page = await this.conversations({ cursor });
      for (const entry of page.conversations) {
        if (entry.peer_acked_seq) this.#core.outbox.delivered(entry.conversation_id, entry.peer_acked_seq);
        if (entry.peer_read_seq) this.#core.outbox.seen(entry.conversation_id, entry.peer_read_seq);
      }
      cursor = page.cursor;
      if (!page.more || !cursor) return;
    }
  }

  /** Move the read mark (unread counts); every tab hears "read". @param {string} conversationId @param {number} seq */
  async markRead(conversationId, seq) {
    const answer = await this.#ask("read", { conversation_id: conversationId, seq });
    this.emit("read", { conversation_id: conversationId, seq: answer.seq });
    return answer.seq;
  }

  /**
   * Online state of up to 100 identities, pulled over REST (docs/presence.md).
   * @param {Identity[]} identities @returns {Promise<Frame[]>}
   */
  async presence(identities) {
    if (!this.api || !this.session || identities.length === 0) return [];
    const token = await this.session.token();
    const answer = await this.api.call("POST", "/presence", { token, body: { identities: identities.slice(0, 100) } });
    return answer.presence;
  }

  /**
   * The offline pull, page by page; one at a time (a call during one runs another after it).
   * @returns {Promise<void>}
   */
  pull() {
    if (this.#pulling) {
      this.#pullAgain = true;
      return this.#pulling;
    }
    const pulling = (async () => {
      let delay = this.connection.backoffMs?.[0] ?? 1000;
      try {
        do {
          this.#pullAgain = false;
          const outcome = await this.#pullAll();
          if (outcome === REFUSED && this.connection.state === ONLINE) {
            // refused while the line stays up (internal_error, rate_limited): nothing else would
            // ask again (a group has no retransmission), so we do, backing off
            await new Promise((resolve) => this.timers.setTimeout(() => resolve(undefined), delay));
            delay = Math.min(delay * 2, this.connection.backoffMs?.[1] ?? 30_000);
            this.#pullAgain = true;
          }
        } while (this.#pullAgain);
      } finally {
        this.#pulling = null;
      }
    })();
    this.#pulling = pulling;
    return pulling;
  }

  /** One complete pull. @returns {Promise<string>} PULLED, REFUSED (internal_error, rate_limited:
   * asked again) or OFFLINE (the next connect pulls again) */
  async #pullAll() {
    let limit = this.syncLimit;
    let more = true;
    while (more) {
      more = false;
      // `since` only where the server's acked cursor is behind us, at most 100 per sync
      const chunks = this.#core.inbox.since();
      for (const since of chunks.length ? chunks : [{}]) {
        let page;
        try {
          page = await this.connection.request("sync", { since, limit });
        } catch (error) {
          if (PASSING.has(error.code)) return REFUSED; // pull() asks again
          if (error.code !== "timeout") return OFFLINE; // the next connect pulls again
          limit = Math.max(10, Math.floor(limit / 2)); // an answer too big for one frame never arrives
          more = true;
          break;
        }
        for (const message of page.messages) this.#core.receive(message, { fromPull: true });
        more ||= page.more;
      }
    }
    this.#core.pulled();
    return PULLED;
  }

  /** @param {{identity: Identity | null}} opened */
  #opened({ identity }) {
    const changed = !sameIdentity(identity, this.me);
    this.me = identity;
    this.#core.setIdentity(identity);
    if (changed) this.emit("identity", identity);
    this.#core.setOnline(true); // pending sends again, same frames; the settle check runs again
    this.pull().catch(() => {});
  }

  /**
   * An event of the core (core.js): to the page's events, or a pull, or a ping.
   * @param {string} event
   * @param {any} data
   */
  #heard(event, data) {
    switch (event) {
      case "message": return this.emit("message", { ...data, own: sameIdentity(data.from, this.me) });
      case "pull": return void this.pull().catch(() => {});
      // the settle check: one ping asking for the groups' last seqs; its pong comes back through the core
      case "ping": return void this.connection.request("ping", { groups: true }).catch(() => {});
      case "connection_gone": case "typing_changed": return undefined; // the connection reconnects itself; typingNow()
      case "banned": // an operator banned us (docs/operator.md): every new line is refused, so stop knocking
        this.connection.stop();
        return this.emit("banned", data);
      default: return this.emit(event, data); // outgoing, delivered, seen, presence, typing, gone
    }
  }
}
