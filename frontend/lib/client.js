// The chat client: the protocol logic the page and the widget share (docs/protocol.md §9, §11).
// It sends through the ack queue (outbox.js), receives in order and once (inbox.js), acks
// cumulatively, pulls what it missed on every (re)connect and on every gap, and reports to the
// UI as events:
//   "status"   {state, transport}          connection state
//   "identity" {kind, id}                  who this connection proved to be
//   "message"  message frame + {own}       a stored message, in seq order, once per tab session
//   "outgoing" outbox view                 a message we send: sending / sent / delivered / failed
//   "delivered" {conversation_id, seq}     the peer has everything up to seq
//   "read"     {conversation_id, seq}      our read mark moved (unread counts)
//   "presence" presence frame              a peer came or went

import { Emitter } from "./emitter.js";
import { idFactory, sameIdentity } from "./ids.js";
import { Inbox } from "./inbox.js";
import { Outbox } from "./outbox.js";
import { assertSendable } from "./text.js";

export class ChatClient extends Emitter {
  me = null;
  status = { state: "offline", transport: null };
  #inbox;
  #outbox;
  #pulling = null;
  #pullAgain = false;

  constructor({ connection, api = null, session = null, timers = globalThis, outboxStore = null,
    ackDelayMs = 20, gapGraceMs = 1000, syncLimit = 100, newId = idFactory(), ackTimeoutMs = 3000, maxAttempts = 4 }) {
    super();
    Object.assign(this, { connection, api, session, timers, syncLimit, newId });
    this.#inbox = new Inbox({
      timers, ackDelayMs, gapGraceMs,
      inFlight: (conversationId) => this.#outbox.inFlight(conversationId),
      onShow: (message) => this.#show(message),
      // quiet: the server answers only a refusal, not `acked` (one billed frame fewer per message);
      // the cursor is where this ack puts it (were the ack lost, the next pull starts lower: duplicates)
      onAck: (conversationId, seq) => {
        connection.transmit({ action: "ack", id: this.newId(), conversation_id: conversationId, seq, quiet: true });
        this.#inbox.acked(conversationId, seq);
      },
      onPull: () => void this.pull().catch(() => {}),
    });
    this.#outbox = new Outbox({
      transmit: (frame) => connection.transmit(frame), timers, ackTimeoutMs, maxAttempts, store: outboxStore,
      onChange: (view) => {
        this.emit("outgoing", view);
        this.#inbox.recheck(); // a gap our send explained may now need a pull
      },
    });
    connection.on("frame", (frame) => this.#dispatch(frame));
    connection.on("open", (opened) => this.#opened(opened));
    connection.on("state", (status) => {
      this.status = status;
      if (status.state !== "online") this.#outbox.setOnline(false);
      this.emit("status", status);
    });
  }

  start() {
    this.connection.start();
  }

  stop() {
    this.connection.stop();
  }

  /** Queue a message; returns its view at once (then "outgoing" events follow). */
  send({ text, to = null, conversationId = null, id = null }) {
    assertSendable(text);
    const frame = { action: "send", id: id ?? this.newId(), text };
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
    return this.#outbox.resend(id);
  }

  /** Messages not yet stored (sending) or failed: to show after a reload. */
  unsettled() {
    return this.#outbox.unsettled();
  }

  /** One page of the conversation list, newest first; pass `cursor` from the last page for the next. */
  async conversations({ cursor = null, limit = null } = {}) {
    const fields = {};
    if (cursor !== null) fields.cursor = cursor;
    if (limit !== null) fields.limit = limit;
    const answer = await this.connection.request("conversations", fields);
    return { conversations: answer.conversations, more: Boolean(answer.more), cursor: answer.cursor ?? null };
  }

  async history(conversationId, { before = null, limit = 30 } = {}) {
    const fields = { conversation_id: conversationId, limit };
    if (before !== null) fields.before = before;
    const answer = await this.connection.request("history", fields);
    return { messages: answer.messages, more: answer.more };
  }

  /** Move the read mark (unread counts); every tab hears "read". */
  async markRead(conversationId, seq) {
    const answer = await this.connection.request("read", { conversation_id: conversationId, seq });
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
      case "resync": return void this.pull().catch(() => {}); // the mailbox overflowed: the store has it all
      case "acked": return this.#inbox.acked(frame.conversation_id, frame.seq);
      case "error": return void this.#outbox.rejected(frame.ref, frame);
      default: return undefined; // answers to requests, and types added later (§1)
    }
  }

  #accepted(sent) {
    const view = this.#outbox.accepted(sent);
    if (!view) return; // a second msg:A for a send we repeated
    // Our own message is part of the conversation: it fills its seq.
    this.#receive({
      type: "message", conversation_id: sent.conversation_id, seq: sent.seq, from: this.me, text: view.text,
      time: sent.time, client_id: view.id,
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
