// REST calls to the WebIM API: JSON in and out, the credential as a Bearer token, and errors as
// TransportError with the HTTP status and the API's stable code (docs/protocol.md §8).

export class TransportError extends Error {
  constructor(message, { status = null, code = null } = {}) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(apiUrl, { fetchImpl = globalThis.fetch.bind(globalThis) } = {}) {
    this.apiUrl = apiUrl.replace(/\/$/, "");
    this.fetch = fetchImpl;
  }

  /** signal: to abort (a held poll); keepalive: may outlive the page (closing on the way out). */
  async call(method, path, { token = null, body = undefined, signal = undefined, keepalive = false } = {}) {
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
