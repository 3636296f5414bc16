// The receiving half of reliable delivery (docs/protocol.md §9c-§9g): messages leave here in seq
// order, once, per conversation; a seq past a gap waits for a pull to fill the gap.

export class Inbox {
  /** conversation id -> {have: highest seq with nothing missing below (null: unknown), waiting: Map} */
  #conversations = new Map();

  #conversation(conversationId) {
    let conversation = this.#conversations.get(conversationId);
    if (!conversation) {
      conversation = { have: null, waiting: new Map() };
      this.#conversations.set(conversationId, conversation);
    }
    return conversation;
  }

  /**
   * Take one `message` frame (pushed, retransmitted or pulled).
   * Returns {ready: messages now in order, duplicate, gap: a pull is needed, ack: seq to ack or null}.
   */
  receive(message, { fromPull = false } = {}) {
    const conversation = this.#conversation(message.conversation_id);
    const seq = message.seq;
    if (conversation.have === null) {
      if (seq === 1 || fromPull) {
        conversation.have = seq - 1; // a pull starts right after the server's acked cursor
      } else {
        conversation.waiting.set(seq, message); // where does this conversation start? ask.
        return { ready: [], duplicate: false, gap: true, ack: null };
      }
    }
    // A duplicate is dropped (and acked again: our earlier ack may have been lost); a pull that
    // just told where the conversation starts may release what was waiting, duplicate or not.
    const duplicate = seq <= conversation.have || conversation.waiting.has(seq);
    if (!duplicate) conversation.waiting.set(seq, message);
    const ready = [];
    while (conversation.waiting.has(conversation.have + 1)) {
      conversation.have += 1;
      ready.push(conversation.waiting.get(conversation.have));
      conversation.waiting.delete(conversation.have);
    }
    return { ready, duplicate, gap: conversation.waiting.size > 0, ack: conversation.have || null };
  }

  /** The highest seq received without a gap, or null. */
  have(conversationId) {
    return this.#conversations.get(conversationId)?.have ?? null;
  }

  /** `since` for a sync: at most 100 conversations, those with a gap first. */
  since() {
    const entries = [...this.#conversations.entries()]
      .filter(([, c]) => c.have !== null)
      .sort(([, a], [, b]) => b.waiting.size - a.waiting.size)
      .slice(0, 100)
      .map(([id, c]) => [id, c.have]);
    return Object.fromEntries(entries);
  }

  /**
   * After a complete pull: a conversation whose start is still unknown got nothing from the
   * pull, so the server's cursor is at or past its waiting messages; release them from there.
   */
  settleUnknown() {
    const ready = [];
    for (const conversation of this.#conversations.values()) {
      if (conversation.have !== null || conversation.waiting.size === 0) continue;
      conversation.have = Math.min(...conversation.waiting.keys()) - 1;
      while (conversation.waiting.has(conversation.have + 1)) {
        conversation.have += 1;
        ready.push(conversation.waiting.get(conversation.have));
        conversation.waiting.delete(conversation.have);
      }
    }
    return ready;
  }

  /** Conversations still waiting for a missing seq. */
  gaps() {
    return [...this.#conversations.entries()].filter(([, c]) => c.waiting.size > 0).map(([id]) => id);
  }
}
