import assert from "node:assert/strict";
import { test } from "node:test";

import { Connection, HEARTBEAT_MS, KEEPALIVE_MS, WAKE_PING_MS, timingsFor } from "../lib/connection.js";
import { FakeClock } from "./fakes.mjs";

const ME = { kind: "user", id: "alice" };

/** A transport whose fate the test decides: opens or not, answers pings or not. A keepalive is
 * never answered, as API Gateway's one-way route does not (§6.1a). */
class FakeTransport {
  onframe = () => {};
  onclose = () => {};
  sent = [];
  closed = false;
  constructor(kind, { opens = true, answersPing = true } = {}) {
    Object.assign(this, { kind, opens, answersPing });
  }
  open() { return this.opens ? Promise.resolve() : Promise.reject(new Error(`${this.kind} blocked`)); }
  send(frame, options = {}) {
    if (this.closed) return false;
    this.sent.push(frame);
    if (options.keepalive) this.keepalive = [...(this.keepalive ?? []), frame.id];
    if (frame.action === "ping" && this.answersPing) {
      queueMicrotask(() => this.onframe({ type: "pong", v: 1, time: 1, identity: ME, ref: frame.id }));
    }
    return true;
  }
  close() { this.closed = true; }
  drop(code = 1006) { this.closed = true; this.onclose({ code, reason: "" }); }
}

function setup({ websocket = {}, longpoll = {}, check = "ok", options = {} } = {}) {
  const clock = new FakeClock();
  const made = [];
  const factory = (kind, behaviour) => () => {
    const transport = new FakeTransport(kind, typeof behaviour === "function" ? behaviour(made) : behaviour);
    made.push(transport);
    return transport;
  };
  const session = { refreshed: 0, token: async () => "t", check: async () => check, refresh: async () => { session.refreshed += 1; } };
  const connection = new Connection({
    config: {}, session, timers: clock, now: clock.now, random: () => 1,
    transports: { websocket: factory("websocket", websocket), longpoll: factory("longpoll", longpoll) },
    requestTimeoutMs: 5000, ...options,
  });
  const events = [];
  for (const type of ["state", "open", "close", "fallback"]) connection.on(type, (data) => events.push([type, data]));
  return { clock, connection, made, session, events };
}

test("WebSocket first: opened and proven by a ping", async () => {
  const { clock, connection, made, events } = setup();
  connection.start();
  await clock.advance(0);
  assert.equal(connection.state, "online");
  assert.equal(connection.transportKind, "websocket");
  assert.deepEqual(connection.identity, ME);
  assert.deepEqual(made.map((t) => t.kind), ["websocket"]);
  assert.ok(events.some(([type, data]) => type === "open" && !data.rotated));
});

test("a blocked WebSocket with HTTP working falls back to long poll at once", async () => {
  const { clock, connection, made, events } = setup({ websocket: { opens: false } });
  connection.start();
  await clock.advance(0);
  assert.deepEqual(made.map((t) => t.kind), ["websocket", "longpoll"]);
  assert.equal(connection.transportKind, "longpoll");
  assert.ok(events.some(([type]) => type === "fallback"));
});

test("long poll tries WebSocket again later and moves over when it works", async () => {
  let blocked = true;
  const { clock, connection, made } = setup({ websocket: () => ({ opens: !blocked }), options: { longPollForMs: 600_000 } });
  connection.start();
  await clock.advance(0);
  assert.equal(connection.transportKind, "longpoll");
  blocked = false;
  await clock.advance(600_000);
  assert.equal(connection.transportKind, "websocket");
  await clock.advance(5000);
  assert.equal(made.find((t) => t.kind === "longpoll").closed, true, "the long poll closes after the move");
});

test("when the network is down: backoff with growing delays, WebSocket kept", async () => {
  const { clock, connection, made } = setup({ websocket: { opens: false }, check: "unreachable" });
  connection.start();
  await clock.advance(0);
  await clock.advance(1000);
  await clock.advance(2000);
  await clock.advance(4000);
  assert.equal(made.length, 4, "attempts at 0, 1, 3 and 7 seconds");
  assert.ok(made.every((t) => t.kind === "websocket"));
  assert.equal(connection.state, "offline");
});

test("a refused credential is refreshed and the connect retried", async () => {
  let attempts = 0;
  const { clock, connection, session } = setup({ websocket: () => ({ opens: (attempts += 1) > 1 }), check: "unauthorized" });
  connection.start();
  await clock.advance(0);
  assert.equal(session.refreshed, 1);
  assert.equal(connection.state, "online");
});

test("a dropped connection reconnects after a backoff, and requests on it fail at once", async () => {
  const { clock, connection, made, events } = setup();
  connection.start();
  await clock.advance(0);
  const waiting = connection.request("history", { conversation_id: "c" });
  made[0].drop();
  await assert.rejects(waiting, { code: "disconnected" });
  assert.equal(connection.state, "offline");
  await clock.advance(1000);
  assert.equal(connection.state, "online");
  assert.equal(events.filter(([type]) => type === "open").length, 2);
});

const actions = (transport) => transport.sent.map((f) => f.action);

test("keepalive: only after 9 minutes without a frame out, sent and forgotten (no id, no answer awaited): unanswered, the line is kept", async () => {
  const { clock, connection, made } = setup({ options: { heartbeatMs: 10 ** 9 } }); // (the heartbeat's ping: below)
  connection.start();
  await clock.advance(0);
  assert.equal(KEEPALIVE_MS, 540_000);
  await clock.advance(539_999);
  assert.deepEqual(actions(made[0]), ["ping"], "nothing before 9 minutes of silence");
  await clock.advance(1);
  assert.deepEqual(made[0].sent.at(-1), { action: "keepalive" });
  for (let minute = 0; minute < 20; minute += 1) { // a chatty line: a frame a minute
    connection.transmit({ action: "typing", id: `t-${minute}`, conversation_id: "c" });
    await clock.advance(60_000);
  }
  assert.deepEqual(actions(made[0]).filter((a) => a === "keepalive").length, 1, "frames going out: no keepalive");
  await clock.advance(540_000 - 60_000);
  assert.equal(actions(made[0]).filter((a) => a === "keepalive").length, 2, "silent again for 9 minutes: one more");
  await clock.advance(5 * 540_000 + 5000); // many request timeouts past unanswered keepalives
  assert.equal(actions(made[0]).filter((a) => a === "keepalive").length, 7);
  assert.equal(made[0].closed, false, "nothing answers a keepalive: its silence says nothing, the line is kept");
  assert.equal(made.length, 1);
  assert.equal(connection.state, "online");
  made[0].closed = true; // the socket knows it is closed: the keepalive cannot go out
  await clock.advance(540_000);
  await clock.advance(1000);
  assert.equal(made.length, 2, "a keepalive the transport refuses replaces the connection");
  assert.equal(connection.state, "online");
});

test("a stage without the keepalive route answers it through the app (unknown_action, no ref): nothing waits for it, the line is kept", async () => {
  const { clock, connection, made } = setup({ options: { heartbeatMs: 10 ** 9 } });
  connection.start();
  await clock.advance(0);
  await clock.advance(540_000);
  made[0].onframe({ type: "error", code: "unknown_action", message: "unknown action 'keepalive'" });
  await clock.advance(540_000 - 1);
  assert.equal(made[0].closed, false);
  assert.equal(made.length, 1);
});

/** The browser's globalThis as far as the connection listens to it: `online`, and `visibilitychange` on its document. */
class FakePage extends EventTarget {
  document = Object.assign(new EventTarget(), { visibilityState: "visible" });
  online() { this.dispatchEvent(new Event("online")); }
  show(state = "visible") { this.document.visibilityState = state; this.document.dispatchEvent(new Event("visibilitychange")); }
}

test("the page coming back (visible again, the network back) pings at most once a minute; unanswered, the connection is replaced", async () => {
  const page = new FakePage();
  const { clock, connection, made } = setup({ options: { page, heartbeatMs: 10 ** 9 } });
  const pings = (transport) => transport.sent.filter((f) => f.action === "ping");
  connection.start();
  await clock.advance(0);
  assert.equal(WAKE_PING_MS, 60_000);
  await clock.advance(WAKE_PING_MS - 1);
  page.show();
  page.online();
  assert.equal(pings(made[0]).length, 1, "the opening ping went out less than a minute ago: no other");
  await clock.advance(1);
  page.show("hidden");
  assert.equal(pings(made[0]).length, 1, "hidden: nothing to do");
  page.show();
  assert.equal(pings(made[0]).length, 2, "visible again: a ping");
  connection.keepaliveFields = () => ({ groups: true });
  page.online();
  page.show();
  await clock.advance(WAKE_PING_MS - 1);
  page.online();
  assert.equal(pings(made[0]).length, 2, "one ping a minute, whatever the events");
  await clock.advance(1);
  page.online();
  assert.deepEqual(pings(made[0]).map((f) => f.groups), [undefined, undefined, true], "the network back: a ping (the tail check's fields)");
  await clock.advance(5000);
  assert.equal(made[0].closed, false, "answered: the line is kept");

  made[0].answersPing = false; // after a sleep: a half-open socket that hears nothing
  await clock.advance(WAKE_PING_MS);
  page.show();
  assert.equal(pings(made[0]).length, 4);
  await clock.advance(4999);
  assert.equal(made[0].closed, false);
  await clock.advance(1); // the request timeout
  assert.equal(made[0].closed, true, "an unanswered wake ping replaces the connection");
  await clock.advance(1000);
  assert.equal(made.length, 2);
  assert.equal(connection.state, "online");

  await clock.advance(WAKE_PING_MS);
  connection.stop();
  page.show();
  page.online();
  assert.equal(pings(made[1]).length, 1, "stopped: the page's events are no longer heard");
});

test("heartbeat: a ping every 36 minutes carrying keepaliveFields() (groups: true while a group is held, §13.8), keepalives between", async () => {
  const { clock, connection, made } = setup();
  connection.start();
  await clock.advance(0);
  assert.equal(HEARTBEAT_MS, 4 * KEEPALIVE_MS);
  let fields = null;
  connection.keepaliveFields = () => fields;
  await clock.advance(HEARTBEAT_MS);
  assert.deepEqual(actions(made[0]), ["ping", "keepalive", "keepalive", "keepalive", "ping"]);
  fields = { groups: true };
  await clock.advance(HEARTBEAT_MS);
  assert.deepEqual(made[0].sent.filter((f) => f.action === "ping").map((f) => f.groups), [undefined, undefined, true]);
  assert.equal(actions(made[0]).filter((a) => a === "keepalive").length, 6, "a ping is a frame: no keepalive at the same time");
  made[0].answersPing = false;
  await clock.advance(HEARTBEAT_MS + 5000);
  assert.equal(made[0].closed, true, "an unanswered heartbeat replaces the connection");
});

test("the keepalive and heartbeat follow keepaliveMs and heartbeatMs; on long poll no keepalive frames, a ping only when keepaliveFields() asks", async () => {
  const { clock, connection, made } = setup({ options: { keepaliveMs: 1000, heartbeatMs: 3500 } });
  connection.start();
  await clock.advance(0);
  await clock.advance(3500);
  assert.deepEqual(actions(made[0]), ["ping", "keepalive", "keepalive", "keepalive", "ping"]);

  const lp = setup({ options: { forceLongPoll: true, keepaliveMs: 240_000 } });
  lp.connection.start();
  await lp.clock.advance(0);
  let held = null;
  lp.connection.keepaliveFields = () => held;
  const pings = () => lp.made[0].sent.filter((f) => f.action === "ping").map((f) => f.groups);
  await lp.clock.advance(3 * 240_000);
  assert.deepEqual(pings(), [undefined], "long poll, no group: only the opening ping (every poll is a heartbeat)");
  held = { groups: true };
  await lp.clock.advance(240_000);
  assert.deepEqual(pings(), [undefined, true], "long poll, a group held: a ping asking for the tails every keepalive");
  await lp.clock.advance(240_000);
  assert.deepEqual(pings(), [undefined, true, true]);
  assert.ok(!actions(lp.made[0]).includes("keepalive"), "long poll: no keepalive frames");
  await lp.clock.advance(HEARTBEAT_MS);
  assert.ok(!actions(lp.made[0]).includes("keepalive"));
});

test("before the 2-hour limit a new connection opens, then the old one closes", async () => {
  const { clock, connection, made, events } = setup({ options: { maxAgeMs: 110 * 60_000, keepaliveMs: 10 ** 9 } });
  connection.start();
  await clock.advance(0);
  const frames = [];
  connection.on("frame", (f) => { if (f.type === "message") frames.push(f); });
  await clock.advance(110 * 60_000);
  assert.equal(made.length, 2);
  assert.equal(made[0].closed, false, "the old connection stays open while answers may be on their way");
  made[0].onframe({ type: "message", conversation_id: "c", seq: 1 });
  assert.equal(frames.length, 1, "a frame arriving on the old connection is not lost");
  assert.ok(events.some(([type, data]) => type === "open" && data.rotated));
  await clock.advance(5000);
  assert.equal(made[0].closed, true);
  assert.equal(connection.transportKind, "websocket");
  assert.equal(events.filter(([type]) => type === "close").length, 0, "no disconnect was seen");
});

test("long poll gone (410) reconnects at once", async () => {
  const { clock, connection, made } = setup({ options: { forceLongPoll: true } });
  connection.start();
  await clock.advance(0);
  made[0].drop(410);
  await clock.advance(0);
  assert.equal(made.length, 2);
  assert.equal(connection.state, "online");
});

test("a request made while connecting waits for the connection instead of failing", async () => {
  const { clock, connection, made } = setup();
  const answer = connection.request("conversations");
  connection.start();
  await clock.advance(0);
  const frame = made[0].sent.find((f) => f.action === "conversations");
  assert.ok(frame, "sent once the connection was open");
  made[0].onframe({ type: "conversations", conversations: [], ref: frame.id });
  assert.deepEqual((await answer).conversations, []);
});

test("keepalive, heartbeat and reconnect times follow the gateway's limits", () => {
  assert.deepEqual(timingsFor(), { keepaliveMs: KEEPALIVE_MS, heartbeatMs: HEARTBEAT_MS, maxAgeMs: 110 * 60_000 },
    "API Gateway: 9 min, 36 min, 1 h 50 min");
  assert.deepEqual(timingsFor({ idleSeconds: 10, maxSeconds: 20 }), { keepaliveMs: 4000, heartbeatMs: 16_000, maxAgeMs: 15_000 });
  assert.deepEqual(timingsFor({ idleSeconds: 300 }).keepaliveMs, 240_000, "a minute before the idle limit");
});

test("a request may carry its own id (a group change repeated with its idempotency key); transmit passes keepalive on", async () => {
  const { clock, connection, made } = setup();
  connection.start();
  await clock.advance(0);
  const renaming = connection.request("group_rename", { conversation_id: "g_1", title: "x" }, { id: "k-7" });
  const [transport] = made;
  assert.deepEqual(transport.sent.at(-1), { action: "group_rename", id: "k-7", conversation_id: "g_1", title: "x" });
  transport.onframe({ type: "group_changed", ref: "k-7", conversation_id: "g_1", seq: 2, time: 1 });
  assert.equal((await renaming).seq, 2);
  assert.equal(connection.transmit({ action: "ack", id: "a-1" }, { keepalive: true }), true);
  assert.deepEqual(transport.keepalive, ["a-1"]);
});

test("connection_gone answering any frame (a send here) replaces the connection at once, not at the next keepalive", async () => {
  const { clock, connection, made } = setup();
  connection.start();
  await clock.advance(0);
  assert.equal(connection.transmit({ action: "send", id: "a-1", to: { kind: "user", id: "bob" }, text: "hi" }), true);
  made[0].onframe({ type: "error", code: "connection_gone", message: "gone", ref: "a-1" });
  assert.equal(made[0].closed, true);
  await clock.advance(0);
  assert.equal(made.length, 2);
  assert.equal(connection.state, "online");
});

test("a request answered connection_gone fails with that code and the connection is replaced", async () => {
  const { clock, connection, made } = setup();
  connection.start();
  await clock.advance(0);
  const waiting = connection.request("history", { conversation_id: "c" });
  const frame = made[0].sent.at(-1);
  made[0].onframe({ type: "error", code: "connection_gone", message: "gone", ref: frame.id });
  await assert.rejects(waiting, { code: "connection_gone" });
  await clock.advance(0);
  assert.equal(made.length, 2);
});

test("silence: a send, then no frame at all for silenceMs: a ping; unanswered, the connection is replaced", async () => {
  const { clock, connection, made } = setup({ options: { silenceMs: 5000, keepaliveMs: 10 ** 9 } });
  connection.start();
  await clock.advance(0);
  const pings = (transport) => transport.sent.filter((f) => f.action === "ping").length;
  connection.transmit({ action: "ack", id: "k-1", conversation_id: "c", seq: 1, quiet: true });
  connection.transmit({ action: "typing", id: "t-1", conversation_id: "c" });
  await clock.advance(20_000);
  assert.equal(pings(made[0]), 1, "quiet frames expect no answer: no probe (only the open's ping)");
  connection.transmit({ action: "send", id: "a-1", to: { kind: "user", id: "bob" }, text: "hi" });
  await clock.advance(1000);
  made[0].onframe({ type: "sent", ref: "a-1", conversation_id: "c", seq: 2, time: 1 });
  await clock.advance(20_000);
  assert.equal(pings(made[0]), 1, "an answer came: the line is alive");
  made[0].answersPing = false; // the server forgot the connection: nothing is answered any more
  connection.transmit({ action: "send", id: "a-2", to: { kind: "user", id: "bob" }, text: "anyone?" });
  await clock.advance(4999);
  assert.equal(pings(made[0]), 1);
  await clock.advance(1);
  assert.equal(pings(made[0]), 2, "silenceMs without any frame: a ping");
  await clock.advance(5000); // the request timeout
  assert.equal(made[0].closed, true);
  await clock.advance(1000);
  assert.equal(made.length, 2);
  assert.equal(connection.state, "online");
});
