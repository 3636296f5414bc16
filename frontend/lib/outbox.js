// The sending half of reliable delivery (docs/protocol.md §9a, §9b): the ack queue. Every send
// waits here until msg:A (`sent`); without it within the ack timeout it goes again with the same
// id (the server stores it once), and after the last attempt it is "failed" until resent.
// Messages of one conversation leave one at a time, so they keep the order they were typed in.

export const SENDING = "sending";
export const SENT = "sent";
export const DELIVERED = "delivered";
export const SEEN = "seen"; // the peer has read it (§14.3): delivered too, never undone by a delivered
export const FAILED = "failed";

const KEEP_SETTLED = 2000; // sent messages remembered for their delivered receipt

/** @typedef {import("./transports.js").Frame} Frame */
/**
 * One message of ours on its way (a `send` frame and where it stands).
 * @typedef {object} Item
 * @property {Frame} frame @property {string} line @property {string} state @property {number} attempts
 * @property {any} timer @property {boolean} inFlight @property {string | null} conversationId
 * @property {number | null} seq @property {string | number | null} time @property {string | null} error
 */
/** What the UI is told of a message (view()). @typedef {ReturnType<Outbox["view"]>} OutgoingView */
/** @typedef {{load: () => {frame: Frame, state: string}[], save: (items: {frame: Frame, state: string}[]) => void}} OutboxStore */

/** @param {Frame} frame */
function lineOf(frame) {
  return frame.conversation_id ?? `to:${frame.to.kind}:${frame.to.id}`;
}

export class Outbox {
  /** @type {Map<string, Item>} */
  #items = new Map(); // id -> item, in the order they were added
  /** @type {Map<string, string[]>} */
  #lines = new Map(); // line -> ids still sending, oldest first (the head is in flight)
  /** @type {Map<string, number>} */
  #deliveredUpto = new Map(); // conversation -> highest seq the peer has (may overtake `sent`)
  /** @type {Map<string, number>} */
  #seenUpto = new Map(); // conversation -> highest seq the peer has read (may overtake `sent`)
  #online = false;

  /**
   * transmit(frame) -> boolean: hands a frame to the connection (false: not connected).
   * store: {load() -> [{frame, state}], save([{frame, state}])} keeps unsent messages across reloads.
   * onChange(view): every state change of a message, for the UI.
   * @param {{transmit: (frame: Frame) => boolean, timers?: import("./transports.js").Timers, ackTimeoutMs?: number,
   *   maxAttempts?: number, store?: OutboxStore | null, onChange?: (view: OutgoingView) => void}} options
   */
  constructor({ transmit, timers = globalThis, ackTimeoutMs = 3000, maxAttempts = 4, store = null, onChange = () => {} }) {
    this.transmit = transmit;
    this.timers = timers;
    this.ackTimeoutMs = ackTimeoutMs;
    this.maxAttempts = maxAttempts;
    this.store = store;
    this.onChange = onChange;
    for (const saved of store?.load() ?? []) {
      const item = this.#newItem(saved.frame);
      if (saved.state === FAILED) item.state = FAILED;
      else this.#enqueue(item);
    }
  }

  /** A new message (a `send` frame with its id); adding an id again returns the first one. @param {Frame} frame */
  add(frame) {
    const known = this.#items.get(frame.id);
    if (known) return this.view(known);
    const item = this.#newItem(frame);
    this.#enqueue(item);
    this.#save();
    this.onChange(this.view(item));
    this.#pump(item.line);
    return this.view(item);
  }

  /**
   * msg:A: the server stored the message. Returns its view, or null for a repeated `sent`. A
   * late `sent` (or a pulled copy) for a message shown failed moves it to sent: it was stored.
   * @param {Frame} sent
   */
  accepted(sent) {
    const item = this.#items.get(sent.ref);
    if (!item || (item.state !== SENDING && item.state !== FAILED)) return null;
    this.#settle(item);
    item.state = SENT;
    item.conversationId = sent.conversation_id;
    item.seq = sent.seq;
    item.time = sent.time;
    if (sent.seq <= (this.#deliveredUpto.get(sent.conversation_id) ?? 0)) item.state = DELIVERED;
    if (sent.seq <= (this.#seenUpto.get(sent.conversation_id) ?? 0)) item.state = SEEN;
    this.#forgetOld();
    this.#save();
    this.onChange(this.view(item));
    this.#pump(item.line);
    return this.view(item);
  }

  /**
   * An `error` answering a send is final for that frame (§8): failed, no automatic retry. But
   * `internal_error` means "outcome unknown" (it may be stored): the ack timeout sends the same
   * frame again within its attempts, as for a lost answer; it is never "failed" for that alone.
   * `rate_limited` did nothing: the same frame again after `retry_after` seconds, not counted.
   * `connection_gone` did nothing either (the server no longer knows this connection): the client
   * reconnects, and the reconnect sends the same frame again (§8).
   * @param {string} ref @param {{code?: string, retry_after?: number}} error
   */
  rejected(ref, error) {
    const item = this.#items.get(ref);
    if (!item || item.state !== SENDING || error.code === "internal_error" || error.code === "connection_gone") return null;
    if (error.code === "rate_limited") {
      this.#stopClock(item);
      item.attempts = Math.max(0, item.attempts - 1);
      item.timer = this.timers.setTimeout(() => {
        item.timer = null;
        if (item.state === SENDING && this.#online) this.#transmitNow(item);
      }, (error.retry_after ?? 1) * 1000);
      return null;
    }
    this.#fail(item, error.code ?? "error");
    return this.view(item);
  }

  /** Is this one of our messages (a pulled copy of it, recognised by `client_id`, is our `sent`)? @param {string} id */
  has(id) {
    return this.#items.has(id);
  }

  /**
   * How many of our sends may still get a seq in this conversation: sent at least once, no
   * `sent` yet (a send with `to` may land in any conversation until its `sent` says where).
   * @param {string} conversationId
   */
  inFlight(conversationId) {
    let count = 0;
    for (const item of this.#items.values()) {
      if (item.state === SENDING && item.attempts > 0 && (item.conversationId ?? conversationId) === conversationId) count += 1;
    }
    return count;
  }

  /** ack:N: the peer has everything up to seq in this conversation. @param {string} conversationId @param {number} seq */
  delivered(conversationId, seq) {
    this.#deliveredUpto.set(conversationId, Math.max(seq, this.#deliveredUpto.get(conversationId) ?? 0));
    const changed = [];
    for (const item of this.#items.values()) {
      if (item.state === SENT && item.conversationId === conversationId && item.seq !== null && item.seq <= seq) {
        item.state = DELIVERED;
        changed.push(this.view(item));
        this.onChange(this.view(item));
      }
    }
    return changed;
  }

  /** seen: the peer has read up to seq in this conversation (implies delivered). @param {string} conversationId @param {number} seq */
  seen(conversationId, seq) {
    this.#seenUpto.set(conversationId, Math.max(seq, this.#seenUpto.get(conversationId) ?? 0));
    const changed = [];
    for (const item of this.#items.values()) {
      if ((item.state === SENT || item.state === DELIVERED) && item.conversationId === conversationId && item.seq !== null
          && item.seq <= seq) {
        item.state = SEEN;
        changed.push(this.view(item));
        this.onChange(this.view(item));
      }
    }
    return changed;
  }

  /** The resend button of a failed message: the same frame and id, so never stored twice. @param {string} id */
  resend(id) {
    const item = this.#items.get(id);
    if (!item || item.state !== FAILED) return null;
    item.state = SENDING;
    item.error = null;
    item.attempts = 0;
    this.#enqueue(item);
    this.#save();
    this.onChange(this.view(item));
    this.#pump(item.line);
    return this.view(item);
  }

  /**
   * Connected: send every line's head now (after a reconnect, the same frames again).
   * Disconnected: stop the clocks, so waiting offline never turns a message into "failed".
   * @param {boolean} online
   */
  setOnline(online) {
    this.#online = online;
    for (const item of this.#items.values()) this.#stopClock(item);
    if (online) for (const line of this.#lines.keys()) this.#pump(line, { again: true });
  }

  /** Messages not yet stored or failed, oldest first (to show after a reload). */
  unsettled() {
    return [...this.#items.values()].filter((i) => i.state === SENDING || i.state === FAILED).map((i) => this.view(i));
  }

  /** @param {Item} item */
  view(item) {
    return {
      id: item.frame.id,
      text: item.frame.text,
      to: item.frame.to ?? null,
      conversation_id: item.conversationId,
      seq: item.seq,
      time: item.time,
      state: item.state,
      error: item.error,
      attempts: item.attempts,
      image: item.frame.image ?? null, // a photo (§14.1): upload_id, content_type, size, width, height, preview
    };
  }

  /** @param {Frame} frame */
  #newItem(frame) {
    /** @type {Item} */
    const item = {
      frame, line: lineOf(frame), state: SENDING, attempts: 0, timer: null, inFlight: false,
      conversationId: frame.conversation_id ?? null, seq: null, time: null, error: null,
    };
    this.#items.set(frame.id, item);
    return item;
  }

  /** @param {Item} item */
  #enqueue(item) {
    const queue = this.#lines.get(item.line) ?? [];
    queue.push(item.frame.id);
    this.#lines.set(item.line, queue);
  }

  /** @param {string} line */
  #pump(line, { again = false } = {}) {
    const headId = this.#lines.get(line)?.[0];
    const head = headId === undefined ? undefined : this.#items.get(headId);
    if (!head || !this.#online || (head.inFlight && !again)) return;
    this.#transmitNow(head);
  }

  /** @param {Item} item */
  #transmitNow(item) {
    this.#stopClock(item);
    if (!this.transmit(item.frame)) return; // not connected: setOnline(true) sends it
    item.inFlight = true;
    item.attempts += 1;
    item.timer = this.timers.setTimeout(() => this.#timedOut(item), this.ackTimeoutMs);
  }

  /** @param {Item} item */
  #timedOut(item) {
    item.timer = null;
    if (item.state !== SENDING || !this.#online) return;
    if (item.attempts < this.maxAttempts) this.#transmitNow(item);
    else this.#fail(item, "timeout");
  }

  /** @param {Item} item @param {string} code */
  #fail(item, code) {
    this.#settle(item);
    item.state = FAILED;
    item.error = code;
    this.#save();
    this.onChange(this.view(item));
    this.#pump(item.line); // the next message of the line goes on
  }

  /** @param {Item} item */
  #settle(item) {
    this.#stopClock(item);
    item.inFlight = false;
    const queue = this.#lines.get(item.line);
    if (!queue) return;
    const index = queue.indexOf(item.frame.id);
    if (index >= 0) queue.splice(index, 1);
    if (queue.length === 0) this.#lines.delete(item.line);
  }

  /** @param {Item} item */
  #stopClock(item) {
    if (item.timer !== null) this.timers.clearTimeout(item.timer);
    item.timer = null;
  }

  #forgetOld() {
    const settled = [...this.#items.values()].filter((i) => i.state === SENT || i.state === DELIVERED || i.state === SEEN);
    for (const item of settled.slice(0, Math.max(0, settled.length - KEEP_SETTLED))) this.#items.delete(item.frame.id);
  }

  #save() {
    this.store?.save([...this.#items.values()]
      .filter((i) => i.state === SENDING || i.state === FAILED)
      .map((i) => ({ frame: i.frame, state: i.state })));
  }
}
