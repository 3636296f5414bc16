// Two thin transports over one protocol (docs/protocol.md §2, §2b). Both expose:
//   open() -> Promise (rejects if the transport could not be opened), send(frame) -> boolean,
//   close(), onframe(frame), onclose({code, reason}).
// Everything about acks, order and retries lives above them, in the client.

import { Api, TransportError } from "./http.js";
import { Rings } from "./rings.js";

/**
 * A frame of the protocol (docs/protocol.md §3): a JSON object whose fields depend on its `type`
 * or `action`, read field by field where it is handled.
 * @typedef {Record<string, any>} Frame
 */
/** @typedef {{code: number, reason: string}} CloseInfo */
/** The clock the transports and the client wait on (the page's, or a fake one in tests). @typedef {{setTimeout: (callback: () => void, ms: number) => any, clearTimeout: (timer: any) => void}} Timers */
/** @typedef {(frame: Frame) => void} FrameHandler */
/** @typedef {(info: CloseInfo) => void} CloseHandler */

export class WebSocketTransport {
  kind = "websocket";
  /** @type {FrameHandler} */
  onframe = () => {};
  /** @type {CloseHandler} */
  onclose = () => {};
  /** @type {WebSocket | null} */
  #socket = null;
  #closed = false;

  /**
   * @param {string} websocketUrl @param {string} token
   * @param {{WebSocketImpl?: typeof WebSocket, openTimeoutMs?: number, timers?: Timers}} [options]
   */
  constructor(websocketUrl, token, { WebSocketImpl = globalThis.WebSocket, openTimeoutMs = 8000, timers = globalThis } = {}) {
    this.url = `${websocketUrl}${websocketUrl.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
    this.WebSocketImpl = WebSocketImpl;
    this.openTimeoutMs = openTimeoutMs;
    this.timers = timers;
  }

  /** @returns {Promise<void>} */
  open() {
    return new Promise((resolve, reject) => {
      let opened = false;
      let socket;
      try {
        socket = new this.WebSocketImpl(this.url);
      } catch (error) {
        reject(new TransportError(`websocket refused: ${error.message}`));
        return;
      }
      this.#socket = socket;
      // A proxy that swallows the upgrade never answers: give up and let the caller fall back.
      const timer = this.timers.setTimeout(() => {
        if (!opened) { reject(new TransportError("websocket open timed out")); this.close(); }
      }, this.openTimeoutMs);
      socket.onopen = () => { opened = true; this.timers.clearTimeout(timer); resolve(); };
      socket.onmessage = (event) => {
        let frame;
        try { frame = JSON.parse(event.data); } catch { return; } // not ours: ignore
        if (frame && typeof frame === "object") this.onframe(frame);
      };
      socket.onerror = () => {}; // `close` follows and says more
      socket.onclose = (event) => {
        this.timers.clearTimeout(timer);
        if (!opened) { reject(new TransportError(`websocket closed before opening (${event.code})`)); return; }
        if (this.#closed) return;
        this.#closed = true;
        this.onclose({ code: event.code, reason: event.reason });
      };
    });
  }

  /** @param {Frame} frame */
  send(frame) {
    if (this.#closed || !this.#socket || this.#socket.readyState !== 1) return false;
    this.#socket.send(JSON.stringify(frame));
    return true;
  }

  close() {
    this.#closed = true;
    try { this.#socket?.close(1000, "bye"); } catch { /* already closed */ }
  }
}

const POLL_RETRIES = 3; // polls failed in a row (network, 5xx, 429) before the connection counts as lost
const FATAL = [400, 401, 403, 404, 410]; // a poll refused for good: the line is gone (the client reconnects)

/**
 * Long poll, protocol version 4 (docs/protocol.md §2b). One **wait** is always open (`POST
 * wait_url` with the connection's `wait_token`: API Gateway holds it on the connection's SQS
 * queue, no function runs); its rings go through `Rings` (rings.js: order, duplicates, gaps). A
 * **poll** answers at once with every frame still waiting: the transport polls on a gap, a ring
 * without a copy or an unreadable one, after any wait that did not end with a 200 (a lost wait
 * answer's rings are not handed out again: the poll returns its frames), to release what it
 * processed (when no send carried the cursor within `releaseMs`), and at least every
 * `heartbeat` seconds (only polls move the connection's deadline). A send carries the cursor
 * when a release is owed. 410 on a poll or a send ends the line: the client reconnects and syncs.
 */
export class LongPollTransport {
  kind = "longpoll";
  /** @type {FrameHandler} */
  onframe = () => {};
  /** @type {CloseHandler} */
  onclose = () => {};
  /** answered polls and waits answered 200 (tests) */
  polls = 0;
  waits = 0;
  /** @type {string | null} */
  #connectionId = null;
  #base = 1;
  #rings = new Rings(1);
  #closed = false;
  /** @type {string | null} */
  #waitUrl = null;
  #waitToken = "";
  #heartbeatMs = 240_000;
  /** @type {AbortController | null} */
  #abort = null;
  /** @type {Promise<unknown>} polls run one at a time, in the order asked */
  #pollChain = Promise.resolve();
  /** @type {any} */
  #releaseTimer = null;
  /** @type {any} */
  #beatTimer = null;

  /**
   * waitSeconds: the longest API Gateway holds a wait (20 s); a wait not answered 15 s after
   * that is given up (and polled for). releaseMs: how long a release waits for a send to carry it.
   * @param {string} apiUrl @param {string} token
   * @param {{fetchImpl?: import("./http.js").Fetch, waitSeconds?: number, releaseMs?: number, timers?: Timers}} [options]
   */
  constructor(apiUrl, token, { fetchImpl = globalThis.fetch.bind(globalThis), waitSeconds = 20, releaseMs = 1000, timers = globalThis } = {}) {
    this.api = new Api(apiUrl, { fetchImpl });
    this.fetchImpl = fetchImpl;
    this.token = token;
    this.waitSeconds = waitSeconds;
    this.releaseMs = releaseMs;
    this.timers = timers;
  }

  /** The number of the last frame processed. */
  get cursor() { return this.#rings.processed; }

  async open() {
    const opened = await this.#call("/lp/open", undefined);
    this.#connectionId = opened.connection_id;
    this.#base = opened.base;
    this.#rings = new Rings(opened.base);
    this.#waitUrl = opened.wait_url ?? null;
    this.#waitToken = opened.wait_token ?? "";
    this.#heartbeatMs = (opened.heartbeat ?? 240) * 1000;
    this.#beatLater();
    this.#waitForever();
  }

  /** keepalive: the request may outlive the page (the acks flushed on the way out). @param {Frame} frame */
  send(frame, { keepalive = false } = {}) {
    if (this.#closed || !this.#connectionId) return false;
    let path = `/lp/send?connection_id=${encodeURIComponent(this.#connectionId)}`;
    const cursor = this.#rings.owes ? this.#rings.processed : null;
    if (cursor !== null) path += `&cursor=${cursor}&base=${this.#base}`; // the release owed travels with it
    this.#call(path, frame, { keepalive })
      .then((answer) => {
        if (cursor !== null) this.#rings.released(cursor);
        for (const item of answer.frames ?? []) this.#deliver(item);
      })
      .catch((error) => { if (error.status === 410) this.#lost(410, "connection_gone"); });
    // A lost request is retried by whoever sent the frame (the ack queue, request timeouts).
    return true;
  }

  close() {
    if (this.#closed) return;
    this.#stop();
    if (this.#connectionId) {
      this.#call("/lp/close", { connection_id: this.#connectionId }, { keepalive: true }).catch(() => {});
    }
  }

  async #waitForever() {
    let failed = 0;
    while (!this.#closed) {
      if (this.#waitUrl === null) { // a server without a wait API: polls alone carry the frames
        await this.#sleep(this.releaseMs);
        if (!(await this.#poll())) return;
        continue;
      }
      const outcome = await this.#waitOnce();
      if (this.#closed) return;
      if (outcome === "done") { failed = 0; continue; }
      // a failed wait, or rings that ask for it: the poll returns whatever the wait did not give
      if (!(await this.#poll())) return;
      failed = outcome === "failed" ? failed + 1 : 0;
      if (failed > 1) await this.#sleep(Math.min(500 * failed, 5000)); // the wait keeps failing: no hot loop
    }
  }

  /**
   * One wait: "done" (answered 200, its rings need no poll), "poll" (answered 200, its rings ask
   * for one) or "failed" (anything else).
   * @returns {Promise<"done" | "poll" | "failed">}
   */
  async #waitOnce() {
    const abort = this.#abort = new AbortController();
    const timer = this.timers.setTimeout(() => abort.abort(), (this.waitSeconds + 15) * 1000);
    try {
      const response = await this.fetchImpl(/** @type {string} */ (this.#waitUrl), {
        method: "POST", headers: { Authorization: `Bearer ${this.#waitToken}` }, signal: abort.signal,
      });
      if (response.status !== 200) return "failed"; // 401/403 (token), 5xx/400 (the queue): the poll says
      const answer = await response.json().catch(() => null); // not JSON: the rings ask for a poll
      if (this.#closed) return "failed";
      this.waits += 1;
      const taken = this.#rings.waited(answer);
      for (const frame of taken.frames) this.#deliver(frame);
      this.#releaseSoon();
      return taken.poll ? "poll" : "done";
    } catch {
      return "failed"; // lost, timed out, aborted: its rings (if any) are invisible now
    } finally {
      this.timers.clearTimeout(timer);
    }
  }

  /**
   * One poll, answered at once (after the one in flight): releases up to the cursor, moves the
   * deadline, returns every frame still waiting and a fresh wait token. Retried on a network
   * failure, a 5xx or a 429. Resolves false when the line is lost (refused, or failing).
   * @returns {Promise<boolean>}
   */
  #poll() {
    const run = () => this.#pollOnce();
    const next = this.#pollChain.then(run, run);
    this.#pollChain = next.catch(() => {});
    return next;
  }

  async #pollOnce() {
    for (let attempt = 1; !this.#closed; attempt += 1) {
      const cursor = this.#rings.processed;
      try {
        const answer = await this.#call("/lp/poll", { connection_id: this.#connectionId, cursor, base: this.#base });
        if (this.#closed) return false;
        this.#polled(cursor, answer);
        return true;
      } catch (error) {
        if (this.#closed) return false;
        if (FATAL.includes(error.status)) { this.#lost(error.status, error.code ?? "refused"); return false; }
        if (attempt >= POLL_RETRIES) { this.#lost(0, "network"); return false; }
        await this.#sleep(500 * attempt);
      }
    }
    return false;
  }

  /** @param {number} cursor @param {any} answer */
  #polled(cursor, answer) {
    this.polls += 1;
    this.#rings.released(cursor);
    this.#base = answer.base;
    this.#waitToken = answer.wait_token ?? this.#waitToken; // the newest one
    this.#beatLater();
    for (const frame of this.#rings.polled(answer.base, answer.frames).frames) this.#deliver(frame);
    this.#releaseSoon();
  }

  /** The release owed: a send that carries the cursor within `releaseMs` does it; otherwise a poll (coalesced). */
  #releaseSoon() {
    if (this.#closed || !this.#rings.owes || this.#releaseTimer !== null) return;
    this.#releaseTimer = this.timers.setTimeout(() => {
      this.#releaseTimer = null;
      if (this.#rings.owes) this.#poll();
    }, this.releaseMs);
  }

  /** A poll at least every `heartbeat` seconds: the waits do not move the connection's deadline. */
  #beatLater() {
    if (this.#beatTimer !== null) this.timers.clearTimeout(this.#beatTimer);
    this.#beatTimer = this.timers.setTimeout(() => { this.#beatTimer = null; this.#poll(); }, this.#heartbeatMs);
  }

  /** @param {number} ms */
  #sleep(ms) {
    return new Promise((resolve) => { this.timers.setTimeout(() => resolve(undefined), ms); });
  }

  /** @param {Frame} frame */
  #deliver(frame) {
    if (!this.#closed) this.onframe(frame);
  }

  #stop() {
    this.#closed = true;
    this.#abort?.abort();
    if (this.#releaseTimer !== null) this.timers.clearTimeout(this.#releaseTimer);
    if (this.#beatTimer !== null) this.timers.clearTimeout(this.#beatTimer);
    this.#releaseTimer = this.#beatTimer = null;
  }

  /** @param {number} code @param {string} reason */
  #lost(code, reason) {
    if (this.#closed) return;
    this.#stop();
    this.onclose({ code, reason });
  }

  /** @param {string} path @param {unknown} body @param {{signal?: AbortSignal, keepalive?: boolean}} [options] */
  #call(path, body, { signal, keepalive = false } = {}) {
    return this.api.call("POST", path, { token: this.token, body, signal, keepalive });
  }
}
