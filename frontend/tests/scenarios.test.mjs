// The client specification: every tests/client_scenarios/*.json, run against ChatClient's own
// protocol core (lib/core.js: the object the client feeds every frame to, over inbox.js, outbox.js
// and typing.js) with a fake transmit and a fake clock: no copy of the client's dispatch here, only
// the scenario's steps turned into the calls ChatClient makes. pytest runs the same files against
// webim_client/core.py, the Python client's core (tests/test_client_scenarios.py).

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { ClientCore } from "../lib/core.js";
import { FakeClock } from "./fakes.mjs";

const FOLDER = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "tests", "client_scenarios");
const ME = { kind: "user", id: "alice" };
const PEER = { kind: "user", id: "bob" };

/** A `message` frame may leave out from/text/time/client_id (the peer's, "m<seq>", seq, "b-<seq>"). */
export function fillMessage(m) {
  return { type: "message", from: PEER, text: `m${m.seq}`, time: m.seq, client_id: `b-${m.seq}`, ...m };
}

/** A frame as the server sends it: a `message` with its defaults, a `sent` (or group answer) with its time. */
function fill(frame) {
  if (frame.type === "message") return fillMessage(frame);
  if (["sent", "group", "group_changed"].includes(frame.type)) return { time: frame.seq, ...frame };
  return frame;
}

/**
 * The fake side of the core: a transmit that records the frames (connected or not), a clock, and
 * the events counted. Steps become the calls ChatClient makes.
 */
class Harness {
  transmitted = [];
  shown = [];
  gone = [];
  deleted = [];
  tombstones = [];
  pulls = 0;
  pings = 0;
  states = {};
  online = true;
  acksMade = 0;

  constructor(config = {}) {
    this.clock = new FakeClock();
    this.core = new ClientCore({
      timers: this.clock, now: this.clock.now, settings: config,
      transmit: (frame) => {
        if (!this.online) return false;
        this.transmitted.push(frame);
        return true;
      },
      newId: () => `ack-${this.acksMade += 1}`, // only acks take ids from the core: the n-th is ack-<n>
      emit: (event, data) => this.#event(event, data),
    });
    this.core.setIdentity(ME);
    this.core.setOnline(true);
  }

  #event(event, data) {
    if (event === "message") {
      this.shown.push(`${data.conversation_id}/${data.seq}`);
      if (data.deleted) this.tombstones.push(`${data.conversation_id}/${data.seq}/${data.text}`);
    } else if (event === "message_deleted") this.deleted.push(`${data.conversation_id}/${data.seq}`);
    else if (event === "outgoing") this.states[data.id] = data.state;
    else if (event === "gone") this.gone.push(data.conversation_id);
    else if (event === "pull") this.pulls += 1;
    else if (event === "ping") this.pings += 1;
  }

  sent(action) {
    return this.transmitted.filter((frame) => frame.action === action);
  }

  async step(step) {
    const core = this.core;
    const actions = {
      online: (online) => { this.online = online; core.setOnline(online); },
      send: (send) => core.send({ action: "send", ...send }),
      resend: (id) => core.outbox.resend(id),
      typing: (conversationId) => core.typing.typed(conversationId),
      change: (request) => core.changeStarted(request),
      frame: (frame) => core.dispatch(fill(frame)),
      sync: (page) => { // the answer to a pull, as ChatClient#pullAll takes it
        for (const m of page.messages) core.receive(fillMessage(m), { fromPull: true });
        if (!page.more) core.pulled();
      },
      listed: (ids) => { for (const id of ids) core.inbox.member(id); }, // as ChatClient.conversations
      pong: (groups) => core.dispatch({ type: "pong", groups }),
      idle: () => core.inbox.flush(), // as ChatClient.flushAcks: page hidden, beforeunload, stop()
      advance: (ms) => this.clock.advance(ms),
      expect: (expect) => this.check(expect, step.note ?? ""),
    };
    const names = Object.keys(step).filter((key) => key !== "note");
    assert.ok(names.length === 1 && names[0] in actions, `unknown step ${JSON.stringify(step)}`);
    await actions[names[0]](step[names[0]]);
  }

  observed() {
    return {
      shown: this.shown, acks: this.sent("ack").map((f) => [f.conversation_id, f.seq]), sends: this.sent("send").map((f) => f.id),
      pulls: this.pulls, pings: this.pings, tailCheck: this.core.inbox.holdsGroup(), since: this.core.inbox.since(),
      gone: this.gone, typingSent: this.sent("typing").map((f) => f.conversation_id),
      deleted: this.deleted, tombstones: this.tombstones,
    };
  }

  check(expect, note) {
    const observed = this.observed();
    for (const key of Object.keys(expect)) {
      if (key in observed) assert.deepEqual(observed[key], expect[key], `${key} ${note}`);
      else assert.ok(["states", "have", "typing"].includes(key), `unknown expectation ${key} ${note}`);
    }
    for (const [id, state] of Object.entries(expect.states ?? {})) assert.equal(this.states[id], state, `state of ${id} ${note}`);
    for (const [cid, have] of Object.entries(expect.have ?? {})) assert.equal(this.core.inbox.have(cid), have, `have ${cid} ${note}`);
    for (const [cid, who] of Object.entries(expect.typing ?? {})) assert.deepEqual(this.core.typing.who(cid), who, `typing in ${cid} ${note}`);
  }
}

const files = readdirSync(FOLDER).filter((name) => name.endsWith(".json")).sort();

test("the scenario folder is not empty, and every file in it is a scenario", () => {
  assert.ok(files.length >= 10, `only ${files.length} scenarios in ${FOLDER}`);
  const others = readdirSync(FOLDER).filter((name) => !name.endsWith(".json") && name !== "README.md");
  assert.deepEqual(others, [], "a file the runners would not run");
});

for (const name of files) {
  const scenario = JSON.parse(readFileSync(join(FOLDER, name), "utf8"));
  test(`scenario ${name}: ${scenario.title}`, async () => {
    assert.ok(Array.isArray(scenario.rules) && scenario.rules.length > 0, "a scenario names the §9 rules it covers");
    const harness = new Harness(scenario.config);
    for (const step of scenario.steps) await harness.step(step);
  });
}
