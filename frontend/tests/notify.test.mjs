import assert from "node:assert/strict";
import { test } from "node:test";

import {
  badgeText, Beeper, decide, messageBody, Notifier, TitleCount, titleText, VisibleTabs,
} from "../app/notify.js";
import { FakeClock, MemoryStorage, message, settle } from "./fakes.mjs";

const ME = { kind: "user", id: "alice" };

const base = (extra = {}) => ({
  hidden: true, leader: true, othersVisible: false, me: ME, message: message("c1", 1), unread: 1,
  notified: new Set(), permission: "granted", sound: false, ...extra,
});

test("a hidden leader tab notifies for someone else's unread message", () => {
  assert.deepEqual(decide(base()), { notify: true, sound: false, why: "new" });
  assert.equal(decide(base({ sound: true })).sound, true, "the beep comes with the notification");
});

test("visible, another tab visible, or a follower tab: no notification", () => {
  assert.equal(decide(base({ hidden: false })).notify, false);
  assert.equal(decide(base({ othersVisible: true })).notify, false);
  const follower = decide(base({ leader: false, sound: true }));
  assert.deepEqual([follower.notify, follower.sound], [false, false], "no sound without a notification");
});

test("never for my own messages: sent here, from another tab (own) or another device (from is me)", () => {
  assert.equal(decide(base({ message: message("c1", 1, { own: true, from: ME }) })).notify, false);
  assert.equal(decide(base({ message: message("c1", 1, { from: ME }) })).notify, false);
  const myEvent = message("g_1", 4, { from: ME, text: "", event: { type: "renamed", title: "x" } });
  assert.equal(decide(base({ message: myEvent })).notify, false, "nor my own group events");
  const theirEvent = message("g_1", 4, { text: "", event: { type: "renamed", title: "x" } });
  assert.equal(decide(base({ message: theirEvent })).notify, true);
});

test("no permission or nothing unread (read on another device): no notification", () => {
  for (const permission of ["default", "denied", "unsupported"]) {
    assert.equal(decide(base({ permission })).notify, false, permission);
  }
  assert.equal(decide(base({ unread: 0 })).notify, false);
});

class FakeNotification {
  static permission = "granted";
  static made = [];
  static requestPermission = async () => { FakeNotification.asked += 1; return FakeNotification.permission; };
  static asked = 0;
  closed = false;
  constructor(title, options) { Object.assign(this, { title, ...options }); FakeNotification.made.push(this); }
  close() { this.closed = true; this.onclose?.(); }
}

function notifier(extra = {}) {
  FakeNotification.made = [];
  FakeNotification.permission = "granted";
  const state = { hidden: true, leader: true, opened: [], focused: 0, beeps: 0 };
  const beeper = { unlock() {}, beep() { state.beeps += 1; return true; } };
  const n = new Notifier({
    me: () => ME, isLeader: () => state.leader, hidden: () => state.hidden, onOpen: (id) => state.opened.push(id),
    NotificationImpl: FakeNotification, storage: new MemoryStorage(), beeper, focus: () => { state.focused += 1; },
    ...extra,
  });
  return { n, state };
}

test("a burst of three in one conversation makes one notification; read resets it", () => {
  const { n } = notifier();
  for (let seq = 1; seq <= 3; seq += 1) n.handle(message("c1", seq), { unread: seq, title: "bob" });
  assert.equal(FakeNotification.made.length, 1);
  assert.deepEqual([FakeNotification.made[0].title, FakeNotification.made[0].body, FakeNotification.made[0].tag],
    ["bob", "m1", "c1"]);
  n.handle(message("c2", 1), { unread: 1, title: "carol" });
  assert.equal(FakeNotification.made.length, 2, "another conversation has its own burst");

  n.settle("c1", 2); // still unread: the burst goes on
  n.handle(message("c1", 4), { unread: 3, title: "bob" });
  assert.equal(FakeNotification.made.length, 2);
  n.settle("c1", 0); // read (here or in another tab): the notification goes, the next message notifies
  assert.equal(FakeNotification.made[0].closed, true);
  n.handle(message("c1", 5), { unread: 1, title: "bob" });
  assert.equal(FakeNotification.made.length, 3);
});

test("showing the page again ends every burst", () => {
  const { n } = notifier();
  n.handle(message("c1", 1), { unread: 1, title: "bob" });
  n.shown();
  n.handle(message("c1", 2), { unread: 2, title: "bob" });
  assert.equal(FakeNotification.made.length, 2);
});

test("a follower tab, a visible page, my own message: nothing made", () => {
  const { n, state } = notifier();
  state.leader = false;
  n.handle(message("c1", 1), { unread: 1, title: "bob" });
  state.leader = true;
  state.hidden = false;
  n.handle(message("c1", 2), { unread: 2, title: "bob" });
  state.hidden = true;
  n.handle(message("c1", 3, { from: ME, own: true }), { unread: 0, title: "bob" });
  assert.equal(FakeNotification.made.length, 0);
  assert.equal(n.notified.size, 0, "a skipped message starts no burst");
});

test("clicking focuses the window, closes it and opens its conversation", () => {
  const { n, state } = notifier();
  n.handle(message("c9", 1), { unread: 1, title: "bob" });
  FakeNotification.made[0].onclick();
  assert.deepEqual([state.focused, state.opened, FakeNotification.made[0].closed], [1, ["c9"], true]);
});

test("sound: off by default, a toggle kept in storage, and only with a notification", () => {
  const { n, state } = notifier();
  assert.equal(n.sound, false);
  n.handle(message("c1", 1), { unread: 1, title: "bob" });
  assert.equal(state.beeps, 0);
  n.sound = true;
  n.handle(message("c2", 1), { unread: 1, title: "carol" });
  n.handle(message("c2", 2), { unread: 2, title: "carol" }); // same burst: no notification, no beep
  assert.equal(state.beeps, 1);
  assert.equal(n.storage.getItem("webim.notify.sound"), "on");
});

test("permission is asked only when enable() is called (a click), never by handling messages", async () => {
  const { n } = notifier();
  FakeNotification.asked = 0;
  FakeNotification.permission = "default";
  n.handle(message("c1", 1), { unread: 1, title: "bob" });
  assert.equal(FakeNotification.asked, 0);
  assert.equal(FakeNotification.made.length, 0);
  assert.equal(await n.enable(), "default");
  assert.equal(FakeNotification.asked, 1);
  const none = new Notifier({ me: () => ME, isLeader: () => true, onOpen() {}, NotificationImpl: undefined });
  assert.equal(none.permission, "unsupported");
  assert.equal(await none.enable(), "unsupported");
});

test("a photo without a caption says Photo; with one, Photo: caption; an event its line", () => {
  const image = { url: "u", width: 1, height: 1 };
  assert.equal(messageBody(message("c", 1, { text: "", image }), ME), "Photo");
  assert.equal(messageBody(message("c", 1, { text: "the crack", image }), ME), "Photo: the crack");
  assert.equal(messageBody(message("g_1", 1, { text: "", event: { type: "renamed", title: "Bikes" } }), ME),
    "bob renamed the group to “Bikes”");
  assert.equal(messageBody(message("g_1", 2, { text: "hi" }), ME, { group: true }), "bob: hi", "a group: who, first");
  const { n } = notifier();
  n.handle(message("c1", 1, { text: "", image }), { unread: 1, title: "bob" });
  assert.equal(FakeNotification.made[0].body, "Photo");
});

test("title and badge text", () => {
  assert.equal(titleText("WebIM", 0), "WebIM");
  assert.equal(titleText("WebIM", 3), "(3) WebIM");
  assert.deepEqual([badgeText(0), badgeText(7), badgeText(100)], ["", "7", "99+"]);
  const doc = { title: "Bike · Market" };
  const title = new TitleCount(doc);
  title.show(3);
  assert.equal(doc.title, "(3) Bike · Market");
  title.show(0);
  assert.equal(doc.title, "Bike · Market", "restored when read");
  doc.title = "Other listing"; // the host changed its title: that is the new original
  title.show(2);
  assert.equal(doc.title, "(2) Other listing");
});

class ChannelHub {
  #channels = new Set();
  get Channel() {
    const hub = this;
    return class {
      onmessage = () => {};
      constructor() { hub.#channels.add(this); }
      postMessage(data) {
        if (!hub.#channels.has(this)) return; // closed (a real one throws; a crashed tab posts nothing)
        for (const c of hub.#channels) if (c !== this) setImmediate(() => hub.#channels.has(c) && c.onmessage({ data: structuredClone(data) }));
      }
      close() { hub.#channels.delete(this); }
    };
  }
}

test("VisibleTabs: the leader learns another tab is visible, and forgets one that went or crashed", async () => {
  const clock = new FakeClock();
  const hub = new ChannelHub();
  let shown = 0;
  const leaderVisible = { value: false };
  const otherVisible = { value: true };
  const leader = new VisibleTabs({ name: "n", tabId: "L", Channel: hub.Channel, visible: () => leaderVisible.value,
    timers: clock, now: clock.now, onShown: () => { shown += 1; } }).start();
  const other = new VisibleTabs({ name: "n", tabId: "F", Channel: hub.Channel, visible: () => otherVisible.value,
    timers: clock, now: clock.now }).start();
  await settle();
  assert.equal(leader.anyVisible(), true);
  assert.equal(shown, 1, "a tab shown again ends the bursts");
  otherVisible.value = false;
  other.changed();
  await settle();
  assert.equal(leader.anyVisible(), false);
  otherVisible.value = true;
  other.changed();
  await settle();
  assert.deepEqual([leader.anyVisible(), shown], [true, 2]);
  other.channel.close(); // crashed: no "hidden" ever comes, its beats stop
  await clock.advance(13_000);
  assert.equal(leader.anyVisible(), false);
  leader.stop();
});

test("Beeper: silent until a gesture unlocked audio", () => {
  const started = [];
  class FakeAudio {
    state = "running";
    currentTime = 0;
    destination = {};
    createOscillator() { return { frequency: {}, connect: (g) => g, start: (t) => started.push(t), stop() {} }; }
    createGain() { return { gain: { setValueAtTime() {}, exponentialRampToValueAtTime() {} }, connect: (d) => d }; }
  }
  const beeper = new Beeper(FakeAudio);
  assert.equal(beeper.beep(), false);
  beeper.unlock();
  assert.equal(beeper.beep(), true);
  assert.equal(started.length, 1);
  assert.equal(new Beeper(undefined).beep(), false);
});
