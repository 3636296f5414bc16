// The long poll's rings (docs/protocol.md §2b, version 4): what a wait answer and a poll answer
// mean for a client, as a small pure object the transport feeds, so both clients are checked
// against the same cases (tests/long_poll_rings/*.json; webim_client/rings.py is the Python twin).
//
// A wait answer is SQS's ReceiveMessage answer: the rings are the `Body` strings of its messages,
// each {"n": 7, "f": "<frame as JSON text>"} (frame 7 with its copy) or {"n": 7} (no copy: poll).
// Rings come twice and out of order: `next` is the number expected; a ring below it, or held
// already, is dropped; copies are handed out in number order from `next` on. A gap, a ring
// without a copy or anything unreadable asks for a poll, which returns every frame still waiting.

/** @typedef {import("./transports.js").Frame} Frame */
/** What an answer gave: frames to process now, in order; and whether to poll now. @typedef {{frames: Frame[], poll: boolean}} Taken */

/** @param {unknown} value @returns {value is Record<string, any>} */
function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The `Body` of each message of a wait answer (API Gateway's SQS ReceiveMessage answer, or a
 * top-level `Messages` list); null when the answer is not one (poll).
 * @param {unknown} answer @returns {unknown[] | null}
 */
export function ringBodies(answer) {
  if (!isObject(answer)) return null;
  const response = answer.ReceiveMessageResponse;
  const result = isObject(response) ? response.ReceiveMessageResult : null;
  const messages = isObject(result) ? (result.messages !== undefined ? result.messages : result.Messages) : answer.Messages;
  if (messages === null || messages === undefined) return []; // null or absent: none
  if (!Array.isArray(messages)) return null;
  return messages.map((message) => (isObject(message) ? message.Body : undefined));
}

/** @param {string} text @returns {unknown} the JSON, or undefined when it does not parse */
function parsed(text) {
  try { return JSON.parse(text); } catch { return undefined; }
}

/**
 * [number, frame or null for no copy], or null for anything else (poll).
 * @param {unknown} body @returns {[number, Frame | null] | null}
 */
export function parseRing(body) {
  if (typeof body !== "string") return null;
  const ring = parsed(body);
  if (!isObject(ring)) return null;
  const number = ring.n;
  if (typeof number !== "number" || !Number.isInteger(number) || number < 1) return null;
  if (typeof ring.f !== "string") return [number, null];
  const frame = parsed(ring.f); // a broken copy: poll for the frame
  return [number, isObject(frame) ? frame : null];
}

/**
 * One long-poll connection's numbers: `next` (the frame expected), the rings held above it, and
 * how far the server has been told to release (`owes`: processed frames not yet released by a
 * poll or a send that carried `cursor`).
 */
export class Rings {
  /** @type {Map<number, Frame | null>} */
  #held = new Map();
  #released;

  /** @param {number} next the first number expected: the `base` of `open` */
  constructor(next) {
    this.next = next;
    this.#released = next - 1;
  }

  /** The `cursor` to send: the number of the last frame handed out. */
  get processed() { return this.next - 1; }

  get owes() { return this.processed > this.#released; }

  /** A poll or send carrying `cursor` was answered: the server released up to it. @param {number} cursor */
  released(cursor) {
    this.#released = Math.max(this.#released, cursor);
  }

  /** A wait answered 200 with `answer` (its JSON; null if it had none). @param {unknown} answer @returns {Taken} */
  waited(answer) {
    const bodies = ringBodies(answer);
    let unreadable = bodies === null;
    for (const body of bodies ?? []) {
      const ring = parseRing(body);
      if (ring === null) unreadable = true;
      else if (ring[0] >= this.next && !this.#held.has(ring[0])) this.#held.set(ring[0], ring[1]);
    }
    const frames = this.#drain();
    // anything still held is a gap or a ring without its copy: the poll returns them all
    return { frames, poll: unreadable || this.#held.size > 0 };
  }

  /**
   * A poll answered: `frames` are numbered `base`, `base + 1`, ... Never asks for another poll at
   * once: a gap it leaves (rings of frames stored after the poll read) is filled by the next
   * wait, and checked again at its answer.
   * @param {number} base @param {Frame[]} frames @returns {Taken}
   */
  polled(base, frames) {
    /** @type {Frame[]} */
    const out = [];
    frames.forEach((frame, index) => {
      if (base + index >= this.next) {
        out.push(frame);
        this.next = base + index + 1;
      }
    });
    for (const number of [...this.#held.keys()]) if (number < this.next) this.#held.delete(number);
    out.push(...this.#drain());
    return { frames: out, poll: false };
  }

  /** @returns {Frame[]} */
  #drain() {
    /** @type {Frame[]} */
    const out = [];
    for (let frame = this.#held.get(this.next); frame; frame = this.#held.get(this.next)) {
      this.#held.delete(this.next);
      out.push(frame);
      this.next += 1;
    }
    return out;
  }
}
