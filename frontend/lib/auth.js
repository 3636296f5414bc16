// Who this browser is (docs/identity.md). The credential is a token the server issued (a
// visitor), the local stack issued (development login) or the host site issued (its user);
// the client never claims an identity itself. The token is kept in localStorage, so every tab
// of the site is the same person, and a visitor who comes back is the same visitor.

import { TransportError } from "./http.js";

const STORAGE_KEY = "webim.session";

/**
 * The credential of this browser. `mode` says how it was obtained:
 *   "visitor": minted by the server, renewable; "dev": development login (local stack only);
 *   "host": from the host site's token endpoint (`hostTokenUrl`, called with the site's cookies).
 */
/** @typedef {import("./ids.js").Identity} Identity */
/** @typedef {{mode: string, token: string, identity: Identity}} Saved */

export class Session {
  /**
   * @param {{api: import("./http.js").Api, storage?: Storage, storageKey?: string, hostTokenUrl?: string | null,
   *   fetchImpl?: import("./http.js").Fetch | null}} options
   */
  constructor({ api, storage = globalThis.localStorage, storageKey = STORAGE_KEY, hostTokenUrl = null, fetchImpl = null }) {
    this.api = api;
    this.storage = storage;
    this.storageKey = storageKey;
    this.hostTokenUrl = hostTokenUrl;
    this.fetch = fetchImpl ?? globalThis.fetch?.bind(globalThis);
    this.saved = this.#load();
    /** @type {((identity: Identity) => void) | null} */
    this.onIdentityChange = null;
  }

  get identity() {
    return this.saved?.identity ?? null;
  }

  get mode() {
    return this.saved?.mode ?? null;
  }

  /** The token to connect with; becomes a visitor (or the host site's user) the first time. */
  async token() {
    if (!this.saved) {
      if (this.hostTokenUrl) await this.signInHost();
      else await this.signInVisitor();
    }
    return /** @type {Saved} */ (this.saved).token;
  }

  async signInVisitor() {
    const issued = await this.api.call("POST", "/identity/visitor");
    return this.#keep("visitor", issued);
  }

  /** @param {string} name */
  async signInDev(name) {
    const issued = await this.api.call("POST", "/identity/dev-login", { body: { name } });
    return this.#keep("dev", issued);
  }

  async signInHost() {
    const response = await this.fetch(/** @type {string} */ (this.hostTokenUrl), { credentials: "include" });
    if (!response.ok) throw new TransportError(`host token endpoint: HTTP ${response.status}`, { status: response.status });
    const { token } = await response.json();
    const me = await this.api.call("GET", "/identity/me", { token });
    return this.#keep("host", { token, identity: me.identity });
  }

  /** "ok", "unauthorized" (the token is refused: refresh it) or "unreachable". */
  async check() {
    if (!this.saved) return "unauthorized";
    try {
      await this.api.call("GET", "/identity/me", { token: this.saved.token });
      return "ok";
    } catch (error) {
      return error.status === 401 ? "unauthorized" : "unreachable";
    }
  }

  /** A refused token: renew a visitor's (same visitor), fetch the host's again, or start over. */
  async refresh() {
    const mode = this.mode;
    if (mode === "visitor") {
      try {
        const renewed = await this.api.call("POST", "/identity/visitor/renew", { token: this.saved?.token });
        return this.#keep("visitor", renewed);
      } catch (error) {
        if (error.status !== 401) throw error;
      }
    }
    if (mode === "host" || this.hostTokenUrl) return this.signInHost();
    return this.signInVisitor(); // a new person: onIdentityChange tells the page
  }

  signOut() {
    this.saved = null;
    this.storage.removeItem(this.storageKey);
  }

  /** @param {string} mode @param {{token: string, identity: Identity}} issued @returns {Identity} */
  #keep(mode, issued) {
    const before = this.saved?.identity;
    this.saved = { mode, token: issued.token, identity: issued.identity };
    if (before && (before.kind !== issued.identity.kind || before.id !== issued.identity.id)) {
      queueMicrotask(() => this.onIdentityChange?.(issued.identity)); // e.g. a refused token became a new visitor
    }
    this.storage.setItem(this.storageKey, JSON.stringify(this.saved));
    return this.saved.identity;
  }

  /** @returns {Saved | null} */
  #load() {
    try {
      const saved = JSON.parse(this.storage.getItem(this.storageKey) ?? "null");
      return saved?.token && saved?.identity ? saved : null;
    } catch {
      return null;
    }
  }
}
