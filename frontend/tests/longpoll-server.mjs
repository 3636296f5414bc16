// A scripted long-poll server of protocol version 4 (docs/protocol.md §2b) behind a fake fetch:
// a mailbox numbered from 1, released up to a poll's (or a send's) cursor; rings on a queue that
// hands each out once (as SQS does: a lost answer's rings are gone), and waits held on the
// test's clock. `faults` make it lose answers after acting, repeat, reorder and strip rings.

/** A small seeded generator (the same run every time). @param {number} seed */
export function seeded(seed) {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

export const API = "http://app.test/api";
export const WAIT_URL = "http://wait.test/lp/wait";

export class LongPollServer {
  frames = []; // every frame ever pushed: number = index + 1
  released = 0;
  rings = []; // rings not yet handed out
  calls = []; // {path, body, query, headers, keepalive}
  waitTokens = []; // the token each wait carried
  gone = false;
  token = 1;
  lost = { loseWait: 0, losePoll: 0, loseSend: 0 }; // answers lost after the server acted
  /** the chance of each fault (0: none) */
  faults = { loseWait: 0, losePoll: 0, loseSend: 0, duplicate: 0, copyless: 0, reorder: 0, refuseWait: 0 };
  #held = []; // resolve functions of held waits

  /** @param {{timers: any, random?: () => number, holdMs?: number}} options */
  constructor({ timers, random = seeded(1), holdMs = 20_000 }) {
    this.timers = timers;
    this.random = random;
    this.holdMs = holdMs;
  }

  #chance(p) { return p > 0 && this.random() < p; }

  /** A frame for the connection: numbered, and rung (with its copy, unless the fault strips it). */
  push(frame) {
    const n = this.frames.push(frame);
    const ring = this.#chance(this.faults.copyless) ? { n } : { n, f: JSON.stringify(frame) };
    const at = this.#chance(this.faults.reorder) ? Math.floor(this.random() * (this.rings.length + 1)) : this.rings.length;
    this.rings.splice(at, 0, ring);
    if (this.#chance(this.faults.duplicate)) this.rings.push(ring);
    for (const wake of this.#held.splice(0)) wake();
  }

  /** @param {number | undefined} cursor */
  #release(cursor) {
    if (cursor !== undefined) this.released = Math.max(this.released, Math.min(cursor, this.frames.length));
  }

  #lost(kind) {
    if (!this.#chance(this.faults[kind])) return;
    this.lost[kind] += 1;
    throw new TypeError(`network (${kind}: the server acted, the answer is lost)`);
  }

  fetchImpl = async (url, init) => {
    const parsed = new URL(url);
    const body = init.body === undefined ? undefined : JSON.parse(init.body);
    const query = Object.fromEntries(parsed.searchParams);
    const path = url.startsWith(WAIT_URL) ? "wait" : parsed.pathname.replace(/^\/api/, "");
    this.calls.push({ path, body, query, headers: init.headers, keepalive: init.keepalive });
    const [status, answer] = path === "wait" ? await this.#wait(init) : this.#route(path, body, query);
    return { ok: status < 400, status, json: async () => answer };
  };

  async #wait(init) {
    this.waitTokens.push(init.headers.Authorization);
    if (this.#chance(this.faults.refuseWait)) return [403, { message: "Forbidden" }];
    if (this.rings.length === 0) {
      await new Promise((resolve, reject) => {
        const timer = this.timers.setTimeout(resolve, this.holdMs);
        this.#held.push(() => { this.timers.clearTimeout(timer); resolve(); });
        init.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      });
    }
    if (init.signal?.aborted) throw new DOMException("aborted", "AbortError");
    const handed = this.rings.splice(0, 10).map((ring) => ({ Body: JSON.stringify(ring), MessageId: "m" }));
    this.#lost("loseWait"); // handed out, then the answer never arrived: those rings are gone
    return [200, { ReceiveMessageResponse: { ReceiveMessageResult: { messages: handed.length ? handed : null } } }];
  }

  #route(path, body, query) {
    if (path === "/lp/open") return [201, { type: "opened", connection_id: "lp-1", base: 1, window: 600, heartbeat: 240, wait_url: WAIT_URL, wait_token: "w1" }];
    if (this.gone) return [410, { error: { code: "connection_gone", message: "gone" } }];
    if (path === "/lp/poll") {
      this.#release(body.cursor);
      this.token += 1;
      const answer = { type: "poll", base: this.released + 1, cursor: this.frames.length, frames: this.frames.slice(this.released), wait_token: `w${this.token}` };
      this.#lost("losePoll");
      return [200, answer];
    }
    if (path === "/lp/send") {
      this.#release(query.cursor === undefined ? undefined : Number(query.cursor));
      this.#lost("loseSend");
      return [200, { frames: [{ type: "pong", ref: body.id }] }];
    }
    if (path === "/lp/close") { this.gone = true; return [200, { closed: true }]; }
    return [404, { error: { code: "not_found" } }];
  }

  /** calls of one path */
  made(path) { return this.calls.filter((call) => call.path === path); }
}
