// The widget's UI: a floating button that opens a small conversation with one seller. It lives
// in a shadow root, so the host page's styles cannot break it and its styles cannot leak out.
// Same client, store and conversation view as the chat page.

import { identityKey, openChat } from "../lib/webim.js";
import { element, presenceText, typingText } from "./format.js";
import { ChatStore } from "./store.js";
import { ThreadView } from "./thread.js";
import { badgeText, TitleCount, wireNotifications } from "./notify.js";

const SESSION_KEY = "webim.session";

export function mountWidget({ base, seller, sellerName, hostTokenUrl, titleCount = false }) {
  const host = element("div");
  host.id = "webim-widget";
  const root = host.attachShadow({ mode: "open" });
  const style = element("link");
  style.rel = "stylesheet";
  style.href = new URL("app/widget.css", base).href;

  const button = element("button", "launcher");
  button.type = "button";
  button.setAttribute("aria-expanded", "false");
  const dot = element("span", "dot");
  const badge = element("span", "badge");
  badge.hidden = true;
  button.append(dot, element("span", "label", `Chat with ${sellerName}`), badge);

  const panel = element("section", "panel");
  panel.hidden = true;
  panel.setAttribute("aria-label", `Chat with ${sellerName}`);
  const header = element("header");
  const title = element("div", "title");
  const presence = element("div", "presence");
  const typing = element("div", "typing");
  typing.hidden = true;
  title.append(element("div", "name", sellerName), presence, typing);
  const close = element("button", "close", "×");
  close.type = "button";
  close.setAttribute("aria-label", "close the chat");
  // Notifications (notify.js): asked for only from this button; the sound toggle once granted.
  const enable = element("button", "notify enable");  // a bell drawn by widget.css (no emoji font needed)
  enable.type = "button";
  enable.hidden = true;
  enable.title = "Enable notifications";
  enable.setAttribute("aria-label", "Enable notifications");
  const sound = element("button", "notify sound", "♪");
  sound.type = "button";
  sound.hidden = true;
  sound.title = "Sound with notifications";
  sound.setAttribute("aria-label", "Sound with notifications");
  const actions = element("div", "actions");
  actions.append(enable, sound, close);
  header.append(title, actions);
  const scroller = element("div", "scroller");
  const list = element("ol", "messages");
  const hello = element("p", "hello", `Ask ${sellerName} anything about this item.`);
  scroller.append(hello, list);
  const form = element("form", "composer");
  const input = element("textarea");
  input.rows = 1;
  input.placeholder = "Write a message";
  input.setAttribute("aria-label", "message");
  const send = element("button", "send", "Send");
  send.type = "submit";
  // a photo (protocol.md §14.1): the button opens the file picker
  const photo = element("button", "photo-button"); // the camera is drawn by widget.css
  photo.type = "button";
  photo.title = "send a photo";
  photo.setAttribute("aria-label", "send a photo");
  const file = element("input");
  file.type = "file";
  file.accept = "image/jpeg,image/png,image/webp,image/gif";
  file.hidden = true;
  form.append(photo, file, input, send);
  const notice = element("p", "notice");
  const state = element("p", "state");
  panel.append(header, scroller, form, notice, state);
  root.append(style, button, panel);
  document.body.append(host);

  let started = null;
  let store = null;
  let conversation = null;
  let view = null;
  const hostTitle = titleCount ? new TitleCount() : null; // only when the host opted in (data-title-count)

  async function start() {
    const { client, session } = await openChat({ base, hostTokenUrl });
    store = new ChatStore(client);
    conversation = store.conversationWith(seller);
    view = new ThreadView({ store, list, scroller, form, input, notice, photoButton: photo, fileInput: file, overlayHost: root });
    wireNotifications({ client, store, name: `webim:${identityKey(session.identity)}`, open: () => openPanel(),
      accept: (message, about) => about === conversation, controls: { enable, sound } });
    store.on("conversations", refresh);
    store.on("presence", refresh);
    store.on("typing", refresh);
    store.on("status", (status) => { state.textContent = status.state === "online" ? "" : "reconnecting…"; });
    for (let attempt = 0; ; attempt += 1) {
      try {
        await store.loadConversations();
        // the list comes in pages, newest first: an older conversation with this seller is further on
        while (!conversation.id && store.conversationsMore) await store.loadMoreConversations();
        await store.unsettled();
        break;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, Math.min(1000 * 2 ** attempt, 10_000)));
      }
    }
    store.refreshPresence().catch(() => {});
    setInterval(() => store.refreshPresence().catch(() => {}), 60_000);
    host.dataset.ready = "true";
    if (!panel.hidden) view.show(conversation);
  }

  function refresh() {
    if (!conversation) return;
    const online = Boolean(conversation.presence?.online);
    dot.dataset.online = String(online);
    presence.textContent = presenceText(conversation.presence);
    typing.textContent = typingText(store.typingNow(conversation));
    typing.hidden = !typing.textContent;
    presence.hidden = !typing.hidden;
    const unread = panel.hidden || document.hidden ? conversation.unread : 0;
    badge.textContent = badgeText(unread);
    badge.hidden = unread === 0;
    hostTitle?.show(unread);
    hello.hidden = conversation.entries.size > 0 || Boolean(conversation.last);
  }

  function ensureStarted() {
    started ??= start().catch((error) => { started = null; state.textContent = "chat unavailable, try again"; throw error; });
    return started;
  }

  async function openPanel() {
    panel.hidden = false;
    button.hidden = true;
    button.setAttribute("aria-expanded", "true");
    input.focus();
    await ensureStarted();
    view.show(conversation);
    refresh();
  }
  button.addEventListener("click", openPanel);
  close.addEventListener("click", () => {
    panel.hidden = true;
    button.hidden = false;
    button.setAttribute("aria-expanded", "false");
    view?.hide();
    refresh();
  });

  // A buyer who chatted before is connected at once (replies and the unread badge arrive while
  // browsing); a first-time visitor becomes one only when opening the chat.
  if (localStorage.getItem(SESSION_KEY) || hostTokenUrl) ensureStarted().catch(() => {});
}
