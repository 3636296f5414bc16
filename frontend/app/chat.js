// The chat page: the conversation list (last message, unread count, presence) and one open
// conversation. On a phone-sized screen the two are separate views with a back button.

import { openChat } from "../lib/webim.js";
import { identityKey } from "../lib/ids.js";
import { displayName, element, initials, listTime, presenceText, statusText } from "./format.js";
import { ChatStore } from "./store.js";
import { ThreadView } from "./thread.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const { client, session, config } = await openChat({
  base: new URL("../", import.meta.url),
  forceLongPoll: params.get("transport") === "longpoll",
});
const store = new ChatStore(client);
const thread = new ThreadView({
  store, list: $("messages"), scroller: $("scroller"), form: $("composer"), input: $("input"), notice: $("notice"),
});
const app = $("app");
let current = null;

// -- who am I, and the connection -----------------------------------------------------------
function showMe() {
  const me = store.me ?? session.identity;
  $("me-name").textContent = displayName(me);
  $("me-avatar").textContent = initials(me);
  app.dataset.me = identityKey(me);
  $("sign-in").textContent = session.mode === "visitor" ? "Sign in" : "Switch";
}

function showStatus(status) {
  const line = $("status");
  line.textContent = statusText(status);
  line.dataset.state = status.state;
  line.dataset.transport = status.transport ?? "";
  app.dataset.leader = String(status.leader !== false);
}

store.on("status", showStatus);
store.on("conversations", () => { showMe(); renderList(); });

// -- the conversation list --------------------------------------------------------------------
const rows = new Map(); // peer key -> <li>

function renderList() {
  const list = $("conversations");
  const conversations = store.sortedConversations();
  conversations.forEach((conversation, index) => {
    const row = rows.get(conversation.key) ?? newRow(conversation);
    fillRow(row, conversation);
    if (list.children[index] !== row) list.insertBefore(row, list.children[index] ?? null);
  });
  $("no-conversations").hidden = conversations.length > 0;
  list.dataset.more = String(store.conversationsMore);
  const unread = conversations.reduce((sum, c) => sum + (c === current && !document.hidden ? 0 : c.unread), 0);
  document.title = unread > 0 ? `(${unread}) WebIM` : "WebIM";
  loadMoreAtEnd();
}

// The list comes a page at a time (protocol.md §6.6): the next page when it is scrolled to its
// end, or while it does not fill its box yet.
function loadMoreAtEnd() {
  const list = $("conversations");
  if (!store.conversationsMore || list.clientHeight === 0) return; // hidden (a thread is open on a phone)
  if (list.scrollTop + list.clientHeight < list.scrollHeight - 80) return;
  store.loadMoreConversations().catch(() => {}); // not connected: the next scroll asks again
}
$("conversations").addEventListener("scroll", loadMoreAtEnd, { passive: true });

function newRow(conversation) {
  const row = element("li", "conversation");
  row.tabIndex = 0;
  row.dataset.peer = conversation.key;
  const avatar = element("span", "avatar", initials(conversation.peer));
  avatar.append(element("span", "dot"));
  const body = element("div", "body");
  const top = element("div", "top");
  top.append(element("span", "name", displayName(conversation.peer)), element("time", "when"));
  const bottom = element("div", "bottom");
  bottom.append(element("span", "preview"), element("span", "unread"));
  body.append(top, bottom);
  row.append(avatar, body);
  row.addEventListener("click", () => open(conversation));
  row.addEventListener("keydown", (event) => { if (event.key === "Enter") open(conversation); });
  rows.set(conversation.key, row);
  return row;
}

function fillRow(row, conversation) {
  const last = conversation.last;
  const mine = last && store.me && identityKey(last.from) === identityKey(store.me);
  row.querySelector(".preview").textContent = last ? `${mine ? "You: " : ""}${last.text}` : "";
  row.querySelector(".when").textContent = listTime(last?.time);
  const unread = conversation === current && !document.hidden ? 0 : conversation.unread;
  const badge = row.querySelector(".unread");
  badge.textContent = unread > 0 ? String(unread) : "";
  badge.hidden = unread === 0;
  row.dataset.unread = String(unread);
  row.dataset.online = String(Boolean(conversation.presence?.online));
  row.classList.toggle("active", conversation === current);
}

// -- one conversation -------------------------------------------------------------------------
function open(conversation) {
  current = conversation;
  app.dataset.view = "thread";
  app.dataset.peer = conversation.key;
  $("peer-name").textContent = displayName(conversation.peer);
  $("peer-avatar").textContent = initials(conversation.peer);
  showPresence(conversation);
  thread.show(conversation);
  renderList();
  if (matchMedia("(pointer: fine)").matches) $("input").focus();
  history.replaceState(null, "", `#${encodeURIComponent(conversation.key)}`);
}

function showPresence(conversation) {
  if (conversation !== current) return;
  $("peer-presence").textContent = presenceText(conversation.presence);
  $("peer-presence").dataset.online = String(Boolean(conversation.presence?.online));
}

store.on("presence", showPresence);

$("back").addEventListener("click", () => {
  app.dataset.view = "list";
  history.replaceState(null, "", location.pathname + location.search);
  current = null;
  thread.hide();
  renderList();
});

$("start").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("start-peer").value.trim();
  if (!id) return;
  const peer = id.startsWith("visitor:") ? { kind: "visitor", id: id.slice(8) } : { kind: "user", id };
  if (store.me && identityKey(peer) === identityKey(store.me)) {
    $("start-peer").setCustomValidity("That is you.");
    $("start-peer").reportValidity();
    return;
  }
  $("start-peer").value = "";
  open(store.conversationWith(peer));
  store.refreshPresence().catch(() => {});
});
$("start-peer").addEventListener("input", () => $("start-peer").setCustomValidity(""));

// -- signing in -------------------------------------------------------------------------------
const dialog = $("sign-in-dialog");
$("sign-in").addEventListener("click", () => {
  $("sign-in-hint").textContent = config.devLogin
    ? "Development login (local stack): any name becomes a user."
    : "Sign in on the website; this page then uses your account.";
  $("sign-in-name").disabled = !config.devLogin;
  dialog.showModal();
});
$("sign-in-form").addEventListener("submit", async (event) => {
  const name = $("sign-in-name").value.trim();
  if (!name || !config.devLogin) return;
  event.preventDefault();
  await session.signInDev(name);
  location.hash = "";
  location.reload(); // the other tabs follow (storage event)
});
$("sign-in-visitor").addEventListener("click", async () => {
  session.signOut();
  await session.signInVisitor();
  location.hash = "";
  location.reload();
});

// -- start --------------------------------------------------------------------------------------
document.addEventListener("visibilitychange", renderList);
showMe();
showStatus(client.status);
$("sign-in").disabled = false;

async function loadEverything() {
  try {
    await store.loadConversations();
    await store.unsettled();
    const wanted = decodeURIComponent(location.hash.slice(1));
    const conversation = wanted && store.conversations.get(wanted);
    if (conversation && !current) open(conversation);
    app.dataset.ready = "true";
  } catch {
    setTimeout(loadEverything, 1000); // not connected yet: try again
  }
}
loadEverything();
setInterval(() => store.refreshPresence().catch(() => {}), 60_000);
