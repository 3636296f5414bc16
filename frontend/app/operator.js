// The operator page (docs/operator.md): the open reports with their copied messages, and the
// operator's actions on them: delete a message for everyone, ban the reported sender (or lift the
// ban), close the report. Over the same REST API as `python -m webim_client.operator`; the token
// is a host-site token with the operator claim (locally: a development operator login). Text
// only through textContent.

import { Api } from "../lib/http.js";

const TOKEN_KEY = "webim.operator.token";
const PAGE = 20;

/** @param {string} id @returns {any} an element of operator.html */
const $ = (id) => document.getElementById(id);

/**
 * @param {string} tag @param {string} [className] @param {string} [text]
 * @returns {any}
 */
function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** @param {{kind: string, id: string}} who */
const identityText = (who) => `${who.kind}:${who.id}`;

const config = await (await fetch(new URL("../config.json", import.meta.url))).json();
const api = new Api(config.apiUrl);
let token = sessionStorage.getItem(TOKEN_KEY);
/** @type {string | null} */
let next = null;

/** @param {string} text @param {"info" | "error"} [kind] */
function notice(text, kind = "info") {
  $("op-notice").textContent = text;
  $("op-notice").dataset.kind = kind;
}

/**
 * One operator call; an error is shown with its stable code and rethrown.
 * @param {string} method @param {string} path @param {unknown} [body]
 */
async function call(method, path, body) {
  try {
    return await api.call(method, path, { token, body });
  } catch (error) {
    notice(`${error.code ?? "error"}: ${error.message}`, "error");
    throw error;
  }
}

// -- signing in -------------------------------------------------------------------------------
if (config.devLogin) $("op-dev-name").hidden = false;
$("op-sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("op-dev-name").value.trim();
  if (name && config.devLogin) {
    token = (await call("POST", "/identity/dev-login", { name, operator: true }).catch(() => ({ token: null }))).token;
  } else {
    token = $("op-token").value.trim() || null;
  }
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  await refresh().catch(() => {}); // shown in the notice
});

// -- the list ---------------------------------------------------------------------------------
async function refresh() {
  next = null;
  $("op-reports").replaceChildren();
  await loadPage();
}

async function loadPage() {
  if (!token) {
    $("op-who").textContent = "not signed in";
    return;
  }
  const query = new URLSearchParams({ status: $("op-status").value, limit: String(PAGE) });
  if (next) query.set("before", next);
  const page = await call("GET", `/operator/reports?${query}`);
  $("op-who").textContent = "signed in as operator";
  for (const report of page.reports) $("op-reports").append(reportRow(report));
  next = page.next;
  $("op-more").hidden = !next;
  $("op-empty").hidden = $("op-reports").children.length > 0;
}

/** @param {any} entry a row of the list */
function reportRow(entry) {
  const row = element("li", "op-report");
  row.dataset.reportId = entry.report_id;
  const summary = element("div", "op-summary");
  summary.append(
    element("span", "op-reason", entry.reason),
    element("span", "op-time", new Date(entry.time).toLocaleString()),
    element("span", "op-reporter", `by ${identityText(entry.reporter)}`),
    element("span", "op-conversation", entry.seq ? `message ${entry.seq} of ${entry.conversation_id}`
      : `conversation ${entry.conversation_id}`),
  );
  const open = element("button", "op-open", "Open");
  open.type = "button";
  open.addEventListener("click", async () => {
    open.disabled = true;
    row.append(details(await call("GET", `/operator/reports/${encodeURIComponent(entry.report_id)}`), row));
  });
  summary.append(open);
  row.append(summary);
  return row;
}

/** @param {any} report the whole report @param {HTMLElement} row */
function details(report, row) {
  const box = element("div", "op-details");
  if (report.note) box.append(element("p", "op-note", report.note));
  // a closed report under the stack's ReportRetentionDays goes then (docs/operator.md)
  if (report.expires) box.append(element("p", "op-expires", `Deleted after ${new Date(report.expires).toLocaleString()}`));
  const list = element("ul", "op-messages");
  const copies = [...report.context];
  if (report.message) copies.push(report.message);
  copies.sort((a, b) => a.seq - b.seq);
  for (const message of copies) list.append(messageLine(report, message));
  box.append(list);

  const actions = element("div", "op-actions");
  // whoever wrote in what was reported, but the reporter: the reported message's sender first
  const reporter = identityText(report.reporter);
  const writers = new Map();
  for (const message of [report.message, ...report.context]) {
    if (message) writers.set(identityText(message.from), message.from);
  }
  writers.delete(reporter);
  for (const who of writers.values()) actions.append(banButton(who, report.reason));
  if (report.status === "open") {
    const close = element("button", "op-close", "Close report");
    close.type = "button";
    close.addEventListener("click", async () => {
      await call("POST", `/operator/reports/${encodeURIComponent(report.report_id)}/status`, { status: "closed" });
      row.remove();
      notice(`Report ${report.report_id} closed`);
      $("op-empty").hidden = $("op-reports").children.length > 0;
    });
    actions.append(close);
  }
  box.append(actions);
  return box;
}

/** @param {any} report @param {any} message a copied message frame */
function messageLine(report, message) {
  const line = element("li", "op-message");
  line.dataset.seq = String(message.seq);
  line.dataset.reported = String(message.seq === report.seq);
  line.dataset.deleted = String(Boolean(message.deleted));
  const text = message.deleted ? "Message deleted" : message.event ? `(${message.event.type})`
    : message.image ? `[photo] ${message.text}` : message.text;
  line.append(element("span", "op-from", `#${message.seq} ${identityText(message.from)}`), element("span", "op-text", text));
  if (!message.deleted && !message.event) {
    const remove = element("button", "op-delete", "Delete");
    remove.type = "button";
    remove.addEventListener("click", async () => {
      await call("POST", "/operator/delete", { conversation_id: report.conversation_id, seq: message.seq });
      line.dataset.deleted = "true";
      line.querySelector(".op-text").textContent = "Deleted (the original stays in this report)";
      remove.remove();
      notice(`Message ${message.seq} deleted for everyone`);
    });
    line.append(remove);
  }
  return line;
}

/** @param {{kind: string, id: string}} who @param {string} reason */
function banButton(who, reason) {
  const button = element("button", "op-ban", `Ban ${identityText(who)}`);
  button.type = "button";
  let banned = false;
  button.addEventListener("click", async () => {
    if (banned) {
      await call("POST", "/operator/unban", { identity: who });
      notice(`${identityText(who)} unbanned`);
    } else {
      const answer = await call("POST", "/operator/ban", { identity: who, reason });
      notice(`${identityText(who)} banned; ${answer.closed_connections} connection(s) closed`);
    }
    banned = !banned;
    button.textContent = `${banned ? "Unban" : "Ban"} ${identityText(who)}`;
  });
  return button;
}

$("op-status").addEventListener("change", () => { refresh().catch(() => {}); });
$("op-refresh").addEventListener("click", () => { refresh().catch(() => {}); });
$("op-more").addEventListener("click", () => { loadPage().catch(() => {}); });
refresh().catch(() => {});
