// Notifications for the chat page and the widget (issue 15): a browser Notification, an
// optional beep, the unread count in the title and on the widget's button. The rules are the
// pure functions below (tested in frontend/tests/notify.test.mjs); Notifier applies them to a
// page and VisibleTabs tells the leader whether another tab of the same person is on screen.
//
// - Only while nobody looks: this page hidden AND no other tab of this person visible.
// - Only the tab holding the connection (the leader, tabs.js): the others get the same messages
//   over the bus, and one notification per message is the point.
// - Never for my own messages (sent here, from another tab or another device: `from` is me),
//   nor for my own group events.
// - One per conversation burst: tag = conversation id, and no new one for that conversation
//   until it was read or a tab was shown again.
// - Permission only on a user gesture (enable(), from a button); never asked on load.

import { sameIdentity } from "../lib/ids.js";
import { displayName, eventText } from "./format.js";

const SOUND_KEY = "webim.notify.sound";
const VISIBLE_BEAT_MS = 5000; // a visible tab says so this often...
const VISIBLE_FOR_MS = 12_000; // ...and counts as visible this long after (a crashed tab expires)

/** What a notification says about a message (in a group: who said it, first). */
export function messageBody(message, me, { group = false } = {}) {
  if (message.event) return eventText(message.event, message.from, me) ?? "";
  const text = message.text ?? "";
  const body = message.image ? (text ? `Photo: ${text}` : "Photo") : text;
  return group ? `${displayName(message.from)}: ${body}` : body;
}

/**
 * Whether this tab notifies for `message`, and whether it beeps.
 * state: {hidden, leader, othersVisible, me, message, unread (the conversation's, after it),
 *         notified (Set of conversation ids with a notification this burst), permission, sound}
 */
export function decide({ hidden, leader, othersVisible = false, me, message, unread, notified, permission, sound = false }) {
  const no = (why) => ({ notify: false, sound: false, why });
  if (!leader) return no("not the leader tab");
  if (!hidden || othersVisible) return no("someone is looking");
  if (message.own || sameIdentity(message.from, me)) return no("my own");
  if (!(unread > 0)) return no("already read");
  if (notified.has(message.conversation_id)) return no("burst already notified");
  if (permission !== "granted") return no("no permission");
  return { notify: true, sound: Boolean(sound), why: "new" };
}

/** The page title with the unread total in front: "(3) WebIM". */
export function titleText(original, unread) {
  return unread > 0 ? `(${unread}) ${original}` : original;
}

/** The widget button's badge text ("" hides it). */
export function badgeText(unread) {
  if (!(unread > 0)) return "";
  return unread > 99 ? "99+" : String(unread);
}

/**
 * Keeps document.title as "(n) <original>" while n > 0. A title the page (or host) changed
 * since we last set it becomes the new original.
 */
export class TitleCount {
  #set = null;

  constructor(doc = globalThis.document) {
    this.doc = doc;
    this.original = doc.title;
  }

  show(unread) {
    if (this.#set !== null && this.doc.title !== this.#set) this.original = this.doc.title;
    const title = titleText(this.original, unread);
    this.#set = title;
    if (this.doc.title !== title) this.doc.title = title;
  }
}

/**
 * Which other tabs of this person are visible: every tab posts its visibility on a channel of
 * its own (not the tabs.js bus), and repeats "visible" every few seconds while it is, so a tab
 * that crashed while visible stops counting. onShown() runs when another tab became visible.
 */
export class VisibleTabs {
  #seen = new Map(); // tab id -> when it last said it was visible
  #timer = null;

  constructor({ name, tabId = Math.random().toString(36).slice(2), Channel = globalThis.BroadcastChannel,
    visible = () => globalThis.document?.visibilityState === "visible", timers = globalThis, now = () => Date.now(),
    onShown = () => {} }) {
    this.tabId = tabId;
    this.visible = visible;
    this.timers = timers;
    this.now = now;
    this.onShown = onShown;
    this.channel = Channel ? new Channel(`${name}:visibility`) : null;
    if (this.channel) this.channel.onmessage = (event) => this.#heard(event.data);
  }

  start() {
    this.#post({ ask: true });
    this.#beat();
    return this;
  }

  /** Call on visibilitychange (and pagehide: gone = true). */
  changed({ gone = false } = {}) {
    this.#post({ visible: !gone && this.visible() });
  }

  anyVisible() {
    for (const [tab, at] of this.#seen) {
      if (this.now() - at <= VISIBLE_FOR_MS) return true;
      this.#seen.delete(tab);
    }
    return false;
  }

  stop() {
    this.timers.clearTimeout(this.#timer);
    this.changed({ gone: true });
    this.channel?.close();
    this.channel = null; // leaving: the visibilitychange that follows pagehide posts nothing
  }

  #beat() {
    if (this.visible()) this.#post({ visible: true });
    this.#timer = this.timers.setTimeout(() => this.#beat(), VISIBLE_BEAT_MS);
  }

  #post(message) {
    this.channel?.postMessage({ ...message, tab: this.tabId });
  }

  #heard(message) {
    if (!message || message.tab === this.tabId) return;
    if (message.ask) { this.#post({ visible: this.visible() }); return; }
    if (!message.visible) { this.#seen.delete(message.tab); return; }
    const fresh = !this.#seen.has(message.tab);
    this.#seen.set(message.tab, this.now());
    if (fresh) this.onShown();
  }
}

/** A short beep with WebAudio (no audio file). The context is made or resumed on a gesture. */
export class Beeper {
  #context = null;

  constructor(AudioContextImpl = globalThis.AudioContext ?? globalThis.webkitAudioContext) {
    this.AudioContextImpl = AudioContextImpl;
  }

  /** From a user gesture: browsers start audio only after one. */
  unlock() {
    if (!this.AudioContextImpl) return;
    this.#context ??= new this.AudioContextImpl();
    if (this.#context.state === "suspended") this.#context.resume().catch(() => {});
  }

  beep() {
    const context = this.#context;
    if (!context || context.state !== "running") return false;
    const oscillator = context.createOscillator();
    const gain = context.createGain();
    const start = context.currentTime;
    oscillator.frequency.value = 880;
    gain.gain.setValueAtTime(0.15, start);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.18);
    oscillator.connect(gain).connect(context.destination);
    oscillator.start(start);
    oscillator.stop(start + 0.2);
    return true;
  }
}

/**
 * The page's notifier. Hooks: handle(message, {unread, title}) for every "message" event;
 * settle(conversationId, unread) when a conversation's unread count changes; shown() when a
 * tab of this person became visible. onOpen(conversationId) opens the conversation (a click).
 */
export class Notifier {
  notified = new Set();
  #open = new Map(); // conversation id -> its Notification

  constructor({ me, isLeader, onOpen, NotificationImpl = globalThis.Notification, storage = globalThis.localStorage,
    hidden = () => globalThis.document?.visibilityState === "hidden", othersVisible = () => false,
    beeper = new Beeper(), focus = () => globalThis.focus?.() }) {
    this.me = me;
    this.isLeader = isLeader;
    this.onOpen = onOpen;
    this.NotificationImpl = NotificationImpl;
    this.storage = storage;
    this.hidden = hidden;
    this.othersVisible = othersVisible;
    this.beeper = beeper;
    this.focus = focus;
  }

  /** "granted", "denied", "default", or "unsupported" (no Notification API). */
  get permission() {
    return this.NotificationImpl ? this.NotificationImpl.permission : "unsupported";
  }

  get sound() {
    try { return this.storage?.getItem(SOUND_KEY) === "on"; } catch { return false; }
  }

  set sound(on) {
    try { this.storage?.setItem(SOUND_KEY, on ? "on" : "off"); } catch { /* private mode: this tab only */ }
    if (on) this.beeper.unlock();
  }

  /** From a click: ask for the permission (resolves to it). */
  async enable() {
    if (!this.NotificationImpl) return "unsupported";
    this.beeper.unlock();
    return this.NotificationImpl.requestPermission();
  }

  /** A stored message arrived in this tab. Returns what was decided (for tests and logs). */
  handle(message, { unread, title, group = false }) {
    const decision = decide({
      hidden: this.hidden(), leader: this.isLeader(), othersVisible: this.othersVisible(), me: this.me(),
      message, unread, notified: this.notified, permission: this.permission, sound: this.sound,
    });
    if (!decision.notify) return decision;
    const id = message.conversation_id;
    this.notified.add(id);
    try {
      const notification = new this.NotificationImpl(title, { body: messageBody(message, this.me(), { group }), tag: id });
      notification.onclick = () => {
        this.focus();
        notification.close();
        this.onOpen(id);
      };
      notification.onclose = () => { if (this.#open.get(id) === notification) this.#open.delete(id); };
      this.#open.set(id, notification);
    } catch {
      // a browser that only notifies from a service worker (Chrome on Android): title and badge only
    }
    if (decision.sound) this.beeper.beep();
    return decision;
  }

  /** A conversation's unread count changed: read (0) ends its burst. */
  settle(conversationId, unread) {
    if (unread > 0) return;
    this.notified.delete(conversationId);
    this.#open.get(conversationId)?.close();
    this.#open.delete(conversationId);
  }

  /** A tab of this person was shown: every burst ends (the next message notifies again). */
  shown() {
    this.notified.clear();
  }
}

/**
 * Wires a Notifier into a page: client = the (shared) client, store = its ChatStore, name = the
 * identity's tab name, open(conversation) = show it; accept(message) = which conversations this
 * page notifies for (the widget: its seller's only); controls: {enable, sound} buttons (or null),
 * hidden while they have nothing to offer (enable once permission is granted or denied).
 * @param {{client: any, store: import("./store.js").ChatStore, name: string, open: (conversation: any) => void,
 *   accept?: (message: any, conversation: any) => boolean,
 *   controls?: {enable?: HTMLElement | null, sound?: HTMLInputElement | null}}} options
 */
export function wireNotifications({ client, store, name, open, accept = () => true, controls = {} }) {
  const conversationOf = (id) => [...store.conversations.values()].find((c) => c.id === id) ?? null;
  const tabs = new VisibleTabs({ name, onShown: () => notifier.shown() });
  const notifier = new Notifier({
    me: () => store.me ?? client.me,
    isLeader: () => client.isLeader !== false, // a page's own ChatClient (not shared) holds the connection
    othersVisible: () => tabs.anyVisible(),
    onOpen: (id) => { const conversation = conversationOf(id); if (conversation) open(conversation); },
  });
  client.on("message", (message) => {
    const conversation = conversationOf(message.conversation_id); // the store took it first
    if (!conversation || !accept(message, conversation)) return;
    const group = Boolean(conversation.group);
    const title = group ? conversation.group.title ?? "Group" : displayName(message.from);
    notifier.handle(message, { unread: conversation.unread, title, group });
  });
  store.on("conversations", () => {
    for (const id of notifier.notified) notifier.settle(id, conversationOf(id)?.unread ?? 0);
  });
  const { enable, sound } = controls;
  const showControls = () => {
    const permission = notifier.permission;
    if (enable) enable.hidden = permission !== "default";
    if (sound) {
      (sound.closest("label") ?? sound).hidden = permission !== "granted";
      if (sound.type === "checkbox") sound.checked = notifier.sound; // the page's settings menu
      else sound.setAttribute("aria-pressed", String(notifier.sound)); // the widget's button
    }
  };
  enable?.addEventListener("click", () => notifier.enable().then(showControls, showControls));
  sound?.addEventListener(sound.type === "checkbox" ? "change" : "click", () => {
    notifier.sound = sound.type === "checkbox" ? sound.checked : !notifier.sound;
    showControls();
  });
  // Audio starts only after a gesture: a click anywhere lets a sound turned on earlier play.
  globalThis.addEventListener?.("pointerdown", () => { if (notifier.sound) notifier.beeper.unlock(); }, { once: true });
  globalThis.document?.addEventListener("visibilitychange", () => {
    tabs.changed();
    if (globalThis.document.visibilityState === "visible") { notifier.shown(); showControls(); }
  });
  globalThis.addEventListener?.("pagehide", () => tabs.stop());
  tabs.start();
  showControls();
  return notifier;
}
