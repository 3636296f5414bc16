// One conversation on screen: its messages with their states, older history on scrolling up,
// the composer, the resend button of a failed message, and the read mark once seen. In a group:
// the sender's name above the first bubble of each run, membership events as centred system
// lines, and no composer once we are out of the group. Photos (protocol.md §14.1): a thumbnail
// (the preview at once, then the signed URL), upload progress and Retry, full size in an overlay;
// "Seen" under the last own message the peer has read; typing in the composer tells the peer.
// Shared by the chat page and the widget.

import { fitted } from "../lib/media.js";
import { codePoints, textProblem } from "../lib/text.js";
import { clockTime, displayName, element, eventText, STATE_LABELS } from "./format.js";

const NEAR_BOTTOM_PX = 60;
const THUMBNAIL_PX = 240;

export class ThreadView {
  conversation = null;
  #items = new Map(); // entry key -> <li>
  #loadingOlder = false;

  /** list: <ol> of messages; scroller: the element that scrolls; form/input: the composer; notice: error line;
   * photoButton/fileInput: picking a photo; overlayHost: where the full-size overlay goes. */
  constructor({ store, list, scroller, form, input, notice, photoButton = null, fileInput = null, overlayHost = document.body }) {
    this.store = store;
    this.list = list;
    this.scroller = scroller;
    this.form = form;
    this.input = input;
    this.notice = notice;
    this.photoButton = photoButton;
    this.fileInput = fileInput;
    store.on("thread", (conversation) => { if (conversation === this.conversation) this.render(); });
    scroller.addEventListener("scroll", () => this.#maybeLoadOlder());
    form.addEventListener("submit", (event) => { event.preventDefault(); this.#send(); });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); this.#send(); }
    });
    input.addEventListener("input", () => {
      this.#checkLength();
      if (this.conversation && /\S/u.test(input.value)) this.store.typing(this.conversation);
    });
    list.addEventListener("click", (event) => {
      const button = event.target.closest?.("button.resend");
      if (button) this.store.resend(button.dataset.id);
      const remove = event.target.closest?.("button.delete");
      if (remove) this.#delete(Number(remove.dataset.seq));
      const photo = event.target.closest?.("button.photo");
      if (photo) this.#openOverlay(photo);
    });
    // an <img> error does not bubble: caught on the way down
    list.addEventListener("error", (event) => {
      if (event.target?.tagName === "IMG") this.#imageFailed(event.target);
    }, true);
    photoButton?.addEventListener("click", () => fileInput?.click());
    fileInput?.addEventListener("change", () => this.#sendPhotos());
    this.overlay = element("div", "overlay");
    this.overlay.hidden = true;
    this.overlay.setAttribute("role", "dialog");
    this.overlay.setAttribute("aria-label", "photo");
    this.overlay.append(element("img"));
    this.overlay.addEventListener("click", () => this.#closeOverlay());
    overlayHost.append(this.overlay);
    document.addEventListener("keydown", (event) => { if (event.key === "Escape") this.#closeOverlay(); });
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
    this.#showSeen(entries);
    if (toBottom || atBottom || (entries.at(-1)?.own && entries.at(-1)?.seq === null)) {
      this.scroller.scrollTop = this.scroller.scrollHeight;
    } else if (firstBefore && this.list.firstElementChild !== firstBefore) {
      this.scroller.scrollTop += this.scroller.scrollHeight - heightBefore; // older messages above: stay put
    }
    this.#showMembership();
    this.#markRead();
  }

  /** Out of the group (removed, or left), or a peer we blocked (§15): the thread stays
   * readable, the composer goes. */
  #showMembership() {
    const blocked = Boolean(this.conversation?.blocked);
    const out = Boolean(this.conversation?.removed) || blocked;
    this.form.hidden = out;
    this.form.dataset.removed = out ? String(this.conversation.removed || "blocked") : "";
    if (out) {
      this.notice.textContent = blocked ? "You blocked this person. Unblock to write again."
        : this.conversation.removed === "left" ? "You left this group." : "You were removed from this group.";
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
    this.#photo(item, entry);
    const deletable = this.store.canDelete(this.conversation, entry);
    const signature = `${entry.state}|${entry.time}|${entry.seq}|${Boolean(entry.deleted)}|${deletable}`;
    if (item.dataset.signature === signature) return item;
    item.dataset.signature = signature;
    // deleted for everyone (protocol.md §16): the bubble stays in its place, without its text
    item.classList.toggle("deleted", Boolean(entry.deleted));
    item.querySelector("p.text").textContent = entry.deleted ? "Message deleted" : entry.text;
    item.querySelector("button.delete")?.remove();
    if (deletable) {
      const remove = element("button", "delete", "Delete");
      remove.type = "button";
      remove.title = "Delete for everyone";
      remove.dataset.seq = String(entry.seq);
      item.querySelector(".bubble").append(remove);
    }
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
      // a photo whose upload failed, or whose send did: Retry (the same message id either way)
      const button = element("button", "resend", entry.image ? "Retry" : "Resend");
      button.type = "button";
      button.dataset.id = entry.id;
      item.append(button);
    }
    return item;
  }

  /** Delete for everyone (§16), after the user confirms; a refusal (too old, ...) in the notice. */
  async #delete(seq) {
    const conversation = this.conversation;
    if (!conversation || !window.confirm("Delete this message for everyone?")) return;
    try {
      await this.store.deleteMessage(conversation, seq);
    } catch (error) {
      const reasons = { delete_window_passed: "it is too old to delete", not_your_message: "it is not yours" };
      this.notice.textContent = `Could not delete: ${reasons[error.code] ?? error.code ?? error.message}`;
    }
  }

  /** The thumbnail: the preview at once, the signed URL (or our own upload) when there is one. */
  #photo(item, entry) {
    const bubble = item.querySelector(".bubble");
    let button = bubble.querySelector("button.photo");
    if (!entry.image) { button?.remove(); return; }
    if (!button) {
      button = element("button", "photo");
      button.type = "button";
      const img = element("img");
      img.alt = "Photo";
      img.decoding = "async";
      button.append(img);
      button.setAttribute("aria-label", "open the photo");
      bubble.insertBefore(button, bubble.querySelector(".text"));
    }
    const img = button.querySelector("img");
    const { width, height } = fitted(entry.image.width || THUMBNAIL_PX, entry.image.height || THUMBNAIL_PX, THUMBNAIL_PX);
    if (img.width !== width) img.width = width;
    if (img.height !== height) img.height = height;
    const source = this.store.imageSource(entry);
    const src = source ?? entry.image.preview ?? "";
    // a refreshed URL may be the very one that failed (signed in the same second): load it again
    const again = source && entry.image.fresh && img.dataset.failed === src;
    if (again) { delete img.dataset.failed; img.removeAttribute("src"); }
    if (src && img.getAttribute("src") !== src) img.src = src;
    button.dataset.source = source ? "full" : "preview";
    if (!source && !entry.image.gone && entry.seq !== null && this.conversation?.id) {
      this.store.refreshImage(this.conversation, entry).catch(() => {});
    }
    let bar = item.querySelector("progress.upload");
    if (entry.state === "uploading") {
      if (!bar) {
        bar = element("progress", "upload");
        bar.max = 1;
        bar.setAttribute("aria-label", "upload progress");
        bubble.append(bar);
      }
      bar.value = entry.progress ?? 0;
    } else {
      bar?.remove();
    }
  }

  #imageFailed(img) {
    const key = img.closest("li")?.dataset.key;
    const entry = key && this.conversation?.entries.get(key);
    if (!entry?.image || img.src.startsWith("data:")) return;
    img.dataset.failed = img.src;
    this.store.imageFailed(this.conversation, entry, img.src);
  }

  #openOverlay(button) {
    const key = button.closest("li")?.dataset.key;
    const entry = key && this.conversation?.entries.get(key);
    if (!entry?.image) return;
    const img = this.overlay.querySelector("img");
    img.src = this.store.imageSource(entry) ?? button.querySelector("img").src;
    img.alt = entry.text ? `Photo: ${entry.text}` : "Photo";
    this.overlay.hidden = false;
  }

  #closeOverlay() {
    if (this.overlay.hidden) return;
    this.overlay.hidden = true;
    this.overlay.querySelector("img").removeAttribute("src");
  }

  /** "Seen" under the last of our messages the peer has read (1:1 only, protocol.md §14.3). */
  #showSeen(entries) {
    const upto = this.conversation.group ? 0 : this.conversation.peerReadSeq ?? 0;
    const last = upto > 0 ? entries.findLast((entry) => entry.own && entry.seq !== null && entry.seq <= upto && !entry.event) : null;
    for (const entry of entries) {
      const item = this.#items.get(entry.key);
      const mark = item?.querySelector(":scope > .seen");
      if (entry === last && !mark) item.append(element("div", "seen", "Seen"));
      else if (entry !== last && mark) mark.remove();
    }
  }

  /** Every picked file becomes a photo message; what the composer holds is the first one's caption. */
  #sendPhotos() {
    const files = [...(this.fileInput.files ?? [])];
    this.fileInput.value = "";
    if (!this.conversation || this.conversation.removed || files.length === 0) return;
    const caption = textProblem(this.input.value) ? "" : this.input.value;
    files.forEach((file, index) => this.store.sendImage(this.conversation, file, index === 0 ? caption : ""));
    if (caption) { this.input.value = ""; this.#checkLength(); }
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
