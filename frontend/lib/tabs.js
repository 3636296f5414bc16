// One connection for all tabs of one identity (the seed's multi-tab design): the tabs elect a
// leader, the leader alone runs a ChatClient with the connection, and every other tab sends and
// receives through it over a bus. When the leader closes or crashes another tab is elected
// (Web Locks release a dead tab's lock at once), its client pulls what was missed and re-sends
// what was not stored yet (the outbox is kept in localStorage), so nothing is lost; tabs drop
// what they already show by (conversation, seq), so nothing is shown twice.
//
// Transport between tabs: BroadcastChannel, or localStorage "storage" events where it is missing.
// Election: the Web Locks API, or a lease renewed in localStorage where it is missing.

import { Emitter } from "./emitter.js";
import { GROUP_CHANGES } from "./groups.js";
import { idFactory } from "./ids.js";
import { PhotoSender } from "./photos.js";
import { Typing } from "./typing.js";
import { assertSendable } from "./text.js";

const BEAT_MS = 1000; // the leader says it is alive this often
const SILENCE_MS = 6000; // a visible tab takes over from a leader silent this long (hung)
const EVENTS = ["status", "identity", "message", "outgoing", "delivered", "read", "presence", "typing", "seen", "settings", "gone",
  "blocked", "message_deleted", "banned"];
const METHODS = new Set(["send", "resend", "conversations", "history", "markRead", "presence", "unsettled",
  "groupMembers", "receipts", "flushAcks", "typing", "settings", "mediaUrl", "requestUpload", "typingNow",
  "refreshDelivered", "request", "block", "unblock", "report", "deleteMessage", ...Object.keys(GROUP_CHANGES)]);
const CHANGE_TIMEOUT_MS = 60_000; // a group change: the leader may try it 4 times, 10 s each, plus waits
/** @typedef {{id?: string | null}} ChangeOptions a group change's id (its idempotency key) */

/** @typedef {import("./ids.js").Identity} Identity */
/** @typedef {import("./transports.js").Timers} Timers */
/** @typedef {Record<string, any>} BusMessage a message between tabs: {type, from, ...} */
/**
 * The tabs' bus: post to every other tab of the identity.
 * @typedef {{kind: string, onmessage: (message: BusMessage) => void, post: (message: BusMessage) => void, close: () => void}} Bus
 */
/**
 * Who leads: start(onLeader, onLost); steal (Web Locks only) takes over from a hung leader.
 * @typedef {object} Elector
 * @property {string} kind
 * @property {(onLeader: () => void, onLost?: () => void) => void} start
 * @property {(onLeader: () => void, onLost?: () => void) => void} [steal]
 * @property {() => void} stop
 */
/**
 * A call from a follower tab waiting for the leader's answer.
 * @typedef {{method: string, args: unknown[], resolve: (value: any) => void, reject: (error: Error) => void, timer: any}} Call
 */

/**
 * @param {string} name
 * @param {{BroadcastChannelImpl?: typeof BroadcastChannel, storage?: Storage, target?: Pick<Window, "addEventListener" | "removeEventListener">}} [options]
 * @returns {Bus}
 */
export function createBus(name, { BroadcastChannelImpl = globalThis.BroadcastChannel, storage = globalThis.localStorage,
  target = globalThis } = {}) {
  if (BroadcastChannelImpl) {
    const channel = new BroadcastChannelImpl(name);
    let open = true;
    /** @type {Bus} */
    const bus = {
      kind: "broadcast",
      onmessage: () => {},
      post: (message) => { if (open) channel.postMessage(message); }, // closed: the tab is going away
      close: () => { open = false; channel.close(); },
    };
    channel.onmessage = (event) => bus.onmessage(event.data);
    return bus;
  }
  const key = `${name}.bus`;
  /** @param {StorageEvent} event */
  const listener = (event) => {
    if (event.key !== key || !event.newValue) return;
    try { bus.onmessage(JSON.parse(event.newValue).message); } catch { /* a torn write: ignore */ }
  };
  /** @type {Bus} */
  const bus = {
    kind: "storage",
    onmessage: () => {},
    // A nonce makes every write a change, so every message fires a "storage" event elsewhere.
    post: (message) => storage.setItem(key, JSON.stringify({ message, nonce: Math.random() })),
    close: () => target.removeEventListener("storage", listener),
  };
  target.addEventListener("storage", listener);
  return bus;
}

/**
 * Web Locks: the lock is held while the tab lives; the browser frees it when the tab goes.
 * A tab that hangs keeps it, so a live tab may take it (`steal`); the hung one, if it ever
 * runs again, learns it lost the lock (`onLost`) and waits in line again.
 * @param {string} name @param {LockManager} [locks] @returns {Elector}
 */
export function lockElector(name, locks = globalThis.navigator?.locks) {
  /** @type {((value?: unknown) => void) | null} */
  let release = null;
  let held = false;
  /** @type {AbortController | null} */
  let waiting = null; // the AbortController of our request still in line
  /** @param {{steal?: boolean}} options @param {() => void} onLeader @param {() => void} [onLost] */
  const request = (options, onLeader, onLost) => {
    const controller = new AbortController();
    waiting = options.steal ? null : controller;
    locks.request(name, options.steal ? options : { ...options, signal: controller.signal }, () => new Promise((resolve) => {
      waiting = null;
      held = true;
      release = resolve;
      onLeader();
    })).catch(() => {
      if (!held) return; // left the line (aborted)
      held = false; // stolen from us: step down, then wait in line again
      release = null;
      onLost?.();
      request({}, onLeader, onLost);
    });
  };
  return {
    kind: "locks",
    start(onLeader, onLost) { request({}, onLeader, onLost); },
    steal(onLeader, onLost) {
      waiting?.abort(); // one request per tab: leave the line before taking the lock
      request({ steal: true }, onLeader, onLost);
    },
    stop() { waiting?.abort(); held = false; release?.(); },
  };
}

/**
 * Without Web Locks: a lease in localStorage, renewed every second, expiring after three.
 * @param {string} name
 * @param {{storage?: Storage, timers?: Timers, now?: () => number, tabId: string, ttlMs?: number, beatMs?: number}} options
 * @returns {Elector}
 */
export function leaseElector(name, { storage = globalThis.localStorage, timers = globalThis, now = () => Date.now(),
  tabId, ttlMs = 3000, beatMs = 1000 }) {
  const key = `${name}.lease`;
  let leader = false;
  /** @type {any} */
  let timer = null;
  /** @returns {{tab: string, until: number} | null} */
  const read = () => { try { return JSON.parse(storage.getItem(key) ?? "null"); } catch { return null; } };
  /** @param {() => void} onLeader @param {() => void} [onLost] */
  const beat = (onLeader, onLost) => {
    const lease = read();
    if (leader && lease?.tab !== tabId) { leader = false; onLost?.(); } // we hung and it expired
    if (!lease || lease.until < now() || lease.tab === tabId) {
      storage.setItem(key, JSON.stringify({ tab: tabId, until: now() + ttlMs }));
      // Two tabs may write at once: the last write wins, and only its tab sees itself.
      timers.setTimeout(() => {
        if (!leader && read()?.tab === tabId) { leader = true; onLeader(); }
      }, 50);
    }
    timer = timers.setTimeout(() => beat(onLeader, onLost), beatMs);
  };
  return {
    kind: "lease",
    start(onLeader, onLost) { beat(onLeader, onLost); },
    stop() {
      timers.clearTimeout(timer);
      if (leader && read()?.tab === tabId) storage.removeItem(key);
    },
  };
}

/** @typedef {import("./client.js").ChatClient} ChatClient */
/** @typedef {{state: string, transport: string | null, leader: boolean}} Status */

/**
 * @typedef {object} SharedClientOptions
 * @property {string} name @property {() => ChatClient} createClient @property {Bus} bus
 * @property {Elector} elector @property {string} [tabId] @property {Timers} [timers]
 * @property {number} [callTimeoutMs] @property {() => number} [now] @property {() => boolean} [visible]
 * @property {Partial<import("./photos.js").PhotoSenderOptions>} [media]
 */

export class SharedClient extends Emitter {
  isLeader = false;
  /** @type {Identity | null} */
  me = null;
  /** @type {Status} */
  status = { state: "connecting", transport: null, leader: false };
  /** @type {ChatClient | null} */
  #client = null;
  /** @type {Map<string, Call>} */
  #calls = new Map(); // call id -> {method, args, resolve, reject, timer}
  /** @type {Set<string>} */
  #shown = new Set(); // "conversation/seq" of every message this tab was given
  /** @type {number | null} */
  #heardAt = null; // when the leader was last heard from (null: no leader known)
  #stopped = false;
  /** @type {any} */
  #watchTimer = null;
  /** @type {() => string} */
  #newId;
  /** @type {PhotoSender} */
  #photos;
  /** @type {Typing} */
  #typing;

  /** name: per identity (e.g. "webim:user:alice"); createClient(): a ChatClient, for the leader only.
   * media: PhotoSender's browser parts (prepare, upload, objectUrl), for tests.
   * @param {SharedClientOptions} options */
  constructor({ name, createClient, bus, elector, tabId = idFactory()(), timers = globalThis, callTimeoutMs = 20_000,
    now = () => Date.now(), visible = () => globalThis.document?.visibilityState !== "hidden", media = {} }) {
    super();
    this.name = name;
    this.createClient = createClient;
    this.bus = bus;
    this.elector = elector;
    this.tabId = tabId;
    this.timers = timers;
    this.callTimeoutMs = callTimeoutMs;
    this.now = now;
    this.visible = visible;
    this.#newId = idFactory(`t${tabId}`);
    // A photo is prepared and POSTed to S3 by the tab that has the file; only the `upload` and
    // `send` frames go through the leader.
    this.#photos = new PhotoSender({
      ...media,
      requestUpload: (fields) => this.#call("requestUpload", [fields]),
      send: (options) => this.send(options),
      onChange: (view) => this.emit("outgoing", view),
    });
    this.#typing = new Typing({ // throttled here already: no bus message per keystroke
      now, timers, transmit: (frame) => { this.#call("typing", [frame.conversation_id]).catch(() => {}); return true; },
    });
  }

  start() {
    this.bus.onmessage = (message) => this.#onBus(message);
    this.elector.start(() => this.#lead(), () => this.#demote());
    this.bus.post({ type: "hello", from: this.tabId });
    this.#watch();
  }

  /** Leader: a beat every second. Follower: a leader silent for 6 s while this tab is seen is hung. */
  #watch() {
    this.#watchTimer = this.timers.setTimeout(() => {
      if (this.isLeader) {
        this.bus.post({ type: "beat", from: this.tabId });
      } else if (this.#heardAt !== null && this.now() - this.#heardAt > SILENCE_MS && this.visible()
                 && this.elector.steal) {
        this.#heardAt = null;
        this.elector.steal(() => this.#lead(), () => this.#demote());
      }
      this.#watch();
    }, BEAT_MS);
  }

  /** The lock was taken by a tab that thought this one hung: hand the connection over (the
   * elector puts this tab back in line). */
  #demote() {
    if (!this.isLeader) return;
    this.isLeader = false;
    this.#client?.stop();
    this.#client = null;
    this.emit("status", this.status = { state: "connecting", transport: null, leader: false });
  }

  /** Leaving: close the connection now, so the next leader starts without waiting. */
  stop() {
    this.#stopped = true;
    this.timers.clearTimeout(this.#watchTimer);
    if (this.isLeader) {
      this.#client?.stop();
      this.bus.post({ type: "bye", from: this.tabId });
    }
    this.elector.stop();
    this.bus.close();
  }

  /**
   * A message (or a photo's, once uploaded): its view at once; the leader's client sends it.
   * @param {{id?: string, text?: string, to?: Identity | null, conversationId?: string | null, image?: object | null,
   *   local?: string | null}} options
   */
  send(options) {
    const { local, ...fields } = options; // a photo's local object URL stays in this tab
    if (!fields.image) assertSendable(fields.text);
    const id = fields.id ?? this.#newId();
    if (this.isLeader && this.#client) return this.#client.send({ ...fields, id });
    const image = fields.image ? { ...fields.image, local: local ?? null } : null;
    const view = { id, text: fields.text ?? "", to: fields.to ?? null, conversation_id: fields.conversationId ?? null,
      seq: null, time: null, state: "sending", error: null, image };
    this.emit("outgoing", view); // shown at once; the leader's events follow
    this.#call("send", [{ ...fields, id }]).catch(() => {});
    return view;
  }

  /**
   * A photo (§14.1): the view at once; this tab uploads it, the leader sends the frames.
   * @param {{file: Blob, text?: string, to?: Identity | null, conversationId?: string | null, id?: string | null}} photo
   */
  sendImage({ file, text = "", to = null, conversationId = null, id = null }) {
    return this.#photos.start({ id: id ?? this.#newId(), file, text, to, conversationId });
  }

  /** @param {string} id */
  resend(id) { return this.#photos.has(id) ? Promise.resolve(this.#photos.retry(id)) : this.#call("resend", [id]); }
  /** At most one per 3 s from this tab; the leader's client limits all tabs together. @param {string} conversationId */
  typing(conversationId) {
    return this.#typing.typed(conversationId);
  }
  // The leader's ChatClient answers these (client.js documents each); here they cross the bus.
  /** @param {object} [options] */
  settings(options = {}) { return this.#call("settings", [options]); }
  /** @param {string} conversationId @param {number} seq */
  mediaUrl(conversationId, seq) { return this.#call("mediaUrl", [conversationId, seq]); }
  /** @param {{content_type: string, size: number}} fields */
  requestUpload(fields) { return this.#call("requestUpload", [fields]); }
  /** @param {object} [options] */
  conversations(options = {}) { return this.#call("conversations", [options]); }
  /** @param {string} conversationId */
  block(conversationId) { return this.#call("block", [conversationId]); }
  /** @param {string} conversationId */
  unblock(conversationId) { return this.#call("unblock", [conversationId]); }
  /** @param {string} conversationId @param {string} reason @param {{seq?: number | null, note?: string | null, id?: string | null}} [options] */
  report(conversationId, reason, options = {}) { return this.#change("report", [conversationId, reason], options); }
  /** @param {string} conversationId @param {number} seq (§16: the leader retries it, as a change) */
  deleteMessage(conversationId, seq) { return this.#call("deleteMessage", [conversationId, seq], { timeoutMs: CHANGE_TIMEOUT_MS }); }
  /** @param {string} conversationId @param {object} [options] */
  history(conversationId, options = {}) { return this.#call("history", [conversationId, options]); }
  /** @param {string} conversationId @param {number} seq */
  markRead(conversationId, seq) { return this.#call("markRead", [conversationId, seq]); }
  /** @param {Identity[]} identities */
  presence(identities) { return this.#call("presence", [identities]); }
  async unsettled() { return [...this.#photos.unsettled(), ...await this.#call("unsettled", [])]; }
  /**
   * Who is shown typing there now: the leader's client keeps it (it has the frames), so here a promise.
   * @param {string} conversationId @returns {Promise<Identity[]>}
   */
  typingNow(conversationId) { return this.#call("typingNow", [conversationId]); }
  /** The list's receipt cursors applied to our messages, in the leader's outbox (every tab hears "outgoing"). @returns {Promise<void>} */
  refreshDelivered() { return this.#call("refreshDelivered", []); }
  /**
   * Any request, through the leader's connection. Its id is made here unless given, so a next
   * leader repeating the call sends the very same frame; the bus waits at least its timeoutMs.
   * @param {string} action @param {Record<string, any>} [fields] @param {{id?: string | null, timeoutMs?: number}} [options]
   * @returns {Promise<import("./transports.js").Frame>}
   */
  request(action, fields = {}, options = {}) {
    const id = options.id ?? this.#newId();
    return this.#call("request", [action, fields, { ...options, id }],
      { timeoutMs: Math.max(this.callTimeoutMs, options.timeoutMs ?? 0) });
  }

  // Groups: the id of a change is made here, so the leader (or the next one, should it go)
  // repeats the very same change: the server applies it once.
  /** @param {string} title @param {Identity[]} [members] @param {ChangeOptions} [options] */
  createGroup(title, members = [], options = {}) { return this.#change("createGroup", [title, members], options); }
  /** @param {string} conversationId @param {Identity[]} members @param {string} [role] @param {ChangeOptions} [options] */
  addMembers(conversationId, members, role = "member", options = {}) {
    return this.#change("addMembers", [conversationId, members, role], options);
  }
  /** @param {string} conversationId @param {Identity} member @param {ChangeOptions} [options] */
  removeMember(conversationId, member, options = {}) { return this.#change("removeMember", [conversationId, member], options); }
  /** @param {string} conversationId @param {ChangeOptions} [options] */
  leaveGroup(conversationId, options = {}) { return this.#change("leaveGroup", [conversationId], options); }
  /** @param {string} conversationId @param {string} title @param {ChangeOptions} [options] */
  renameGroup(conversationId, title, options = {}) { return this.#change("renameGroup", [conversationId, title], options); }
  /** @param {string} conversationId @param {Identity} member @param {string} role @param {ChangeOptions} [options] */
  setRole(conversationId, member, role, options = {}) { return this.#change("setRole", [conversationId, member, role], options); }
  /** @param {string} conversationId @param {object} [options] */
  groupMembers(conversationId, options = {}) { return this.#call("groupMembers", [conversationId, options]); }
  /** @param {string} conversationId @param {number} seq @param {object} [options] */
  receipts(conversationId, seq, options = {}) { return this.#call("receipts", [conversationId, seq, options]); }
  /** The leader's batched acks now (only the leader has any). */
  flushAcks() { if (this.isLeader) this.#client?.flushAcks(); }

  /** @param {string} method @param {unknown[]} args @param {ChangeOptions} options */
  #change(method, args, options) {
    const id = options.id ?? this.#newId();
    return this.#call(method, [...args, { ...options, id }], { timeoutMs: CHANGE_TIMEOUT_MS })
      .catch((error) => { throw Object.assign(error, { id: error.id ?? id }); });
  }

  /**
   * One of the leader's client's METHODS, by name (a follower's call arrives as data on the bus).
   * @param {string} method @param {unknown[]} args @returns {Promise<any>}
   */
  #invoke(method, args) {
    return Promise.resolve().then(() => {
      const client = /** @type {Record<string, (...args: unknown[]) => unknown>} */ (/** @type {unknown} */ (this.#client));
      return client[method](...args);
    });
  }

  /** @param {string} method @param {unknown[]} args @param {{timeoutMs?: number}} [options] @returns {Promise<any>} */
  #call(method, args, { timeoutMs = this.callTimeoutMs } = {}) {
    if (this.isLeader) return this.#invoke(method, args);
    return new Promise((resolve, reject) => {
      const id = this.#newId();
      const timer = this.timers.setTimeout(() => {
        this.#calls.delete(id);
        reject(Object.assign(new Error(`no answer from the tab holding the connection (${method})`), { code: "timeout" }));
      }, timeoutMs);
      this.#calls.set(id, { method, args, resolve, reject, timer });
      this.bus.post({ type: "call", from: this.tabId, id, method, args });
    });
  }

  #lead() {
    if (this.#stopped) { this.elector.stop(); return; } // granted while the tab was going away
    this.isLeader = true;
    const client = this.#client = this.createClient();
    for (const event of EVENTS) {
      client.on(event, (data) => {
        if (event === "status") data = { ...data, leader: true };
        if (event === "status") this.status = data;
        if (event === "identity") this.me = data;
        this.#deliver(event, data);
        this.bus.post({ type: "event", from: this.tabId, event, data });
      });
    }
    client.start();
    this.#announce();
    this.emit("status", this.status = { ...client.status, leader: true });
    // Calls made while another tab led and not answered: run them here (all are repeatable).
    for (const [id, call] of this.#calls) {
      this.#calls.delete(id);
      this.timers.clearTimeout(call.timer);
      this.#invoke(call.method, call.args).then(call.resolve, call.reject);
    }
  }

  #announce() {
    this.bus.post({ type: "leader", from: this.tabId, me: this.#client?.me, status: this.#client?.status });
  }

  /** @param {BusMessage} message */
  #onBus(message) {
    if (!message || message.from === this.tabId) return;
    if (this.isLeader) {
      if (message.type === "hello") this.#announce();
      if (message.type === "call") this.#serve(message);
      return;
    }
    if (["leader", "beat", "event", "result"].includes(message.type)) this.#heardAt = this.now();
    switch (message.type) {
      case "leader":
        if (message.me) this.#setMe(message.me);
        this.emit("status", this.status = { ...message.status, leader: false });
        for (const [id, call] of this.#calls) this.bus.post({ type: "call", from: this.tabId, id, method: call.method, args: call.args });
        break;
      case "bye":
        this.#heardAt = null;
        this.emit("status", this.status = { state: "connecting", transport: null, leader: false });
        break;
      case "event":
        if (message.event === "identity") this.#setMe(message.data);
        else if (message.event === "status") this.emit("status", this.status = { ...message.data, leader: false });
        else this.#deliver(message.event, message.data);
        break;
      case "result": {
        const call = message.to === this.tabId ? this.#calls.get(message.id) : null;
        if (!call) return;
        this.#calls.delete(message.id);
        this.timers.clearTimeout(call.timer);
        if (message.ok) call.resolve(message.value);
        else call.reject(Object.assign(new Error(message.error.message), { code: message.error.code, id: message.error.id ?? undefined }));
        break;
      }
      default:
    }
  }

  /** A new leader pulls again what the old one already gave us: show a message once per tab. */
  /** @param {string} event @param {any} data */
  #deliver(event, data) {
    if (event === "message") {
      const key = `${data.conversation_id}/${data.seq}`;
      if (this.#shown.has(key)) return;
      this.#shown.add(key);
    }
    this.emit(event, data);
  }

  /** @param {Identity} identity */
  #setMe(identity) {
    if (this.me && this.me.kind === identity.kind && this.me.id === identity.id) return;
    this.me = identity;
    this.emit("identity", identity);
  }

  /** @param {BusMessage} call */
  async #serve({ from, id, method, args }) {
    if (!METHODS.has(method)) return;
    try {
      const value = await this.#invoke(method, args);
      this.bus.post({ type: "result", from: this.tabId, to: from, id, ok: true, value });
    } catch (error) {
      this.bus.post({ type: "result", from: this.tabId, to: from, id, ok: false,
        error: { message: error.message, code: error.code ?? null, id: error.id ?? null } });
    }
  }
}
