// REST calls to the WebIM API: JSON in and out, the credential as a Bearer token, and errors as
// TransportError with the HTTP status and the API's stable code (docs/protocol.md §8).

export class TransportError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number | null, code?: string | null}} [details] the HTTP status; the API's stable code
   */
  constructor(message, { status = null, code = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** @typedef {typeof globalThis.fetch} Fetch */

/**
 * @typedef {object} CallOptions
 * @property {string | null} [token] the credential (Bearer)
 * @property {unknown} [body] sent as JSON
 * @property {AbortSignal} [signal]
 * @property {boolean} [keepalive]
 */

export class Api {
  /** @param {string} apiUrl @param {{fetchImpl?: Fetch}} [options] */
  constructor(apiUrl, { fetchImpl = globalThis.fetch.bind(globalThis) } = {}) {
    this.apiUrl = apiUrl.replace(/\/$/, "");
    this.fetch = fetchImpl;
  }

  /**
   * signal: to abort (a held poll); keepalive: may outlive the page (closing on the way out).
   * @param {string} method @param {string} path @param {CallOptions} [options]
   * @returns {Promise<any>} the answer's JSON (its shape is the route's: docs/protocol.md §8)
   */
  async call(method, path, { token = null, body = undefined, signal = undefined, keepalive = false } = {}) {
    /** @type {Record<string, string>} */
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await this.fetch(`${this.apiUrl}${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal, keepalive,
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new TransportError(answer.error?.message ?? `HTTP ${response.status}`, {
        status: response.status, code: answer.error?.code ?? null,
      });
    }
    return answer;
  }
}
