// Starting the client in a page: read /config.json, find out who this browser is, and join the
// other tabs of that identity (one of them holds the connection). Used by the chat page and the
// widget alike.

import { Session } from "./auth.js";
import { Api } from "./http.js";
import { ChatClient } from "./client.js";
import { Connection, timingsFor } from "./connection.js";
import { identityKey } from "./ids.js";
import { createBus, leaseElector, lockElector, SharedClient } from "./tabs.js";

export { identityKey, sameIdentity } from "./ids.js";
export { textProblem, codePoints } from "./text.js";

/** @param {Storage} storage @param {string} key */
function storageStore(storage, key) {
  return {
    load: () => { try { return JSON.parse(storage.getItem(key) ?? "[]"); } catch { return []; } },
    save: (/** @type {unknown[]} */ items) => storage.setItem(key, JSON.stringify(items)),
  };
}

/**
 * Until it works: a page opened while the server is unreachable starts when it comes back.
 * @template T @param {() => Promise<T>} action @returns {Promise<T>}
 */
async function retrying(action, delayMs = 1000) {
  for (;;) {
    try {
      return await action();
    } catch {
      await new Promise((resolve) => { setTimeout(resolve, delayMs); });
      delayMs = Math.min(delayMs * 2, 30_000);
    }
  }
}

/**
 * base: where config.json is (the directory of the frontend). Options for debugging and tests:
 * forceLongPoll (never WebSocket), shared (false: this tab connects on its own).
 * @param {{base: URL | string, forceLongPoll?: boolean, shared?: boolean, storage?: Storage,
 *   hostTokenUrl?: string | null}} options
 */
export async function openChat({ base, forceLongPoll = false, shared = true, storage = globalThis.localStorage,
  hostTokenUrl = null }) {
  const config = await retrying(async () => {
    const response = await fetch(new URL("config.json", base));
    if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
    return response.json();
  });
  const api = new Api(config.apiUrl);
  const session = new Session({ api, storage, hostTokenUrl: hostTokenUrl ?? config.hostTokenUrl ?? null });
  await retrying(() => session.token());
  session.onIdentityChange = () => globalThis.location?.reload(); // this tab's lock and bus are per identity
  const me = /** @type {import("./ids.js").Identity} */ (session.identity); // token() above signed in
  const name = `webim:${identityKey(me)}`;
  const createClient = () => {
    const connection = new Connection({ config, session, forceLongPoll, ...timingsFor(config.websocketLimits) });
    globalThis.addEventListener?.("online", () => connection.nudge());
    return new ChatClient({ connection, api, session, outboxStore: storageStore(storage, `${name}.outbox`) });
  };
  const client = shared
    ? new SharedClient({
      name, createClient, bus: createBus(name),
      elector: globalThis.navigator?.locks ? lockElector(name) : leaseElector(name, { tabId: Math.random().toString(36).slice(2) }),
    })
    : createClient();
  // Another tab signed in as someone else: this tab follows (one person per browser profile).
  globalThis.addEventListener?.("storage", (event) => {
    if (event.key !== "webim.session") return;
    const now = new Session({ api, storage });
    if (!now.identity || identityKey(now.identity) !== identityKey(me)) globalThis.location.reload();
  });
  globalThis.addEventListener?.("pagehide", () => client.stop()); // stop() flushes the batched acks
  // Going idle or away: the group acks batched for up to 2 s go now (protocol §13.5).
  globalThis.addEventListener?.("beforeunload", () => client.flushAcks());
  globalThis.document?.addEventListener?.("visibilitychange", () => {
    if (globalThis.document.visibilityState === "hidden") client.flushAcks();
  });
  client.start();
  return { client, session, config, api };
}
