// The chat page: the conversation list (last message, unread count, presence; groups with their
// title) and one open conversation; for a group, its member list with presence, add, rename and
// leave. On a phone-sized screen the list and the conversation are separate views with a back
// button.

import { openChat } from "../lib/webim.js";
import { identityKey } from "../lib/ids.js";
import {
  displayName, element, groupInitials, initials, listTime, presenceText, previewText, statusText, typingText,
} from "./format.js";
import { ChatStore } from "./store.js";
import { ThreadView } from "./thread.js";
import { TitleCount, wireNotifications } from "./notify.js";

/**
 * An element of index.html by id. Typed as the union of the controls the page reads (a form
 * field's value, a dialog's showModal...): which one an id names is the markup's to say.
 * @param {string} id @returns {HTMLElement & HTMLInputElement & HTMLDialogElement}
 */
const $ = (id) => /** @type {any} */ (document.getElementById(id));
const params = new URLSearchParams(location.search);

const { client, session, config } = await openChat({
  base: new URL("../", import.meta.url),
  forceLongPoll: params.get("transport") === "longpoll",
});
const store = new ChatStore(client);
// an operator banned this account (docs/operator.md): the client stopped; say so, once
client.on("banned", () => { $("notice").textContent = "This account was banned by the site's operator."; });
const thread = new ThreadView({
  store, list: $("messages"), scroller: $("scroller"), form: $("composer"), input: $("input"), notice: $("notice"),
  photoButton: $("photo"), fileInput: $("photo-file"),
});
const app = $("app");
let current = null;
const title = new TitleCount(); // "(3) WebIM" while there are unread messages
// Notifications while hidden (notify.js); clicking one opens its conversation.
wireNotifications({ client, store, name: `webim:${identityKey(session.identity)}`, open: (conversation) => open(conversation),
  controls: { enable: $("notify-enable"), sound: $("notify-sound") } });

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
store.on("conversations", () => { showMe(); renderList(); if (current?.group) showHeader(current); });

// -- the conversation list --------------------------------------------------------------------
const rows = new Map(); // conversation key (peer key, or group id) -> <li>

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
  title.show(unread);
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
  row.dataset.peer = conversation.key; // a group's key is its id
  if (conversation.group) row.dataset.group = "true";
  const avatar = element("span", conversation.group ? "avatar group" : "avatar",
    conversation.group ? groupInitials(conversation.group.title) : initials(conversation.peer));
  avatar.append(element("span", "dot"));
  const body = element("div", "body");
  const top = element("div", "top");
  top.append(element("span", "name", conversation.group ? "" : displayName(conversation.peer)), element("time", "when"));
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
  if (conversation.group) {
    row.querySelector(".name").textContent = groupTitle(conversation);
    row.querySelector(".avatar").firstChild.nodeValue = groupInitials(conversation.group.title);
    row.dataset.removed = conversation.removed ? String(conversation.removed) : "";
  }
  row.querySelector(".preview").textContent = previewText(last, store.me, { group: Boolean(conversation.group) });
  row.querySelector(".when").textContent = listTime(last?.time);
  const unread = conversation === current && !document.hidden ? 0 : conversation.unread;
  const badge = row.querySelector(".unread");
  badge.textContent = unread > 0 ? String(unread) : "";
  badge.hidden = unread === 0;
  row.dataset.unread = String(unread);
  row.dataset.online = String(Boolean(conversation.presence?.online));
  row.classList.toggle("active", conversation === current);
}

function groupTitle(conversation) {
  return conversation.group.title ?? "Group";
}

// -- one conversation -------------------------------------------------------------------------
function open(conversation) {
  current = conversation;
  app.dataset.view = "thread";
  app.dataset.peer = conversation.key;
  app.dataset.kind = conversation.group ? "group" : "direct";
  showHeader(conversation);
  showPresence(conversation);
  showTyping(conversation);
  if (!conversation.group) closeMembers();
  else if (!$("members-panel").hidden) openMembers();
  thread.show(conversation);
  renderList();
  if (matchMedia("(pointer: fine)").matches) $("input").focus();
  history.replaceState(null, "", `#${encodeURIComponent(conversation.key)}`);
}

function showHeader(conversation) {
  if (conversation.group) {
    $("peer-name").textContent = groupTitle(conversation);
    $("peer-avatar").textContent = groupInitials(conversation.group.title);
    const count = conversation.group.membersCount;
    $("peer-presence").textContent = conversation.removed ? "not a member" : `${count} member${count === 1 ? "" : "s"}`;
    $("peer-presence").dataset.online = "false";
  } else {
    $("peer-name").textContent = displayName(conversation.peer);
    $("peer-avatar").textContent = initials(conversation.peer);
  }
  $("members-toggle").hidden = !conversation.group;
  $("report-form").hidden = true; // a report is about the conversation it was opened in
  showBlocked(conversation);
}

// -- the conversation's menu: Block / Unblock a 1:1 peer (protocol.md §15) --------------------
const conversationMenu = $("conversation-menu");
function showConversationMenu(shown) {
  conversationMenu.hidden = !shown;
  $("conversation-menu-toggle").setAttribute("aria-expanded", String(shown));
}
function showBlocked(conversation) {
  if (conversation !== current) return;
  $("conversation-menu-toggle").hidden = !conversation.id; // groups too: Report (§17), no Block
  $("block-toggle").hidden = Boolean(conversation.group);
  $("block-toggle").textContent = conversation.blocked ? "Unblock" : "Block";
  $("thread").dataset.blocked = String(Boolean(conversation.blocked));
  if (!conversation.id) showConversationMenu(false);
}
$("conversation-menu-toggle").addEventListener("click", () => showConversationMenu(conversationMenu.hidden));
document.addEventListener("click", ({ target }) => {
  const inside = target instanceof Element && target.closest("#conversation-menu, #conversation-menu-toggle");
  if (!conversationMenu.hidden && !inside) showConversationMenu(false);
});
$("block-toggle").addEventListener("click", async () => {
  const conversation = current;
  showConversationMenu(false);
  if (!conversation) return;
  try {
    await store.setBlocked(conversation, !conversation.blocked);
  } catch (error) {
    $("notice").textContent = `Could not ${conversation.blocked ? "unblock" : "block"}: ${error.code ?? error.message}`;
  }
});
store.on("thread", showBlocked);

// -- Report the conversation to the site's operator (protocol.md §17) -------------------------
const reportForm = $("report-form");
function showReportForm(shown) {
  reportForm.hidden = !shown;
  if (shown) {
    $("report-note").value = "";
    $("report-reason").focus();
  }
}
$("report-open").addEventListener("click", () => { showConversationMenu(false); showReportForm(true); });
$("report-cancel").addEventListener("click", () => showReportForm(false));
reportForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const conversation = current;
  const reason = $("report-reason").value, note = $("report-note").value;
  showReportForm(false);
  if (!conversation?.id) return;
  try {
    await store.report(conversation, reason, note);
    $("notice").textContent = "Reported. Thank you: the site's team will look at it.";
  } catch (error) {
    $("notice").textContent = `Could not report: ${error.code ?? error.message}`;
  }
});

function showPresence(conversation) {
  if (conversation !== current || conversation.group) return;
  $("peer-presence").textContent = presenceText(conversation.presence);
  $("peer-presence").dataset.online = String(Boolean(conversation.presence?.online));
}

store.on("presence", showPresence);

// "typing…" under the header, in place of the presence line (protocol.md §14.2)
function showTyping(conversation) {
  if (conversation !== current) return;
  const text = typingText(store.typingNow(conversation), { group: Boolean(conversation.group) });
  $("peer-typing").textContent = text;
  $("peer-typing").hidden = !text;
  $("peer-presence").hidden = Boolean(text);
}

store.on("typing", showTyping);

// -- settings: read receipts (protocol.md §14.3) ----------------------------------------------
const settingsMenu = $("settings-menu");
function showSettingsMenu(shown) {
  settingsMenu.hidden = !shown;
  $("settings-toggle").setAttribute("aria-expanded", String(shown));
}
$("settings-toggle").addEventListener("click", () => showSettingsMenu(settingsMenu.hidden));
document.addEventListener("click", (event) => {
  const target = /** @type {Element} */ (event.target);
  if (!settingsMenu.hidden && !target.closest?.("#settings-menu, #settings-toggle")) showSettingsMenu(false);
});
document.addEventListener("keydown", (event) => { if (event.key === "Escape") showSettingsMenu(false); });
store.on("settings", ({ read_receipts: on }) => {
  $("read-receipts").checked = on;
  $("read-receipts").disabled = false;
});
$("read-receipts").addEventListener("change", async () => {
  const box = $("read-receipts");
  box.disabled = true;
  try {
    await store.setReadReceipts(box.checked);
  } catch {
    box.checked = store.readReceipts !== false; // not changed: show what is
  } finally {
    box.disabled = false;
  }
});

// -- a group's members -------------------------------------------------------------------------
const panel = $("members-panel");

function openMembers() {
  if (!current?.group) return;
  panel.hidden = false;
  $("thread").classList.add("with-members");
  $("members-error").textContent = "";
  renderMembers(current);
  if (!current.removed) store.loadMembers(current).catch(showError);
}

function closeMembers() {
  panel.hidden = true;
  $("thread").classList.remove("with-members");
}

function showError(error) {
  $("members-error").textContent = error?.message ?? String(error);
}

function canManage(conversation) {
  return !conversation.removed && ["owner", "admin"].includes(conversation.group.role);
}

/** May I remove this member (protocol.md §13.2)? Never the owner nor myself; admins only the owner. */
function canRemove(conversation, entry) {
  if (!canManage(conversation) || identityKey(entry.member) === identityKey(store.me) || entry.role === "owner") return false;
  return conversation.group.role === "owner" || entry.role === "member";
}

function renderMembers(conversation) {
  if (conversation !== current || panel.hidden) return;
  const count = conversation.group.membersCount;
  $("members-heading").textContent = `Members (${count})`;
  $("rename-form").hidden = !canManage(conversation);
  $("add-form").hidden = !canManage(conversation);
  $("leave-group").hidden = Boolean(conversation.removed);
  if (document.activeElement !== $("rename-title")) $("rename-title").value = conversation.group.title ?? "";
  const list = $("member-list");
  const items = (conversation.members ?? []).map((entry) => {
    const key = identityKey(entry.member);
    const item = element("li", "member");
    item.dataset.member = key;
    item.dataset.role = entry.role;
    item.dataset.online = String(Boolean(entry.presence?.online));
    const avatar = element("span", "avatar", initials(entry.member));
    avatar.append(element("span", "dot"));
    const body = element("div", "body");
    const me = key === identityKey(store.me);
    body.append(element("div", "name", `${displayName(entry.member)}${me ? " (you)" : ""}`),
      element("div", "presence", [entry.role === "member" ? "" : entry.role, presenceText(entry.presence)].filter(Boolean).join(" · ")));
    item.append(avatar, body);
    if (canRemove(conversation, entry)) {
      const remove = element("button", "ghost remove", "Remove");
      remove.type = "button";
      remove.addEventListener("click", () => store.removeMember(conversation, entry.member).catch(showError));
      item.append(remove);
    }
    return item;
  });
  list.replaceChildren(...items);
}

function parseIdentities(text) {
  return text.split(/[\s,]+/).map((id) => id.trim()).filter(Boolean)
    .map((id) => (id.startsWith("visitor:") ? { kind: "visitor", id: id.slice(8) } : { kind: "user", id }));
}

store.on("members", renderMembers);
$("members-toggle").addEventListener("click", () => (panel.hidden ? openMembers() : closeMembers()));
$("members-close").addEventListener("click", closeMembers);
$("add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const members = parseIdentities($("add-members").value);
  if (!current?.group || members.length === 0) return;
  try {
    await store.addMembers(current, members);
    $("add-members").value = "";
    $("members-error").textContent = "";
    await store.loadMembers(current);
  } catch (error) { showError(error); }
});
$("rename-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const newTitle = $("rename-title").value.trim();
  if (!current?.group || !newTitle || newTitle === current.group.title) return;
  try {
    await store.renameGroup(current, newTitle);
    $("rename-title").blur();
    $("members-error").textContent = "";
  } catch (error) { showError(error); }
});
$("leave-group").addEventListener("click", async () => {
  if (!current?.group) return;
  try {
    await store.leaveGroup(current);
    closeMembers();
  } catch (error) { showError(error); }
});

// -- creating a group ---------------------------------------------------------------------------
const groupDialog = $("group-dialog");
$("new-group").addEventListener("click", () => {
  $("group-error").textContent = "";
  groupDialog.showModal();
  $("group-title").focus();
});
$("group-cancel").addEventListener("click", () => groupDialog.close());
$("group-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("group-title").value.trim();
  if (!name) return;
  const members = parseIdentities($("group-members").value)
    .filter((identity) => !store.me || identityKey(identity) !== identityKey(store.me));
  $("group-create").disabled = true;
  try {
    const conversation = await store.createGroup(name, members);
    groupDialog.close();
    $("group-title").value = "";
    $("group-members").value = "";
    open(conversation);
  } catch (error) {
    $("group-error").textContent = error?.message ?? String(error);
  } finally {
    $("group-create").disabled = false;
  }
});

$("back").addEventListener("click", () => {
  closeMembers();
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
    await store.loadSettings().catch(() => {}); // first: whether the list's peer_read_seq counts
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
setInterval(() => {
  store.refreshPresence().catch(() => {});
  if (current?.group && !panel.hidden && !current.removed) store.refreshMembersPresence(current).catch(() => {});
}, 60_000);
