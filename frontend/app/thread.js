// One conversation on screen: its messages with their states, older history on scrolling up,
// the composer, the resend button of a failed message, and the read mark once seen. In a group:
// the sender's name above the first bubble of each run, membership events as centred system
// lines, and no composer once we are out of the group. Shared by the chat page and the widget.

import { codePoints, textProblem } from "../lib/text.js";
import { clockTime, displayName, element, eventText, STATE_LABELS } from "./format.js";

const NEAR_BOTTOM_PX = 60;

export class ThreadView {
  conversation = null;
  #items = new Map(); // entry key -> <li>
  #loadingOlder = false;

  /** list: <ol> of messages; scroller: the element that scrolls; form/input: the composer; notice: error line. */
  constructor({ store, list, scroller, form, input, notice }) {
    Object.assign(this, { store, list, scroller, form, input, notice });
    store.on("thread", (conversation) => { if (conversation === this.conversation) this.render(); });
    scroller.addEventListener("scroll", () => this.#maybeLoadOlder());
    form.addEventListener("submit", (event) => { event.preventDefault(); this.#send(); });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); this.#send(); }
    });
    input.addEventListener("input", () => this.#checkLength());
    list.addEventListener("click", (event) => {
      const button = event.target.closest?.("button.resend");
      if (button) this.store.resend(button.dataset.id);
    });
    document.addEventListener("visibilitychange", () => this.#markRead());
  }

  async show(conversation) {
    if (this.conversation !== conversation) {
      this.conversation = conversation;
      this.#items.clear();
      this.list.replaceChildren();
    }
    this.render({ toBottom: true });
    if (!conversation.loaded && conversation.id) {
      await this.store.loadHistory(conversation).catch(() => {});
      this.render({ toBottom: true });
    }
    this.#markRead();
  }

  hide() {
    this.conversation = null;
  }

  render({ toBottom = false } = {}) {
    const conversation = this.conversation;
    if (!conversation) return;
    const atBottom = this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < NEAR_BOTTOM_PX;
    const heightBefore = this.scroller.scrollHeight;
    const firstBefore = this.list.firstElementChild;
    // an event of a type this page does not know fills its seq but shows nothing (protocol.md §13.3)
    const entries = this.store.entries(conversation).filter((entry) => !entry.event || this.#eventLine(entry));
    const keep = new Set();
    let previous = null;
    entries.forEach((entry, index) => {
      const item = entry.event ? this.#systemItem(entry) : this.#item(entry);
      if (conversation.group && !entry.event && !entry.own) {
        // the name above the first bubble of a run of one sender's messages
        const run = previous && !previous.event && !previous.own && previous.from?.kind === entry.from?.kind
          && previous.from?.id === entry.from?.id;
        item.classList.toggle("continued", Boolean(run));
      }
      previous = entry;
      keep.add(entry.key);
      if (this.list.children[index] !== item) this.list.insertBefore(item, this.list.children[index] ?? null);
    });
    for (const [key, item] of this.#items) {
      if (!keep.has(key)) { item.remove(); this.#items.delete(key); }
    }
    if (toBottom || atBottom || (entries.at(-1)?.own && entries.at(-1)?.seq === null)) {
      this.scroller.scrollTop = this.scroller.scrollHeight;
    } else if (firstBefore && this.list.firstElementChild !== firstBefore) {
      this.scroller.scrollTop += this.scroller.scrollHeight - heightBefore; // older messages above: stay put
    }
    this.#showMembership();
    this.#markRead();
  }

  /** Out of the group (removed, or left): the thread stays readable, the composer goes. */
  #showMembership() {
    const out = Boolean(this.conversation?.removed);
    this.form.hidden = out;
    this.form.dataset.removed = out ? String(this.conversation.removed) : "";
    if (out) {
      this.notice.textContent = this.conversation.removed === "left"
        ? "You left this group." : "You were removed from this group.";
      this.notice.dataset.kind = "membership";
    } else if (this.notice.dataset.kind === "membership") {
      this.notice.textContent = "";
      this.notice.dataset.kind = "";
    }
  }

  #eventLine(entry) {
    return eventText(entry.event, entry.from, this.store.me);
  }

  /** The <li> shown for this entry, unless it was of the other kind (a seq first shown from a
   * copy without its event, or the reverse): then a new one. */
  #existing(entry, system) {
    const item = this.#items.get(entry.key);
    if (!item || item.classList.contains("system") === system) return item;
    item.remove();
    this.#items.delete(entry.key);
    return undefined;
  }

  #systemItem(entry) {
    let item = this.#existing(entry, true);
    if (!item) {
      item = element("li", "system");
      item.append(element("span", "line"));
      this.#items.set(entry.key, item);
    }
    item.dataset.key = entry.key;
    item.dataset.seq = String(entry.seq);
    item.dataset.event = entry.event.type;
    item.querySelector(".line").textContent = this.#eventLine(entry);
    item.title = clockTime(entry.time);
    return item;
  }

  #item(entry) {
    let item = this.#existing(entry, false);
    if (!item) {
      item = element("li", `msg ${entry.own ? "own" : "peer"}`);
      const bubble = element("div", "bubble");
      if (this.conversation?.group && !entry.own) {
        const sender = element("div", "sender", displayName(entry.from));
        sender.dataset.from = entry.from ? `${entry.from.kind}:${entry.from.id}` : "";
        bubble.append(sender);
      }
      bubble.append(element("p", "text", entry.text), element("div", "meta"));
      item.append(bubble);
      this.#items.set(entry.key, item);
    }
    const signature = `${entry.state}|${entry.time}|${entry.seq}`;
    if (item.dataset.signature === signature) return item;
    item.dataset.signature = signature;
    item.dataset.key = entry.key;
    item.dataset.id = entry.id ?? "";
    if (entry.seq !== null) item.dataset.seq = String(entry.seq);
    if (entry.state) item.dataset.state = entry.state;
    const meta = item.querySelector(".meta");
    meta.replaceChildren(element("time", null, clockTime(entry.time)));
    if (entry.own && entry.state) {
      const { mark, label } = STATE_LABELS[entry.state];
      const tick = element("span", `tick ${entry.state}`, mark);
      tick.title = label;
      tick.setAttribute("aria-label", label);
      meta.append(tick);
    }
    item.querySelector("button.resend")?.remove();
    if (entry.state === "failed") {
      const button = element("button", "resend", "Resend");
      button.type = "button";
      button.dataset.id = entry.id;
      item.append(button);
    }
    return item;
  }

  #send() {
    const text = this.input.value;
    if (!this.conversation || this.conversation.removed || textProblem(text)) { this.#checkLength(); return; }
    this.store.send(this.conversation, text);
    this.input.value = "";
    this.#checkLength();
    this.input.focus();
  }

  #checkLength() {
    if (this.conversation?.removed) return; // the notice says why there is no composer
    const problem = this.input.value ? textProblem(this.input.value) : null;
    const count = codePoints(this.input.value);
    this.notice.textContent = problem === "too_long" ? `Too long: ${count} of 4000 characters` : count > 3500 ? `${count} / 4000` : "";
    this.form.classList.toggle("invalid", problem === "too_long");
  }

  async #maybeLoadOlder() {
    const conversation = this.conversation;
    if (!conversation || this.#loadingOlder || !conversation.more || this.scroller.scrollTop > 80) return;
    this.#loadingOlder = true;
    try {
      await this.store.loadHistory(conversation);
    } catch {
      // offline: the next scroll tries again
    } finally {
      this.#loadingOlder = false;
    }
  }

  #markRead() {
    const conversation = this.conversation;
    if (!conversation || document.visibilityState !== "visible") return;
    this.store.markRead(conversation).catch(() => {});
  }
}
