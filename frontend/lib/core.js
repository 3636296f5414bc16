// The client's protocol core, no I/O: every frame the server sends goes through dispatch(), and
// every protocol decision the client makes (what to ack, when to pull, what a refusal means, what
// our own group change's answer fills) is taken here, over the pure modules inbox.js, outbox.js
// and typing.js. ChatClient (client.js) owns one and does only the I/O around it: the
// connection, requests, the pull's pages, photos.
//
// The I/O is injected: transmit(frame) -> boolean hands a frame to the connection (false: not
// connected), newId() names our ack frames, timers run the clocks, and emit(event, data) tells the
// client what happened. frontend/tests/scenarios.test.mjs drives this very object over a fake
// transmit and a fake clock, as tests/test_client_scenarios.py drives webim_client/core.py, its
// Python mirror: the shared scenarios in tests/client_scenarios/ test the clients' own dispatch.
//
// Events (emit(name, data)), the same names as the Python core's:
//   "message"   a message frame (our own included), in seq order, once
//   "outgoing"  an outbox view: a message we send changed state
//   "delivered", "seen"  {conversation_id, seq, by}: receipts (applied to the outbox already)
//   "presence"  the presence frame
//   "typing"    {conversation_id, from}: a `typing` frame
//   "typing_changed"  {conversation_id, typing: [identity]}: who is shown typing there changed
//   "gone"      {conversation_id, code}: a group we held refused a frame naming it (`not_member`)
//   "pull"      a pull is needed (a gap, a `resync`)
//   "ping"      the settle check wants a `ping` with `groups: true` (§13.8)
//   "connection_gone"  the server forgot this connection (the connection reconnects at once, §11)
//   "message_deleted"  {conversation_id, seq, by, tombstone_seq}: message `seq` was deleted for
//               everyone (§16): show it as "message deleted" (its `deleted` event, shown in order)

import { ownEventMessage } from "./groups.js";
import { sameIdentity } from "./ids.js";
import { Inbox, isGroupId } from "./inbox.js";
import { Outbox } from "./outbox.js";
import { Typing } from "./typing.js";

const KEEP_ACK_IDS = 500; // recent ack ids remembered for a refusal naming only the id
const KEEP_CHANGES = 200; // group changes remembered for a late answer
const KEEP_DELETED = 2000; // (conversation, seq) known deleted (§16): a late copy of one shows no text

/**
 * The `deleted` event a message carries (§16), if it is one.
 * @param {Frame} message @returns {{type: "deleted", seq: number, by?: Identity} | null}
 */
export function deletedEventOf(message) {
  const event = message.event;
  return event && event.type === "deleted" && Number.isInteger(event.seq) ? event : null;
}

/**
 * A message as deleted for everyone: no text, no photo, `deleted: true` (§16).
 * @param {Frame} message @returns {Frame}
 */
export function tombstone(message) {
  const { image: _image, ...rest } = message;
  return { ...rest, text: "", deleted: true };
}

/**
 * @typedef {import("./transports.js").Frame} Frame
 * @typedef {import("./transports.js").Timers} Timers
 * @typedef {import("./ids.js").Identity} Identity
 * @typedef {{ackTimeoutMs?: number, maxAttempts?: number, ackDelayMs?: number, gapGraceMs?: number,
 *   groupAckMs?: number, groupAckMessages?: number, settleCheckMs?: number, typingIntervalMs?: number}} CoreSettings
 */

export class ClientCore {
  /** @type {Identity | null} */
  me = null;
  online = false;
  /** @type {Map<string, string>} our recent ack ids -> conversation (a refusal names only the id) */
  #ackIds = new Map();
  /** @type {Map<string, {request: Frame, pending: boolean}>} our group changes by id */
  #changes = new Map();
  /** @type {Record<string, (frame: Frame) => void>} */
  #handlers;
  /** @type {Set<string>} "conversation/seq" known deleted, oldest first (§16) */
  #deleted = new Set();

  /**
   * @param {{timers?: Timers, transmit: (frame: Frame) => boolean, newId: () => string,
   *   emit: (event: string, data: any) => void, now?: () => number, store?: any, settings?: CoreSettings}} options
   */
  constructor({ timers = globalThis, transmit, newId, emit, now = () => Date.now(), store = null, settings = {} }) {
    const { ackTimeoutMs = 3000, maxAttempts = 4, ackDelayMs = 20, gapGraceMs = 1000, groupAckMs = 2000,
      groupAckMessages = 20, settleCheckMs = 3000, typingIntervalMs = 3000 } = settings;
    /** hands a frame to the connection: false when not connected */
    this.transmit = transmit;
    /** names our ack frames */
    this.newId = newId;
    /** tells the client what happened */
    this.emit = emit;
    this.outbox = new Outbox({
      transmit, timers, ackTimeoutMs, maxAttempts, store,
      onChange: (/** @type {Frame} */ view) => {
        emit("outgoing", view);
        this.inbox.recheck(); // a gap our send explained may now need a pull
      },
    });
    this.inbox = new Inbox({
      timers, ackDelayMs, gapGraceMs, groupAckMs, groupAckMessages, settleCheckMs,
      me: () => this.me,
      inFlight: (/** @type {string} */ conversationId) => this.#inFlight(conversationId),
      onShow: (/** @type {Frame} */ message) => this.#show(message),
      onAck: (/** @type {string} */ conversationId, /** @type {number} */ seq) => this.#ack(conversationId, seq),
      onPull: () => emit("pull", null),
      onPing: () => emit("ping", null),
    });
    this.typing = new Typing({
      transmit, timers, now, intervalMs: typingIntervalMs, me: () => this.me,
      onChange: (/** @type {string} */ conversationId) => emit("typing_changed",
        { conversation_id: conversationId, typing: this.typing.who(conversationId) }),
    });
    this.#handlers = {
      sent: (frame) => this.#accepted(frame),
      message: (frame) => this.receive(frame),
      delivered: (frame) => {
        this.outbox.delivered(frame.conversation_id, frame.seq);
        emit("delivered", { conversation_id: frame.conversation_id, seq: frame.seq, by: frame.by });
      },
      seen: (frame) => {
        this.outbox.seen(frame.conversation_id, frame.seq);
        emit("seen", { conversation_id: frame.conversation_id, seq: frame.seq, by: frame.by });
      },
      typing: (frame) => {
        this.typing.received(frame);
        emit("typing", { conversation_id: frame.conversation_id, from: frame.from });
      },
      acked: (frame) => this.inbox.acked(frame.conversation_id, frame.seq),
      presence: (frame) => emit("presence", frame),
      group: (frame) => this.#changed(frame),
      group_changed: (frame) => this.#changed(frame),
      pong: (frame) => this.inbox.tails(frame.groups), // §13.8: a group past what we have is pulled
      resync: () => emit("pull", null), // the mailbox overflowed: the store has it all
      error: (frame) => this.#refused(frame),
      deleted: (frame) => this.#deletedAnswer(frame),
    };
  }

  /**
   * Who this connection proved to be: a `joined` naming us starts a group, our own typing
   * (another device) is never shown, a copy of our own message is its `sent`.
   * @param {Identity | null} me
   */
  setIdentity(me) {
    this.me = me;
  }

  /**
   * Connected: pending sends go again (the same frames) and the settle check runs; offline the
   * clocks stop (waiting offline never fails a message).
   * @param {boolean} online
   */
  setOnline(online) {
    this.online = online;
    this.outbox.setOnline(online);
    this.inbox.setOnline(online);
  }

  /**
   * Any frame from the server; answers to requests and types added later (§1) pass.
   * @param {Frame} frame
   */
  dispatch(frame) {
    const handler = Object.hasOwn(this.#handlers, frame.type) ? this.#handlers[frame.type] : undefined;
    handler?.(frame);
  }

  /**
   * A `message` (pushed or pulled), or our own copy built from an answer (`own`).
   * @param {Frame} message
   * @param {{fromPull?: boolean, own?: boolean}} [how]
   */
  receive(message, { fromPull = false, own = false } = {}) {
    // A copy of our own message (pulled, or pushed to our other device) is its `sent` too: a
    // message whose `sent` was lost, or that was shown failed, was stored after all.
    if (!own && sameIdentity(message.from, this.me) && this.outbox.has(message.client_id)) {
      this.outbox.accepted({ ref: message.client_id, conversation_id: message.conversation_id, seq: message.seq, time: message.time });
    }
    // its sender stopped typing there (before it is shown)
    if (!own) this.typing.message(/** @type {{conversation_id: string, from?: Identity}} */ (message));
    this.inbox.receive(this.#tombstoneWins(message), { fromPull, own });
  }

  /**
   * §16: a seq we know deleted (its event came, or a copy with `deleted`) is taken as a tombstone
   * whatever copy arrives later (a retransmission read before the delete).
   * @param {Frame} message @returns {Frame}
   */
  #tombstoneWins(message) {
    const event = deletedEventOf(message);
    if (event) this.#rememberDeleted(`${message.conversation_id}/${event.seq}`);
    if (message.deleted) this.#rememberDeleted(`${message.conversation_id}/${message.seq}`);
    else if (this.#deleted.has(`${message.conversation_id}/${message.seq}`)) return tombstone(message);
    return message;
  }

  /** @param {string} key */
  #rememberDeleted(key) {
    this.#deleted.add(key);
    for (const old of this.#deleted) {
      if (this.#deleted.size <= KEEP_DELETED) break;
      this.#deleted.delete(old);
    }
  }

  /**
   * `deleted`, the answer to our own delete (§16): its event is in the conversation's seq (pushed
   * to the others, not to us), so it fills that seq as `sent` does.
   * @param {Frame} answer
   */
  #deletedAnswer(answer) {
    if (!Number.isInteger(answer.seq) || !Number.isInteger(answer.tombstone_seq) || !answer.conversation_id) return;
    this.receive({
      type: "message", conversation_id: answer.conversation_id, seq: answer.tombstone_seq, from: this.me, text: "",
      time: answer.time, client_id: `deleted:${answer.seq}`, event: { type: "deleted", seq: answer.seq, by: this.me },
    }, { own: true });
  }

  /** @param {Frame} message */
  #show(message) {
    this.emit("message", message);
    const event = deletedEventOf(message);
    if (event) { // the page replaces message `seq` by "message deleted"
      this.emit("message_deleted", { conversation_id: message.conversation_id, seq: event.seq, by: event.by ?? null,
        tombstone_seq: message.seq });
    }
  }

  /** A pull ended (every page): see Inbox.pulled. */
  pulled() {
    this.inbox.pulled();
  }

  /**
   * A `send` frame (with its id) into the ack queue, with the `last_seq` hint where we know the
   * conversation; its view.
   * @param {Frame} frame
   * @returns {Frame}
   */
  send(frame) {
    const have = frame.conversation_id ? this.inbox.have(frame.conversation_id) : null;
    if (have) frame.last_seq = have; // a hint; the server decides
    return this.outbox.add(frame);
  }

  /**
   * A group change (a `group_*` frame) is on its way: its answer fills a seq as `sent` does, and
   * until then a gap its event may fill waits for it.
   * @param {Frame} request
   */
  changeStarted(request) {
    this.#changes.delete(request.id); // re-inserted last: the oldest are forgotten first
    this.#changes.set(request.id, { request, pending: true });
    for (const old of [...this.#changes.keys()].slice(0, Math.max(0, this.#changes.size - KEEP_CHANGES))) this.#changes.delete(old);
  }

  /**
   * The change was answered, or given up: it explains no gap any more.
   * @param {string} id
   */
  changeEnded(id) {
    const change = this.#changes.get(id);
    if (change) change.pending = false;
    this.inbox.recheck(); // a gap this change explained may now need a pull
  }

  /**
   * We left this group (the answer came): nothing more for it (also when the answer filled no seq).
   * @param {string} conversationId
   */
  left(conversationId) {
    if (!this.inbox.gone(conversationId)) this.inbox.leave(conversationId);
  }

  /**
   * `not_member` for a group we hold (removed while away): dropped, never retried.
   * @param {unknown} conversationId
   */
  groupGone(conversationId) {
    if (typeof conversationId !== "string" || !isGroupId(conversationId) || this.inbox.gone(conversationId)) return;
    this.inbox.leave(conversationId); // no acks, pulls or `since` for it any more
    this.emit("gone", { conversation_id: conversationId, code: "not_member" });
  }

  /** @param {Frame} sent */
  #accepted(sent) {
    const view = this.outbox.accepted(sent);
    if (!view) return; // a second msg:A for a send we repeated
    // Our own message is part of the conversation: it fills its seq.
    this.receive({
      type: "message", conversation_id: sent.conversation_id, seq: sent.seq, from: this.me, text: view.text,
      time: sent.time, client_id: view.id, ...(view.image ? { image: view.image } : {}),
    }, { own: true });
  }

  /**
   * `group` / `group_changed`, the answer to our own change: its event message is in the group's
   * seq (pushed to the other members, not to us), so it fills that seq as `sent` does.
   * @param {Frame} answer
   */
  #changed(answer) {
    const change = this.#changes.get(answer.ref);
    if (change) change.pending = false;
    const message = ownEventMessage(answer, change?.request ?? null, this.me);
    if (message) this.receive(message, { own: true });
  }

  /**
   * An error frame not answering a request: a send's (final, except internal_error, rate_limited
   * and connection_gone), or an ack's. `not_member` for a group we hold: we were removed while
   * away, the group is dropped.
   * @param {Frame} frame
   */
  #refused(frame) {
    let conversationId = this.#ackIds.get(frame.ref) ?? null;
    this.#ackIds.delete(frame.ref);
    const view = this.outbox.rejected(frame.ref, frame);
    if (view) conversationId = view.conversation_id;
    if (frame.code === "connection_gone") this.emit("connection_gone", frame);
    else if (frame.code === "banned") this.emit("banned", frame); // an operator banned us: the client stops
    else if (frame.code === "not_member") this.groupGone(conversationId);
  }

  /**
   * Our sends and group changes that may still fill a seq here (a group_create's event is seq 1
   * of a new group: it fills no gap anywhere).
   * @param {string} conversationId
   * @returns {number}
   */
  #inFlight(conversationId) {
    let count = this.outbox.inFlight(conversationId);
    for (const { request, pending } of this.#changes.values()) if (pending && request.conversation_id === conversationId) count += 1;
    return count;
  }

  /**
   * Quiet: the server answers only a refusal, not `acked` (one billed frame fewer per message);
   * the cursor is where this ack puts it (were the ack lost, the next pull starts lower: duplicates).
   * @param {string} conversationId
   * @param {number} seq
   */
  #ack(conversationId, seq) {
    if (!this.online) return;
    const id = this.newId();
    if (!this.transmit({ action: "ack", id, conversation_id: conversationId, seq, quiet: true })) return;
    this.#ackIds.set(id, conversationId); // a refusal (`not_member`) names only the id
    const oldest = this.#ackIds.keys().next().value; // its refusal came long ago, if at all
    if (this.#ackIds.size > KEEP_ACK_IDS && oldest !== undefined) this.#ackIds.delete(oldest);
    this.inbox.acked(conversationId, seq);
  }
}
