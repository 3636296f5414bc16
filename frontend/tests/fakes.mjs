// Test doubles for the client library: a clock the test moves, a scripted server connection,
// in-memory storage and a bus hub standing in for BroadcastChannel between "tabs".

import { Emitter } from "../lib/emitter.js";

/** Let every queued callback, promise and bus message run (a few rounds: they chain). */
export async function settle(rounds = 10) {
  for (let i = 0; i < rounds; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

export class FakeClock {
  time = 0;
  #timers = new Map();
  #next = 1;

  setTimeout = (action, delay = 0) => {
    const id = this.#next++;
    this.#timers.set(id, { at: this.time + Math.max(0, delay), action });
    return id;
  };

  clearTimeout = (id) => { this.#timers.delete(id); };

  now = () => this.time;

  /** Move time forward, running every timer that falls due, in order, with promises settled between. */
  async advance(ms) {
    const end = this.time + ms;
    for (;;) {
      await settle();
      const due = [...this.#timers.entries()].filter(([, t]) => t.at <= end).sort(([, a], [, b]) => a.at - b.at)[0];
      if (!due) break;
      this.#timers.delete(due[0]);
      this.time = Math.max(this.time, due[1].at);
      due[1].action();
    }
    this.time = end;
    await settle();
  }

  get pending() { return this.#timers.size; }
}

/**
 * Stands in for Connection: records frames, answers requests through a handler the test sets.
 * As Connection does, an answer (returned by `answer`, or pushed later with its `ref`) settles
 * the request and is emitted as a frame too; with `timers` set, an unanswered request times out.
 */
export class FakeConnection extends Emitter {
  online = false;
  sent = [];
  keepalive = []; // frames transmitted with {keepalive: true}
  answer = () => undefined; // (frame) -> answer frame, or undefined for none
  timers = null;
  #waiting = new Map(); // frame id -> {resolve, reject, timer}

  get state() { return this.online ? "online" : "offline"; } // as Connection's

  start() { this.goOnline(); }
  stop() { this.online = false; this.#fail("stopped"); }

  goOnline(identity = { kind: "user", id: "alice" }) {
    this.online = true;
    this.emit("state", { state: "online", transport: "websocket" });
    this.emit("open", { identity, transport: "websocket", rotated: false });
  }

  goOffline() {
    this.online = false;
    this.#fail("disconnected");
    this.emit("state", { state: "offline", transport: null });
  }

  transmit(frame, { keepalive = false } = {}) {
    if (!this.online) return false;
    this.sent.push(frame);
    if (keepalive) this.keepalive.push(frame);
    return true;
  }

  async request(action, fields = {}, { id = null, timeoutMs = 10_000 } = {}) {
    if (!this.online && this.timers) await this.#whenOnline(timeoutMs); // as Connection: wait to connect
    const frame = { action, id: id ?? `r${this.sent.length}`, ...fields };
    if (!this.transmit(frame)) return Promise.reject(Object.assign(new Error("offline"), { code: "offline" }));
    return new Promise((resolve, reject) => {
      const timer = this.timers?.setTimeout(() => {
        this.#waiting.delete(frame.id);
        reject(Object.assign(new Error("timeout"), { code: "timeout" }));
      }, timeoutMs);
      this.#waiting.set(frame.id, { resolve, reject, timer });
      const answer = this.answer(frame);
      if (answer !== undefined) this.push({ ref: frame.id, ...answer });
    });
  }

  push(frame) {
    const waiting = frame.ref === undefined ? undefined : this.#waiting.get(frame.ref);
    if (waiting) {
      this.#waiting.delete(frame.ref);
      this.timers?.clearTimeout(waiting.timer);
      if (frame.type === "error") waiting.reject(Object.assign(new Error(frame.code), { code: frame.code, frame }));
      else waiting.resolve(frame);
    }
    this.emit("frame", frame);
  }

  #whenOnline(timeoutMs) {
    return new Promise((resolve) => {
      const timer = this.timers.setTimeout(() => { off(); resolve(); }, timeoutMs);
      const off = this.on("open", () => { this.timers.clearTimeout(timer); off(); resolve(); });
    });
  }

  #fail(code) {
    for (const [id, waiting] of this.#waiting) {
      this.#waiting.delete(id);
      this.timers?.clearTimeout(waiting.timer);
      waiting.reject(Object.assign(new Error(code), { code }));
    }
  }

  framesOf(action) { return this.sent.filter((f) => f.action === action); }
}

export class MemoryStorage {
  #items = new Map();
  getItem(key) { return this.#items.has(key) ? this.#items.get(key) : null; }
  setItem(key, value) { this.#items.set(key, String(value)); }
  removeItem(key) { this.#items.delete(key); }
}

/** A BroadcastChannel-like hub: messages reach every other bus, asynchronously, cloned. */
export class BusHub {
  #buses = new Set();
  bus() {
    const bus = { onmessage: () => {}, post: (m) => this.#post(bus, m), close: () => this.#buses.delete(bus) };
    this.#buses.add(bus);
    return bus;
  }
  #post(from, message) {
    const copy = structuredClone(message);
    for (const bus of this.#buses) if (bus !== from) setImmediate(() => this.#buses.has(bus) && bus.onmessage(copy));
  }
}

/** Leadership handed out by the test, like a Web Lock: one holder, the next waiter when it goes. */
export class LockHub {
  #waiting = [];
  holder = null;
  elector() {
    const entry = { onLeader: null, onLost: null };
    return {
      start: (onLeader, onLost) => { Object.assign(entry, { onLeader, onLost }); this.#waiting.push(entry); this.#grant(); },
      steal: (onLeader, onLost) => {
        Object.assign(entry, { onLeader, onLost });
        const robbed = this.holder;
        this.#waiting = this.#waiting.filter((e) => e !== entry);
        this.holder = entry;
        robbed?.onLost?.();
        if (robbed) this.#waiting.push(robbed); // back in line, as Web Locks' elector does
        entry.onLeader();
      },
      stop: () => this.release(entry),
      entry,
    };
  }
  release(entry = this.holder) {
    this.#waiting = this.#waiting.filter((e) => e !== entry);
    if (this.holder === entry) { this.holder = null; this.#grant(); }
  }
  #grant() {
    if (this.holder || this.#waiting.length === 0) return;
    this.holder = this.#waiting.shift();
    this.holder.onLeader();
  }
}

export function message(conversationId, seq, extra = {}) {
  return { type: "message", conversation_id: conversationId, seq, from: { kind: "user", id: "bob" },
    text: `m${seq}`, time: 1000 + seq, client_id: `b-${seq}`, ...extra };
}
