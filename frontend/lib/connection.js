// The message connection: one transport at a time, chosen and kept alive here.
// WebSocket first; when the server is reachable over HTTP but a WebSocket cannot open (a proxy
// blocks it), long poll, with WebSocket tried again every few minutes. Reconnects with
// exponential backoff and jitter. On WebSocket, after keepaliveMs (9 minutes) in which nothing was
// sent, a `keepalive` frame, which API Gateway takes itself and does not answer (no Lambda, one
// billed message: the gateway closes idle connections after 10 minutes), sent and forgotten; and a
// `ping`, the presence heartbeat, at most every heartbeatMs (36 minutes; §6.1), whose `pong` proves
// the line; a ping is a frame too. On long poll (every poll is a heartbeat) no keepalive frames: a
// ping every keepaliveMs only when keepaliveFields() asks for something (the group tail check,
// §13.8). A planned move to a fresh connection before the gateway's 2-hour limit, opening the new
// one before closing the old (docs/protocol.md §2).
// A dead line is found without waiting for the server (§11): an unanswered ping (the heartbeat, or
// the one sent when the page comes back: visible again, or the network back, at most one a
// wakePingMs); a frame that expects an answer (a send, a request) followed by silenceMs without any
// frame, then an unanswered ping; or any `connection_gone` (the server forgot this connection):
// reconnect. A keepalive expects nothing: an unanswered one says nothing.

import { Emitter } from "./emitter.js";
import { idFactory } from "./ids.js";
import { LongPollTransport, WebSocketTransport } from "./transports.js";

export const CONNECTING = "connecting";
export const ONLINE = "online";
export const OFFLINE = "offline";

/** @typedef {import("./transports.js").Frame} Frame */
/** @typedef {import("./transports.js").Timers} Timers */
/** @typedef {import("./transports.js").CloseInfo} CloseInfo */
/**
 * What both transports offer (transports.js).
 * @typedef {object} Transport
 * @property {string} kind
 * @property {(frame: Frame) => void} onframe
 * @property {(info: CloseInfo) => void} onclose
 * @property {() => Promise<void>} open
 * @property {(frame: Frame, options?: {keepalive?: boolean}) => boolean} send
 * @property {() => void} close
 */
/** @typedef {{websocketUrl: string, apiUrl: string, websocketLimits?: {idleSeconds?: number, maxSeconds?: number}}} Config */
/** @typedef {(config: Config, token: string, timers: Timers) => Transport} TransportFactory */
/** @typedef {Pick<import("./auth.js").Session, "token" | "check" | "refresh">} SessionLike */
/**
 * Where the page says it came back (the browser's globalThis; a test's stand-in): `online` on it,
 * `visibilitychange` on its document.
 * @typedef {{addEventListener?: EventTarget["addEventListener"], removeEventListener?: EventTarget["removeEventListener"],
 *   document?: {visibilityState?: string, addEventListener?: EventTarget["addEventListener"],
 *   removeEventListener?: EventTarget["removeEventListener"]}}} PageLike
 */
/**
 * @typedef {object} Waiting a request waiting for its answer
 * @property {(frame: Frame) => void} resolve @property {(error: Error) => void} reject
 * @property {any} timer @property {Transport} transport
 */

export class RequestError extends Error {
  /** @param {string} code @param {string} message @param {Frame | null} [frame] */
  constructor(code, message, frame = null) {
    super(`${code}: ${message}`);
    this.code = code;
    this.frame = frame;
  }
}

/** @type {Record<string, TransportFactory>} */
export const defaultTransports = {
  websocket: (config, token, timers) => new WebSocketTransport(config.websocketUrl, token, { timers }),
  longpoll: (config, token, timers) => new LongPollTransport(config.apiUrl, token, { timers }),
};

/** A keepalive after 9 minutes of silence (API Gateway's 10-minute idle limit less a minute); the
 * presence heartbeat every 4 of them, 36 minutes (the server's presence window is 40). The Python
 * SDK's KEEPALIVE_SECONDS and HEARTBEAT_SECONDS; the cost model names these. */
export const KEEPALIVE_MS = 540_000;
export const HEARTBEAT_MS = 2_160_000;
/** The page coming back pings at most this often (a tab flipped back and forth costs one Lambda a minute). */
export const WAKE_PING_MS = 60_000;

/**
 * When to keep the line alive and when to move to a fresh connection, from the gateway's limits
 * (config.json's `websocketLimits`; API Gateway's 10 minutes idle and 2 hours when absent): a
 * keepalive a minute before the idle limit (or at 40% of a short one, as local tests set), the
 * heartbeat every 4 keepalives, a new connection 10 minutes before the end (or at 75% of a
 * shorter lifetime: opening and proving the new one must fit in what is left, also on a slow
 * machine).
 * @param {{idleSeconds?: number, maxSeconds?: number}} [limits]
 */
export function timingsFor(limits = {}) {
  const idle = (limits.idleSeconds ?? 600) * 1000;
  const lifetime = (limits.maxSeconds ?? 7200) * 1000;
  const keepaliveMs = Math.max(idle - 60_000, idle * 0.4);
  return { keepaliveMs, heartbeatMs: 4 * keepaliveMs, maxAgeMs: Math.max(lifetime - 600_000, lifetime * 0.75) };
}

/**
 * @typedef {object} ConnectionOptions
 * @property {Config} config @property {SessionLike} session
 * @property {Record<string, TransportFactory>} [transports] @property {Timers} [timers]
 * @property {() => number} [now] @property {() => number} [random] @property {number} [keepaliveMs]
 * @property {number} [heartbeatMs]
 * @property {number} [maxAgeMs] @property {number} [requestTimeoutMs] @property {number[]} [backoffMs]
 * @property {number} [longPollForMs] @property {boolean} [forceLongPoll] @property {() => string} [newId]
 * @property {number} [silenceMs] @property {PageLike | null} [page] @property {number} [wakePingMs]
 */

export class Connection extends Emitter {
  state = OFFLINE;
  /** @type {import("./ids.js").Identity | null} */
  identity = null;
  /** @type {Transport | null} */
  #current = null;
  /** @type {Map<string, Waiting>} */
  #requests = new Map(); // frame id -> {resolve, reject, timer, transport}
  /** @type {Set<any>} */
  #timers = new Set();
  #generation = 0;
  #stopped = true;
  #ended = false; // stop() was called: nothing will open again
  /** @type {number} */
  #backoff;
  #longPollUntil = 0;
  /** @type {any} */
  #probe = null; // the silence timer: armed by a frame that expects an answer, cleared by any frame
  /** @type {WeakMap<Transport, {sentAt: number, pingAt: number}>} when each line last sent a frame, a ping */
  #lines = new WeakMap();
  #listening = false; // to the page's `online` and `visibilitychange`
  /**
   * Extra fields of the keepalive ping, or null for none (the chat client sets it: `{groups: true}`
   * while it holds a group, §13.8). On long poll, where every poll is a heartbeat already, the
   * keepalive pings only when this asks for something.
   * @type {() => Record<string, unknown> | null}
   */
  keepaliveFields = () => null;

  /**
   * config: {websocketUrl, apiUrl}; session: {token(), check(token), refresh()} (auth.js).
   * timers: {setTimeout, clearTimeout}; now() in ms; random() in [0, 1). page: where `online` and
   * `visibilitychange` come from (globalThis; null: nowhere).
   * @param {ConnectionOptions} options
   */
  constructor({
    config, session, transports = defaultTransports, timers = globalThis, now = () => Date.now(), random = Math.random,
    keepaliveMs = KEEPALIVE_MS, heartbeatMs = HEARTBEAT_MS, maxAgeMs = 110 * 60_000, requestTimeoutMs = 10_000, backoffMs = [1000, 30_000],
    longPollForMs = 10 * 60_000, forceLongPoll = false, newId = idFactory(), silenceMs = 5000,
    page = /** @type {PageLike} */ (globalThis), wakePingMs = WAKE_PING_MS,
  }) {
    super();
    this.config = config;
    this.session = session;
    this.transports = transports;
    this.timers = timers;
    this.now = now;
    this.random = random;
    this.keepaliveMs = keepaliveMs;
    this.heartbeatMs = heartbeatMs;
    this.maxAgeMs = maxAgeMs;
    this.requestTimeoutMs = requestTimeoutMs;
    this.backoffMs = backoffMs;
    this.longPollForMs = longPollForMs;
    this.forceLongPoll = forceLongPoll;
    this.newId = newId;
    this.silenceMs = silenceMs;
    this.page = page;
    this.wakePingMs = wakePingMs;
    this.#backoff = backoffMs[0];
  }

  get transportKind() {
    return this.#current?.kind ?? null;
  }

  start() {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#listen(true);
    this.#connect();
  }

  stop() {
    this.#stopped = true;
    this.#ended = true;
    this.#listen(false);
    this.#generation += 1;
    for (const timer of this.#timers) this.timers.clearTimeout(timer);
    this.#timers.clear();
    this.#heard();
    const current = this.#current;
    this.#current = null;
    current?.close();
    this.#failRequests(null, "stopped");
    this.#setState(OFFLINE);
  }

  /** Reconnect now (the browser says the network is back), unless a connection is open. */
  nudge() {
    if (!this.#stopped && this.state === OFFLINE) {
      this.#backoff = this.backoffMs[0];
      this.#connect();
    }
  }

  /**
   * The page came back (visible again, or the network is back): after a sleep or a network change
   * the socket may be half-open, and an idle line would not notice before its next heartbeat (the
   * keepalive gets no answer). A ping now (with keepaliveFields(): the group tail check too); its
   * pong proves the line, and unanswered within the request timeout the line is replaced. Not
   * when a ping went out on this line less than wakePingMs ago, nor while not online.
   */
  wake() {
    const transport = this.#current;
    if (!transport || this.state !== ONLINE) return;
    const line = this.#lines.get(transport);
    if (line && this.now() - line.pingAt < this.wakePingMs) return;
    this.#requestVia(transport, "ping", this.keepaliveFields() ?? {}, this.requestTimeoutMs)
      .catch(() => this.#lost(transport, 0, "wake"));
  }

  #onOnline = () => this.wake();
  #onVisibility = () => { if (this.page?.document?.visibilityState === "visible") this.wake(); };

  /** @param {boolean} on */
  #listen(on) {
    if (this.#listening === on || !this.page) return;
    this.#listening = on;
    const document = this.page.document;
    if (on) {
      this.page.addEventListener?.("online", this.#onOnline);
      document?.addEventListener?.("visibilitychange", this.#onVisibility);
    } else {
      this.page.removeEventListener?.("online", this.#onOnline);
      document?.removeEventListener?.("visibilitychange", this.#onVisibility);
    }
  }

  /** Hand a frame to the open transport; false when there is none. keepalive: may outlive the page. @param {Frame} frame */
  transmit(frame, { keepalive = false } = {}) {
    const transport = this.#current;
    const sent = transport?.send(frame, { keepalive }) ?? false;
    if (sent && transport) this.#sent(transport, String(frame.action));
    if (sent && frame.action === "send") this.#expectAnswer(); // `sent` (or an error) will answer it
    return sent;
  }

  /**
   * Send a frame with a fresh id and wait for the answer with that `ref`. While connecting, the
   * request waits for the connection (within its timeout) rather than failing at once.
   * id: the frame's id instead of a fresh one (a change repeated with its idempotency key).
   * @param {string} action @param {Record<string, unknown>} [fields]
   * @param {{timeoutMs?: number, id?: string | null}} [options]
   * @returns {Promise<Frame>} the answer
   */
  async request(action, fields = {}, { timeoutMs = this.requestTimeoutMs, id = null } = {}) {
    if (!this.#current && !this.#ended) await this.#whenOpen(timeoutMs);
    return this.#requestVia(this.#current, action, fields, timeoutMs, id);
  }

  /** @param {number} timeoutMs @returns {Promise<void>} */
  #whenOpen(timeoutMs) {
    return new Promise((resolve) => {
      const timer = this.timers.setTimeout(() => { off(); resolve(); }, timeoutMs);
      const off = this.on("open", () => { this.timers.clearTimeout(timer); off(); resolve(); });
    });
  }

  /**
   * @param {Transport | null} transport @param {string} action @param {Record<string, unknown>} fields
   * @param {number} timeoutMs @param {string | null} [frameId] @returns {Promise<Frame>}
   */
  #requestVia(transport, action, fields, timeoutMs, frameId = null) {
    if (!transport) return Promise.reject(new RequestError("offline", "not connected"));
    const id = frameId ?? this.newId();
    return new Promise((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        this.#requests.delete(id);
        reject(new RequestError("timeout", `no answer to ${action}`));
      }, timeoutMs);
      this.#requests.set(id, { resolve, reject, timer, transport });
      if (!transport.send({ action, id, ...fields })) {
        this.timers.clearTimeout(timer);
        this.#requests.delete(id);
        reject(new RequestError("offline", "not connected"));
        return;
      }
      this.#sent(transport, action);
      if (action !== "ping" && transport === this.#current) this.#expectAnswer();
    });
  }

  async #connect() {
    const generation = ++this.#generation;
    this.#setState(CONNECTING);
    const kind = this.#chooseKind();
    /** @type {Transport | null} */
    let transport = null;
    try {
      transport = await this.#openTransport(kind);
      if (generation !== this.#generation) { transport.close(); return; }
      this.#current = transport;
      this.#backoff = this.backoffMs[0];
      this.#opened(transport, false);
    } catch (error) {
      transport?.close();
      if (generation !== this.#generation || this.#stopped) return;
      const retryNow = await this.#diagnose(kind, error);
      if (generation !== this.#generation || this.#stopped) return;
      this.#setState(OFFLINE);
      this.#later(retryNow ? 0 : this.#nextBackoff(), () => this.#connect());
    }
  }

  /** Open a transport and prove it carries frames (a ping answered), or throw. @param {string} kind */
  async #openTransport(kind) {
    const token = await this.session.token();
    const transport = this.transports[kind](this.config, token, this.timers);
    transport.onframe = (frame) => this.#onFrame(transport, frame);
    transport.onclose = (info) => this.#onClose(transport, info);
    try {
      await transport.open();
      const pong = await this.#requestVia(transport, "ping", {}, this.requestTimeoutMs);
      this.identity = pong.identity;
      return transport;
    } catch (error) {
      transport.close();
      error.transportKind = kind;
      throw error;
    }
  }

  /** @param {Transport} transport @param {boolean} rotated */
  #opened(transport, rotated) {
    this.#setState(ONLINE);
    this.emit("open", { transport: transport.kind, identity: this.identity, rotated });
    const opened = this.now();
    this.#keepLine(transport);
    const age = transport.kind === "websocket" || this.forceLongPoll
      ? this.maxAgeMs
      : Math.max(0, this.#longPollUntil - opened); // on long poll: when to try WebSocket again
    this.#later(age, () => this.#rotate(transport));
  }

  /** A frame went out on a line: its keepalive waits for silence again (a ping is a heartbeat too). */
  /** @param {Transport} transport @param {string} action */
  #sent(transport, action) {
    const now = this.now();
    const line = this.#lines.get(transport);
    this.#lines.set(transport, { sentAt: now, pingAt: action === "ping" || !line ? now : line.pingAt });
  }

  /** The next look at the line: when its keepalive or (on WebSocket) its heartbeat may be due. */
  /** @param {Transport} transport */
  #keepLine(transport) {
    if (transport.kind !== "websocket") {
      this.#later(this.keepaliveMs, () => this.#longPollTick(transport));
      return;
    }
    const line = this.#lines.get(transport) ?? { sentAt: this.now(), pingAt: this.now() };
    const due = Math.min(line.sentAt + this.keepaliveMs, this.heartbeatMs ? line.pingAt + this.heartbeatMs : Infinity);
    this.#later(Math.max(0, due - this.now()), () => this.#lineTick(transport));
  }

  /** @param {Transport} transport */
  async #lineTick(transport) {
    if (this.#current !== transport) return;
    const line = this.#lines.get(transport) ?? { sentAt: 0, pingAt: 0 };
    const now = this.now();
    const heartbeat = this.heartbeatMs > 0 && now - line.pingAt >= this.heartbeatMs;
    if (!heartbeat && now - line.sentAt < this.keepaliveMs) {
      this.#keepLine(transport); // a frame went out meanwhile: wait for silence again
      return;
    }
    if (!heartbeat) {
      // A `keepalive`, sent and forgotten: API Gateway takes it and answers nothing (§6.1a).
      // Only a send the transport refuses (it knows it is closed) ends the line here.
      if (!transport.send({ action: "keepalive" })) {
        this.#lost(transport, 0, "keepalive");
        return;
      }
      this.#sent(transport, "keepalive");
      this.#keepLine(transport);
      return;
    }
    try {
      await this.#requestVia(transport, "ping", this.keepaliveFields() ?? {}, this.requestTimeoutMs);
      this.#keepLine(transport);
    } catch {
      this.#lost(transport, 0, "ping");
    }
  }

  /** On long poll: every poll is a heartbeat already; a ping only to ask for something (§13.8). */
  /** @param {Transport} transport */
  async #longPollTick(transport) {
    if (this.#current !== transport) return;
    const fields = this.keepaliveFields() ?? null;
    try {
      if (fields !== null) await this.#requestVia(transport, "ping", fields, this.requestTimeoutMs);
      this.#keepLine(transport);
    } catch {
      this.#lost(transport, 0, "ping");
    }
  }

  /**
   * A frame that expects an answer went out: if silenceMs pass without any frame, ping (a line the
   * server forgot answers nothing at all); an unanswered ping replaces the connection.
   */
  #expectAnswer() {
    const transport = this.#current;
    if (!this.silenceMs || this.#probe !== null || !transport) return;
    this.#probe = this.timers.setTimeout(() => {
      this.#probe = null;
      if (this.#current !== transport) return;
      this.#requestVia(transport, "ping", {}, this.requestTimeoutMs).catch(() => this.#lost(transport, 0, "silence"));
    }, this.silenceMs);
  }

  #heard() {
    if (this.#probe !== null) this.timers.clearTimeout(this.#probe);
    this.#probe = null;
  }

  /** The line is dead even if the socket is not: close it and reconnect (410: at once). */
  /** @param {Transport} transport @param {number} code @param {string} reason */
  #lost(transport, code, reason) {
    if (this.#current !== transport) return;
    transport.close();
    this.#onClose(transport, { code, reason });
  }

  /** Make before break: the new connection is open and answering before the old one closes. */
  /** @param {Transport} old */
  async #rotate(old) {
    if (this.#current !== old || this.#stopped) return;
    const generation = this.#generation;
    /** @type {Transport} */
    let fresh;
    try {
      fresh = await this.#openTransport(this.#chooseKind());
    } catch (error) {
      if (error.transportKind === "websocket" && !this.forceLongPoll) this.#longPollUntil = this.now() + this.longPollForMs;
      if (this.#current === old) this.#later(old.kind === "websocket" ? 30_000 : this.longPollForMs, () => this.#rotate(old));
      return;
    }
    if (this.#current !== old || generation !== this.#generation) { fresh.close(); return; }
    this.#current = fresh;
    this.#opened(fresh, true);
    // Answers to frames sent on the old one may still be on their way: close it a bit later.
    this.#later(5000, () => old.close());
  }

  /** After a failed open: was it the credential, the network, or a blocked WebSocket? */
  /** @param {string} kind @param {Error} error */
  async #diagnose(kind, error) {
    const verdict = await this.session.check().catch(() => "unreachable");
    if (verdict === "unauthorized") {
      await this.session.refresh().catch(() => {});
      return true;
    }
    if (verdict === "ok" && kind === "websocket" && !this.forceLongPoll) {
      // HTTP works, the WebSocket does not: something in between blocks it.
      this.#longPollUntil = this.now() + this.longPollForMs;
      this.emit("fallback", { reason: error.message });
      return true;
    }
    return false;
  }

  #chooseKind() {
    if (this.forceLongPoll || this.now() < this.#longPollUntil) return "longpoll";
    return "websocket";
  }

  /** @param {Transport} transport @param {Frame} frame */
  #onFrame(transport, frame) {
    if (transport === this.#current) this.#heard(); // the line is alive
    const waiting = frame.ref === undefined ? undefined : this.#requests.get(frame.ref);
    if (waiting) {
      this.#requests.delete(frame.ref);
      this.timers.clearTimeout(waiting.timer);
      if (frame.type === "error") waiting.reject(new RequestError(frame.code, frame.message, frame));
      else waiting.resolve(frame);
    }
    this.emit("frame", frame);
    // The server no longer knows this connection and did nothing with the frame (§8): a new
    // connection now (its pull and the outbox's resend cover the rest), not at the next keepalive.
    if (frame.type === "error" && frame.code === "connection_gone") this.#lost(transport, 410, "connection_gone");
  }

  /** @param {Transport} transport @param {CloseInfo} info */
  #onClose(transport, info) {
    this.#failRequests(transport, "disconnected");
    if (this.#current !== transport || this.#stopped) return; // an old, rotated-out connection
    this.#heard();
    this.#current = null;
    this.#generation += 1;
    this.#setState(OFFLINE);
    this.emit("close", info);
    const unauthorized = info.code === 401;
    if (unauthorized) this.session.refresh().catch(() => {});
    this.#later(info.code === 410 ? 0 : this.#nextBackoff(), () => this.#connect());
  }

  /** @param {Transport | null} transport @param {string} code */
  #failRequests(transport, code) {
    for (const [id, waiting] of this.#requests) {
      if (transport !== null && waiting.transport !== transport) continue;
      this.#requests.delete(id);
      this.timers.clearTimeout(waiting.timer);
      waiting.reject(new RequestError(code, "the connection closed"));
    }
  }

  #nextBackoff() {
    const delay = this.#backoff * (0.5 + this.random() / 2);
    this.#backoff = Math.min(this.#backoff * 2, this.backoffMs[1]);
    return delay;
  }

  /** @param {number} delayMs @param {() => void} action */
  #later(delayMs, action) {
    const timer = this.timers.setTimeout(() => { this.#timers.delete(timer); action(); }, delayMs);
    this.#timers.add(timer);
  }

  /** @param {string} state */
  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", { state, transport: state === ONLINE ? this.transportKind : null });
  }
}

