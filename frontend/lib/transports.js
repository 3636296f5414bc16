// Two thin transports over one protocol (docs/protocol.md §2, §2b). Both expose:
//   open() -> Promise (rejects if the transport could not be opened), send(frame) -> boolean,
//   close(), onframe(frame), onclose({code, reason}).
// Everything about acks, order and retries lives above them, in the client.

import { Api, TransportError } from "./http.js";

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

const POLL_RETRIES = 3; // network failures in a row before the connection counts as lost

export class LongPollTransport {
  kind = "longpoll";
  /** @type {FrameHandler} */
  onframe = () => {};
  /** @type {CloseHandler} */
  onclose = () => {};
  /** @type {string | null} */
  #connectionId = null;
  #cursor = 0;
  #base = 1;
  #closed = false;
  /** @type {AbortController | null} */
  #abort = null;

  /**
   * @param {string} apiUrl @param {string} token
   * @param {{fetchImpl?: import("./http.js").Fetch, waitSeconds?: number, timers?: Timers}} [options]
   */
  constructor(apiUrl, token, { fetchImpl = globalThis.fetch.bind(globalThis), waitSeconds = 20, timers = globalThis } = {}) {
    this.api = new Api(apiUrl, { fetchImpl });
    this.token = token;
    this.waitSeconds = waitSeconds;
    this.timers = timers;
  }

  async open() {
    const opened = await this.#call("/lp/open", undefined);
    this.#connectionId = opened.connection_id;
    this.#base = opened.base;
    this.#cursor = opened.base - 1;
    this.#pollForever();
  }

  /** keepalive: the request may outlive the page (the acks flushed on the way out). @param {Frame} frame */
  send(frame, { keepalive = false } = {}) {
    if (this.#closed || !this.#connectionId) return false;
    this.#call(`/lp/send?connection_id=${encodeURIComponent(this.#connectionId)}`, frame, { keepalive })
      .then((answer) => { for (const item of answer.frames ?? []) this.#deliver(item); })
      .catch((error) => { if (error.status === 410) this.#lost(410, "connection_gone"); });
    // A lost request is retried by whoever sent the frame (the ack queue, request timeouts).
    return true;
  }

  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort?.abort();
    if (this.#connectionId) {
      this.#call("/lp/close", { connection_id: this.#connectionId }, { keepalive: true }).catch(() => {});
    }
  }

  async #pollForever() {
    let failures = 0;
    while (!this.#closed) {
      try {
        const abort = this.#abort = new AbortController();
        const answer = await this.#call("/lp/poll", {
          connection_id: this.#connectionId, cursor: this.#cursor, base: this.#base, wait: this.waitSeconds,
        }, { signal: abort.signal });
        failures = 0;
        if (this.#closed) return;
        this.#base = answer.base;
        answer.frames.forEach((/** @type {Frame} */ frame, /** @type {number} */ index) => {
          this.#deliver(frame);
          this.#cursor = answer.base + index; // processed: the next poll releases it
        });
      } catch (error) {
        if (this.#closed) return;
        if (error.status === 410 || error.status === 401 || error.status === 403) {
          this.#lost(error.status, error.code);
          return;
        }
        failures += 1;
        if (failures >= POLL_RETRIES) { this.#lost(0, "network"); return; }
        await new Promise((resolve) => { this.timers.setTimeout(() => resolve(undefined), 500 * failures); });
      }
    }
  }

  /** @param {Frame} frame */
  #deliver(frame) {
    if (!this.#closed) this.onframe(frame);
  }

  /** @param {number} code @param {string} reason */
  #lost(code, reason) {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort?.abort();
    this.onclose({ code, reason });
  }

  /** @param {string} path @param {unknown} body @param {{signal?: AbortSignal, keepalive?: boolean}} [options] */
  #call(path, body, { signal, keepalive = false } = {}) {
    return this.api.call("POST", path, { token: this.token, body, signal, keepalive });
  }
}
