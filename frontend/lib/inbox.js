// The receiving half of reliable delivery (docs/protocol.md §9c-§9g): messages leave here in seq
// order, once, per conversation; what we have is acked cumulatively, once per burst; a seq past a
// gap waits, and a pull is asked for only when the gap cannot be explained otherwise (§9c):
// missing seqs that may be our own sends still waiting for `sent` wait for them, and any other gap
// gets a short grace first, since pushes from different Lambdas can arrive out of order.
// Groups (§13): acks are batched (at most every groupAckMs, at least every groupAckMessages
// messages, flushed before idle/close); a `joined` event naming us starts the group at its seq
// (added while connected, or added again after leaving); an event that takes us out (`removed`
// us, our `left`) ends it: nothing more comes, so no pull and no ack waits for it.
// Groups have no retransmission (§13.1), so a member that lost the last pushes of a burst has no
// later message to reveal the gap. The tail check bounds that (§13.8): while we hold a group the
// keepalive `ping` carries `groups: true` (holdsGroup()), and its `pong` names each group's last
// seq; tails() takes them as a known seq past `have` (a gap like any other: the grace, then one
// pull with `since`). The settle check runs only on evidence of loss: after a group push that came
// past an unexplained gap (or a gap pull), once no group push has come for settleCheckMs (Q),
// onPing() asks for one such ping at once. A fault-free chat costs nothing extra. A group we are
// refused in (`not_member`: removed while away) is dropped by leave() like one we were removed from.
// No I/O: timers are injected, the client turns the callbacks into frames.
// Mirrored by webim_client/inbox.py; tests/client_scenarios/ runs the same scenarios on both.

export const MAX_SINCE = 100; // entries in one sync's `since` (the server refuses more)

/**
 * @typedef {import("./transports.js").Frame} Frame
 * @typedef {import("./transports.js").Timers} Timers
 * @typedef {import("./ids.js").Identity} Identity
 */
/**
 * What Inbox is given (all optional: a bare Inbox acks nothing and shows nothing).
 * @typedef {object} InboxOptions
 * @property {Timers} [timers] the clock the graces, acks and the settle check wait on
 * @property {number} [ackDelayMs] a 1:1 ack waits this long (one per burst)
 * @property {number} [gapGraceMs] a gap waits this long before it asks for a pull
 * @property {(conversationId: string) => number} [inFlight] how many of our sends may still get a seq there
 * @property {(message: Frame) => void} [onShow] a message, in seq order, once
 * @property {(conversationId: string, seq: number) => void} [onAck] ack everything up to seq
 * @property {() => void} [onPull] a pull is needed
 * @property {() => void} [onPing] the settle check wants a `ping` with `groups: true`
 * @property {() => (Identity | null)} [me] our identity (for group events about us)
 * @property {number} [groupAckMs] a group's acks wait at most this long
 * @property {number} [groupAckMessages] ... or until this many new messages came
 * @property {number} [settleCheckMs] Q of the settle check (§13.8; 0: off)
 */
/**
 * One conversation's receiving state.
 * @typedef {object} Conversation
 * @property {number | null} have the highest seq received without a gap (null: start unknown)
 * @property {Map<number, Frame>} waiting messages past a gap, by seq
 * @property {number} acked the server's acked cursor for us
 * @property {any} grace the gap's grace timer, or null
 * @property {number} unacked group messages since the last ack
 * @property {boolean} gone a group we are out of
 * @property {number} tail a group's last seq as a pong told it
 * @property {number} checked start unknown: a complete pull found nothing for us up to this tail
 * @property {number} armed start unknown: the tail known when the pull began
 */

/** @param {unknown} conversationId @returns {boolean} */
export function isGroupId(conversationId) {
  return typeof conversationId === "string" && conversationId.startsWith("g_");
}

/** @param {Identity | null | undefined} a @param {Identity | null | undefined} b */
function same(a, b) {
  return Boolean(a && b && a.kind === b.kind && a.id === b.id);
}

/**
 * A `joined` event that adds `me` (or `created` with me in it): the group starts there for me.
 * @param {Frame} message @param {Identity | null} me
 */
export function joinsMe(message, me) {
  const event = message.event;
  if (!event || !me || !isGroupId(message.conversation_id)) return false;
  if (event.type !== "joined" && event.type !== "created") return false;
  return (event.members ?? []).some((/** @type {Identity} */ member) => same(member, me)) || (event.type === "created" && same(message.from, me));
}

/**
 * `removed` of me, or my own `left`: nothing more comes to me in this group.
 * @param {Frame} message @param {Identity | null} me
 */
export function removesMe(message, me) {
  const event = message.event;
  if (!event || !me || !isGroupId(message.conversation_id)) return false;
  return (event.type === "removed" && same(event.member, me)) || (event.type === "left" && same(message.from, me));
}

export class Inbox {
  /** @type {Map<string, Conversation>} conversation id -> its receiving state */
  #conversations = new Map();
  /** @type {Map<string, any>} */
  #acks = new Map(); // conversation -> pending ack timer
  #online = true;
  /** @type {any} */
  #settle = null; // the settle check's timer (Q after the last group push)
  #suspect = false; // this burst showed a loss (an unexplained gap): check its tail

  /**
   * timers: {setTimeout, clearTimeout}. inFlight(conversationId) -> how many of our sends may
   * still get a seq there. onShow(message), onAck(conversationId, seq), onPull(): what to do.
   * me() -> our identity (for group events about us). Group acks: groupAckMs, groupAckMessages.
   * settleCheckMs: Q of the settle check (§13.8; 0: off), which asks onPing() for a `ping` with
   * `groups: true`.
   * @param {InboxOptions} [options]
   */
  constructor({ timers = globalThis, ackDelayMs = 20, gapGraceMs = 1000, inFlight = () => 0,
    onShow = () => {}, onAck = () => {}, onPull = () => {}, onPing = () => {}, me = () => null, groupAckMs = 2000,
    groupAckMessages = 20, settleCheckMs = 3000 } = {}) {
    this.timers = timers;
    this.ackDelayMs = ackDelayMs;
    this.gapGraceMs = gapGraceMs;
    this.inFlight = inFlight;
    this.onShow = onShow;
    this.onAck = onAck;
    this.onPull = onPull;
    this.onPing = onPing;
    this.me = me;
    this.groupAckMs = groupAckMs;
    this.groupAckMessages = groupAckMessages;
    this.settleCheckMs = settleCheckMs;
  }

  /** @param {string} conversationId @returns {Conversation} */
  #conversation(conversationId) {
    let conversation = this.#conversations.get(conversationId);
    if (!conversation) {
      conversation = { have: null, waiting: new Map(), acked: 0, grace: null, unacked: 0, gone: false, tail: 0, checked: 0,
        armed: 0 };
      this.#conversations.set(conversationId, conversation);
    }
    return conversation;
  }

  /**
   * Take one `message` frame (pushed, retransmitted, pulled, or our own copy built from `sent`).
   * Returns {ready: messages now in order, duplicate, gap, ack: seq to ack or null}.
   * @param {Frame} message
   * @param {{fromPull?: boolean, own?: boolean}} [options]
   * @returns {{ready: Frame[], duplicate: boolean, gap: boolean, ack: number | null}}
   */
  receive(message, { fromPull = false, own = false } = {}) {
    /** @type {string} */
    const conversationId = message.conversation_id;
    const conversation = this.#conversation(conversationId);
    /** @type {number} */
    const seq = message.seq;
    /** @type {Frame[]} */
    let ready = [];
    let duplicate = false;
    const me = this.me();
    if (!(conversation.have !== null && seq <= conversation.have) && joinsMe(message, me)) {
      // Added (again): nothing before this seq is ours to see, so nothing before it is a gap.
      conversation.have = seq - 1;
      for (const waiting of conversation.waiting.keys()) if (waiting < seq) conversation.waiting.delete(waiting);
      conversation.gone = false;
    } else if (conversation.gone) {
      return { ready: [], duplicate: true, gap: false, ack: null }; // a late copy from before we went
    }
    if (conversation.have === null && seq !== 1 && !fromPull) {
      if (!conversation.waiting.has(seq)) conversation.waiting.set(seq, message); // where does it start? wait, then ask
    } else {
      if (conversation.have === null) conversation.have = seq - 1; // a pull starts right after the acked cursor
      // A duplicate is dropped (and acked again: our earlier ack may have been lost); a pull that
      // just told where the conversation starts may release what was waiting, duplicate or not.
      duplicate = seq <= conversation.have || conversation.waiting.has(seq);
      if (!duplicate) conversation.waiting.set(seq, message);
      ready = this.#release(conversation);
      if (!own && conversation.have > 0) this.#ackSoon(conversationId, ready.length);
    }
    const ended = !duplicate && removesMe(message, me);
    if (ended) ready = this.#end(conversation, ready, seq);
    for (const shown of ready) this.onShow(shown);
    if (ended) this.leave(conversationId);
    this.#checkGap(conversationId, conversation);
    if (isGroupId(conversationId) && !fromPull && !own && !conversation.gone) {
      if (conversation.waiting.size > 0 && conversation.have !== null && this.#unexplained(conversationId, conversation)) {
        this.#suspect = true; // a push past a gap nothing explains: this burst lost something
      }
      if (this.#suspect) this.#settleSoon(); // each push restarts the quiet time
    } else if (!this.#holdsGroup()) {
      this.#stopSettle();
    }
    return { ready, duplicate, gap: conversation.waiting.size > 0, ack: conversation.have || null };
  }

  /** `acked` (ack:A): the server's cursor for us in this conversation. @param {string} conversationId @param {number} seq */
  acked(conversationId, seq) {
    const conversation = this.#conversation(conversationId);
    conversation.acked = Math.max(conversation.acked, seq);
  }

  /** The highest seq received without a gap, or null. @param {string} conversationId @returns {number | null} */
  have(conversationId) {
    return this.#conversations.get(conversationId)?.have ?? null;
  }

  /**
   * `since` for the next sync, as chunks of at most 100 entries (one sync each): only the
   * conversations that need it, those with a gap first. Elsewhere the server's acked cursor is
   * where we are, so leaving them out costs nothing.
   * @returns {Record<string, number>[]}
   */
  since() {
    for (const conversation of this.#conversations.values()) {
      if (conversation.have === null) conversation.armed = conversation.tail; // this pull tells whether it is past it
    }
    const entries = [...this.#conversations.entries()]
      .filter(([, c]) => c.have !== null && !c.gone && (c.waiting.size > 0 || c.have > c.acked || c.tail > c.have))
      .sort(([, a], [, b]) => Number(b.waiting.size > 0) - Number(a.waiting.size > 0))
      .map(([id, c]) => [id, /** @type {number} */ (c.have)]);
    /** @type {Record<string, number>[]} */
    const chunks = [];
    for (let i = 0; i < entries.length; i += MAX_SINCE) chunks.push(Object.fromEntries(entries.slice(i, i + MAX_SINCE)));
    return chunks;
  }

  /**
   * After a complete pull: a conversation whose start is still unknown got nothing from the
   * pull, so the server's cursor is at or past its waiting messages; release them from there.
   * Gaps still open get a new grace (a pull that failed is asked for again). A group whose start
   * is unknown and that got nothing is at or past the tail known when the pull began (the
   * server's cursor is): that tail asks for no pull again.
   */
  pulled() {
    for (const [conversationId, conversation] of this.#conversations) {
      if (conversation.have === null && conversation.waiting.size > 0) {
        conversation.have = Math.min(...conversation.waiting.keys()) - 1;
        const ready = this.#release(conversation);
        for (const shown of ready) this.onShow(shown);
        this.#ackSoon(conversationId, ready.length);
      } else if (conversation.have === null) {
        conversation.checked = Math.max(conversation.checked, conversation.armed);
      }
      this.#stopGrace(conversation);
      this.#checkGap(conversationId, conversation);
    }
  }

  /** We are in this group (the conversation list names it): the keepalive checks its tail. @param {string} conversationId */
  member(conversationId) {
    if (!isGroupId(conversationId)) return;
    this.#conversation(conversationId).gone = false;
  }

  /** Do we hold a group? Then the keepalive `ping` asks for the groups' last seqs (`groups: true`). */
  holdsGroup() {
    return this.#holdsGroup();
  }

  /**
   * A `pong`'s `groups` ({group id: last seq}, §13.8): a group we hold whose last seq is past what
   * we have is a gap like one a push shows (the grace, then one pull with `since`). Groups we do
   * not hold are ignored (we learn of new groups as before).
   * @param {unknown} groups
   */
  tails(groups) {
    if (!groups || typeof groups !== "object") return;
    for (const [conversationId, lastSeq] of Object.entries(groups)) {
      const conversation = this.#conversations.get(conversationId);
      if (!conversation || conversation.gone || !isGroupId(conversationId) || !Number.isInteger(lastSeq)) continue;
      conversation.tail = Math.max(conversation.tail, lastSeq);
      this.#checkGap(conversationId, conversation);
    }
  }

  /** Offline no pull can run: the settle check stops (the connect's pull covers the time away). @param {boolean} online */
  setOnline(online) {
    this.#online = online;
    if (!online) this.#stopSettle();
  }

  /**
   * We are out of this group (removed, we left, or a frame naming it was refused `not_member`:
   * removed while away): no more acks or pulls for it, nothing shown until an event adds us
   * again, and where we were is forgotten: added again (a `joined` naming us, or the list naming
   * it), the group starts where that says, never from the seq we left at.
   * @param {string} conversationId
   */
  leave(conversationId) {
    const conversation = this.#conversation(conversationId);
    conversation.gone = true;
    conversation.have = null;
    conversation.waiting.clear();
    conversation.unacked = 0;
    conversation.tail = conversation.checked = conversation.armed = 0;
    this.#stopGrace(conversation);
    if (this.#acks.has(conversationId)) {
      this.timers.clearTimeout(this.#acks.get(conversationId));
      this.#acks.delete(conversationId);
    }
    if (!this.#holdsGroup()) this.#stopSettle();
  }

  /** Our sends in flight changed (a `sent`, a failure): a gap they explained may now need a pull. */
  recheck() {
    for (const [conversationId, conversation] of this.#conversations) this.#checkGap(conversationId, conversation);
  }

  /** Conversations still waiting for a missing seq. */
  gaps() {
    return [...this.#conversations.entries()].filter(([, c]) => c.waiting.size > 0).map(([id]) => id);
  }

  /** Is this group over for us (removed, or we left), until a `joined` naming us? @param {string} conversationId */
  gone(conversationId) {
    return this.#conversations.get(conversationId)?.gone ?? false;
  }

  /** Send every pending ack now (before going idle or closing). */
  flush() {
    for (const conversationId of [...this.#acks.keys()]) this.#ackNow(conversationId);
  }

  /**
   * The event that took us out of a group (at `seq`) may overtake messages before it (the server
   * pushes `removed` directly, the rest is fanned out): nothing is ours after it and a gap before
   * it will never fill (we may no longer pull it), so what came up to it is shown, in seq order,
   * and nothing past it. leave() then forgets the group.
   * @param {Conversation} conversation
   * @param {Frame[]} ready
   * @param {number} seq
   * @returns {Frame[]}
   */
  #end(conversation, ready, seq) {
    const shown = ready.filter((message) => message.seq <= seq);
    for (const waitingSeq of [...conversation.waiting.keys()].sort((a, b) => a - b)) {
      if (waitingSeq > seq) break;
      shown.push(/** @type {Frame} */ (conversation.waiting.get(waitingSeq)));
      conversation.waiting.delete(waitingSeq);
    }
    return shown;
  }

  #holdsGroup() {
    for (const [id, conversation] of this.#conversations) if (isGroupId(id) && !conversation.gone) return true;
    return false;
  }

  /**
   * Q after the last group push of a burst that showed a loss (restarted by each): one `ping`
   * with `groups: true`; its `pong` asks for a pull only if a group is behind.
   */
  #settleSoon() {
    if (this.#settle !== null) this.timers.clearTimeout(this.#settle);
    this.#settle = null;
    if (!this.settleCheckMs || !this.#online) {
      this.#suspect = false;
      return;
    }
    this.#settle = this.timers.setTimeout(() => {
      this.#settle = null;
      this.#suspect = false;
      if (this.#online && this.#holdsGroup()) this.onPing();
    }, this.settleCheckMs);
  }

  #suspectLoss() {
    this.#suspect = true;
    if (this.#settle === null) this.#settleSoon();
  }

  #stopSettle() {
    if (this.#settle !== null) this.timers.clearTimeout(this.#settle);
    this.#settle = null;
    this.#suspect = false;
  }

  /** Take the run of waiting seqs right after `have` (set: the start is known). @param {Conversation} conversation */
  #release(conversation) {
    /** @type {Frame[]} */
    const ready = [];
    let have = /** @type {number} */ (conversation.have);
    while (conversation.waiting.has(have + 1)) {
      have += 1;
      ready.push(/** @type {Frame} */ (conversation.waiting.get(have)));
      conversation.waiting.delete(have);
    }
    conversation.have = have;
    return ready;
  }

  /**
   * Seqs missing below the highest waiting one or the tail a pong told (for an unknown start:
   * every seq below the lowest waiting one, or the tail past what a pull checked).
   * @param {Conversation} conversation
   */
  #missing(conversation) {
    if (conversation.have === null) {
      if (conversation.waiting.size > 0) return Math.min(...conversation.waiting.keys()) - 1;
      return conversation.tail - conversation.checked;
    }
    const top = Math.max(conversation.tail, conversation.have, ...conversation.waiting.keys());
    return top - conversation.have - conversation.waiting.size;
  }

  /** @param {string} conversationId @param {Conversation} conversation */
  #unexplained(conversationId, conversation) {
    return !conversation.gone && this.#missing(conversation) > this.inFlight(conversationId);
  }

  /** @param {string} conversationId @param {Conversation} conversation */
  #checkGap(conversationId, conversation) {
    if (!this.#unexplained(conversationId, conversation)) {
      this.#stopGrace(conversation); // no gap, or one our own sends in flight may fill: their `sent` will
      return;
    }
    if (conversation.grace !== null) return;
    conversation.grace = this.timers.setTimeout(() => {
      conversation.grace = null;
      if (!this.#unexplained(conversationId, conversation)) return;
      if (isGroupId(conversationId) && conversation.waiting.size > 0 && conversation.have !== null) {
        this.#suspectLoss(); // we had to pull: check the burst's tail once it is quiet
      }
      // one pull covers every conversation (a pong's tails start their graces at once);
      // pulled() gives a gap still open a new grace
      for (const other of this.#conversations.values()) this.#stopGrace(other);
      this.onPull();
    }, this.gapGraceMs);
  }

  /** @param {Conversation} conversation */
  #stopGrace(conversation) {
    if (conversation.grace !== null) this.timers.clearTimeout(conversation.grace);
    conversation.grace = null;
  }

  /**
   * One cumulative ack per burst: "I have everything up to seq" (never past a gap). In a group
   * (§13.5) at most every groupAckMs, but at once when groupAckMessages new ones have come.
   * @param {string} conversationId @param {number} [fresh] messages just released
   */
  #ackSoon(conversationId, fresh = 0) {
    if (!isGroupId(conversationId)) {
      if (!this.#acks.has(conversationId)) {
        this.#acks.set(conversationId, this.timers.setTimeout(() => this.#ackNow(conversationId), this.ackDelayMs));
      }
      return;
    }
    const conversation = this.#conversation(conversationId);
    if (conversation.gone) return;
    conversation.unacked += fresh;
    if (conversation.unacked >= this.groupAckMessages) {
      this.#ackNow(conversationId);
    } else if (!this.#acks.has(conversationId)) {
      this.#acks.set(conversationId, this.timers.setTimeout(() => this.#ackNow(conversationId), this.groupAckMs));
    }
  }

  /** @param {string} conversationId */
  #ackNow(conversationId) {
    if (this.#acks.has(conversationId)) this.timers.clearTimeout(this.#acks.get(conversationId));
    this.#acks.delete(conversationId);
    const conversation = this.#conversations.get(conversationId);
    if (!conversation || conversation.gone) return;
    conversation.unacked = 0;
    if (conversation.have) this.onAck(conversationId, conversation.have);
  }
}
