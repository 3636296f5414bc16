// The client specification: every tests/client_scenarios/*.json, run against the pure receive,
// ack-queue and typing modules (inbox.js, outbox.js, typing.js) wired as ChatClient wires them. pytest runs the
// same files against webim_client/inbox.py and outbox.py (tests/test_client_scenarios.py).

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { ownEventMessage } from "../lib/groups.js";
import { sameIdentity } from "../lib/ids.js";
import { Inbox, isGroupId } from "../lib/inbox.js";
import { Outbox } from "../lib/outbox.js";
import { Typing } from "../lib/typing.js";
import { FakeClock } from "./fakes.mjs";

const FOLDER = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "tests", "client_scenarios");
const ME = { kind: "user", id: "alice" };
const PEER = { kind: "user", id: "bob" };

/** A `message` frame may leave out from/text/time/client_id (the peer's, "m<seq>", seq, "b-<seq>"). */
export function fillMessage(m) {
  return { type: "message", from: PEER, text: `m${m.seq}`, time: m.seq, client_id: `b-${m.seq}`, ...m };
}

class Harness {
  shown = [];
  acks = [];
  sends = [];
  pulls = 0;
  pings = 0; // tail-checking pings the settle check asked for
  states = {};
  online = true;
  typingSent = [];
  ackIds = new Map(); // "ack-<n>" (the n-th ack sent) -> its conversation
  gone = []; // groups dropped after a `not_member`

  constructor(config = {}) {
    this.clock = new FakeClock();
    this.inbox = new Inbox({
      timers: this.clock, ackDelayMs: config.ackDelayMs ?? 20, gapGraceMs: config.gapGraceMs ?? 1000,
      groupAckMs: config.groupAckMs ?? 2000, groupAckMessages: config.groupAckMessages ?? 20, me: () => ME,
      settleCheckMs: config.settleCheckMs ?? 3000, onPing: () => { this.pings += 1; },
      inFlight: (conversationId) => this.outbox.inFlight(conversationId),
      onShow: (m) => this.shown.push(`${m.conversation_id}/${m.seq}`),
      onAck: (conversationId, seq) => {
        if (!this.online) return;
        this.acks.push([conversationId, seq]);
        this.ackIds.set(`ack-${this.acks.length}`, conversationId);
      },
      onPull: () => { this.pulls += 1; },
    });
    this.outbox = new Outbox({
      timers: this.clock, ackTimeoutMs: config.ackTimeoutMs ?? 3000, maxAttempts: config.maxAttempts ?? 4,
      transmit: (frame) => {
        if (!this.online) return false;
        this.sends.push(frame.id);
        return true;
      },
      onChange: (view) => {
        this.states[view.id] = view.state;
        this.inbox.recheck();
      },
    });
    this.outbox.setOnline(true);
    this.typing = new Typing({
      timers: this.clock, now: this.clock.now, me: () => ME,
      transmit: (frame) => {
        if (!this.online) return false;
        this.typingSent.push(frame.conversation_id);
        return true;
      },
    });
  }

  // as ChatClient#dispatch, #accepted and #receive
  frame(frame) {
    switch (frame.type) {
      case "sent": {
        const view = this.outbox.accepted({ time: frame.seq, ...frame });
        if (view) this.receive({ type: "message", conversation_id: frame.conversation_id, seq: frame.seq, from: ME,
          text: view.text, time: frame.time ?? frame.seq, client_id: view.id }, { own: true });
        return;
      }
      case "message": return this.receive(fillMessage(frame), {});
      case "group": case "group_changed": { // as ChatClient#changed: our change's event fills its seq
        const own = ownEventMessage(frame, null, ME);
        return own ? this.receive(own, { own: true }) : undefined;
      }
      case "delivered": return void this.outbox.delivered(frame.conversation_id, frame.seq);
      case "seen": return void this.outbox.seen(frame.conversation_id, frame.seq);
      case "typing": return this.typing.received(frame);
      case "acked": return this.inbox.acked(frame.conversation_id, frame.seq);
      case "error": { // as ChatClient#refused: the conversation the refused frame named (an ack, a send)
        let conversationId = this.ackIds.get(frame.ref) ?? null;
        const view = this.outbox.rejected(frame.ref, frame);
        if (view) conversationId = view.conversation_id;
        if (frame.code === "not_member" && isGroupId(conversationId) && !this.inbox.gone(conversationId)) {
          this.inbox.leave(conversationId); // removed while away: drop it, never retry
          this.gone.push(conversationId);
        }
        return undefined;
      }
      default: return undefined;
    }
  }

  receive(message, { fromPull = false, own = false }) {
    if (!own && sameIdentity(message.from, ME) && this.outbox.has(message.client_id)) {
      this.outbox.accepted({ ref: message.client_id, conversation_id: message.conversation_id, seq: message.seq, time: message.time });
    }
    if (!own) this.typing.message(message); // as the store: a message ends its sender's typing
    this.inbox.receive(message, { fromPull, own });
  }

  async step(step) {
    if ("online" in step) {
      this.online = step.online;
      this.outbox.setOnline(step.online);
      this.inbox.setOnline(step.online);
    } else if ("send" in step) {
      this.outbox.add({ action: "send", ...step.send });
    } else if ("typing" in step) {
      this.typing.typed(step.typing);
    } else if ("resend" in step) {
      this.outbox.resend(step.resend);
    } else if ("frame" in step) {
      this.frame(step.frame);
    } else if ("sync" in step) {
      for (const m of step.sync.messages) this.receive(fillMessage(m), { fromPull: true });
      if (!step.sync.more) this.inbox.pulled();
    } else if ("listed" in step) {
      for (const conversationId of step.listed) this.inbox.member(conversationId);
    } else if ("pong" in step) {
      this.inbox.tails(step.pong); // as ChatClient#dispatch: a pong's `groups`
    } else if ("idle" in step) {
      this.inbox.flush(); // as ChatClient#flushAcks: page hidden, beforeunload, stop()
    } else if ("advance" in step) {
      await this.clock.advance(step.advance);
    } else if ("expect" in step) {
      this.check(step.expect, step.note);
    } else {
      throw new Error(`unknown step ${JSON.stringify(step)}`);
    }
  }

  check(expect, note = "") {
    const where = `${note}`;
    if ("shown" in expect) assert.deepEqual(this.shown, expect.shown, `shown ${where}`);
    if ("acks" in expect) assert.deepEqual(this.acks, expect.acks, `acks ${where}`);
    if ("sends" in expect) assert.deepEqual(this.sends, expect.sends, `sends ${where}`);
    if ("pulls" in expect) assert.equal(this.pulls, expect.pulls, `pulls ${where}`);
    if ("pings" in expect) assert.equal(this.pings, expect.pings, `pings ${where}`);
    if ("tailCheck" in expect) assert.equal(this.inbox.holdsGroup(), expect.tailCheck, `tailCheck ${where}`);
    if ("since" in expect) assert.deepEqual(this.inbox.since(), expect.since, `since ${where}`);
    for (const [id, state] of Object.entries(expect.states ?? {})) assert.equal(this.states[id], state, `state of ${id} ${where}`);
    for (const [cid, have] of Object.entries(expect.have ?? {})) assert.equal(this.inbox.have(cid), have, `have ${cid} ${where}`);
    for (const [cid, who] of Object.entries(expect.typing ?? {})) assert.deepEqual(this.typing.who(cid), who, `typing in ${cid} ${where}`);
    if ("gone" in expect) assert.deepEqual(this.gone, expect.gone, `gone ${where}`);
    if ("typingSent" in expect) assert.deepEqual(this.typingSent, expect.typingSent, `typing frames ${where}`);
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
