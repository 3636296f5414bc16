// Typing (docs/protocol.md §14.2), both halves, beside inbox.js and outbox.js and, like them,
// with the clock injected (tests/client_scenarios/typing-*.json run it):
// - ours: typed(conversation) on a keystroke in a non-empty draft sends at most one `typing`
//   frame per conversation per 3 s (the server drops the rest anyway); offline nothing is sent
//   and nothing is owed later;
// - theirs: received(frame) shows its sender in that conversation for 6 s after their last
//   one, message(message) clears the sender at once (pushed or pulled), who(conversation) lists
//   who is typing there in the order they started. Never ourselves (another device of ours).

import { identityKey, sameIdentity } from "./ids.js";

export const TYPING_INTERVAL_MS = 3000;
export const TYPING_SHOWN_MS = 6000;

/** @typedef {import("./ids.js").Identity} Identity */

/**
 * @typedef {object} TypingOptions
 * @property {(frame: import("./transports.js").Frame) => boolean} [transmit]
 * @property {import("./transports.js").Timers} [timers] @property {() => number} [now]
 * @property {() => Identity | null} [me] @property {number} [intervalMs] @property {number} [shownMs]
 * @property {(conversationId: string) => void} [onChange]
 */

export class Typing {
  /** @type {Map<string, number>} */
  #sent = new Map(); // conversation -> when our last typing frame went
  /** @type {Map<string, Map<string, {from: Identity, timer: any}>>} */
  #shown = new Map(); // conversation -> Map(identity key -> {from, timer}), in the order they started

  /**
   * transmit(frame) -> boolean (false: not connected); onChange(conversationId) when who() changed there.
   * @param {TypingOptions} [options]
   */
  constructor({ transmit = () => false, timers = globalThis, now = () => Date.now(), me = () => null,
    intervalMs = TYPING_INTERVAL_MS, shownMs = TYPING_SHOWN_MS, onChange = () => {} } = {}) {
    this.transmit = transmit;
    this.timers = timers;
    this.now = now;
    this.me = me;
    this.intervalMs = intervalMs;
    this.shownMs = shownMs;
    this.onChange = onChange;
  }

  /** The user typed in this conversation's non-empty draft: true when a frame went. @param {string} conversationId */
  typed(conversationId) {
    if (!conversationId) return false;
    const now = this.now();
    const last = this.#sent.get(conversationId);
    if (last !== undefined && now - last < this.intervalMs) return false;
    if (!this.transmit({ action: "typing", conversation_id: conversationId })) return false;
    this.#sent.set(conversationId, now);
    return true;
  }

  /** A `typing` frame: its sender is shown for shownMs from now. @param {import("./transports.js").Frame} frame */
  received({ conversation_id: conversationId, from }) {
    if (!conversationId || !from || sameIdentity(from, this.me())) return;
    let shown = this.#shown.get(conversationId);
    if (!shown) this.#shown.set(conversationId, shown = new Map());
    const key = identityKey(from);
    const known = shown.get(key);
    if (known) this.timers.clearTimeout(known.timer);
    const timer = this.timers.setTimeout(() => this.#clear(conversationId, key), this.shownMs);
    shown.set(key, { from: { kind: from.kind, id: from.id }, timer }); // a known key keeps its place
    if (!known) this.onChange(conversationId);
  }

  /** A message (not our own copy): its sender has stopped typing there. @param {{conversation_id: string, from?: Identity} | null} message */
  message(message) {
    if (message?.from) this.#clear(message.conversation_id, identityKey(message.from));
  }

  /** Who is typing in this conversation now, in the order they started. @param {string} conversationId */
  who(conversationId) {
    return [...(this.#shown.get(conversationId)?.values() ?? [])].map((entry) => entry.from);
  }

  /** @param {string} conversationId @param {string} key */
  #clear(conversationId, key) {
    const shown = this.#shown.get(conversationId);
    const entry = shown?.get(key);
    if (!shown || !entry) return;
    this.timers.clearTimeout(entry.timer);
    shown.delete(key);
    if (shown.size === 0) this.#shown.delete(conversationId);
    this.onChange(conversationId);
  }
}
