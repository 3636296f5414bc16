// Small display helpers shared by the chat page and the widget. Everything here returns text;
// views put it in the page with textContent, never as HTML.

export function displayName(identity) {
  if (!identity) return "";
  return identity.kind === "visitor" ? `Visitor ${identity.id.slice(2, 8)}` : identity.id;
}

export function initials(identity) {
  const name = identity?.kind === "visitor" ? "?" : String(identity?.id ?? "?");
  return [...name][0]?.toUpperCase() ?? "?";
}

export function clockTime(ms) {
  if (!ms) return "";
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function listTime(ms, now = Date.now()) {
  if (!ms) return "";
  const date = new Date(ms);
  const today = new Date(now);
  if (date.toDateString() === today.toDateString()) return clockTime(ms);
  return date.toLocaleDateString([], { month: "short", day: "numeric" });
}

export function presenceText(presence, now = Date.now()) {
  if (!presence || presence.online === null) return ""; // a visitor's presence is never pulled
  if (presence.online) return "online";
  if (!presence.lastSeen) return "offline";
  const minutes = Math.round((now - presence.lastSeen) / 60_000);
  if (minutes < 1) return "last seen just now";
  if (minutes < 60) return `last seen ${minutes} min ago`;
  return `last seen ${listTime(presence.lastSeen, now)}`;
}

export const STATE_LABELS = {
  sending: { mark: "🕓", label: "sending" },
  sent: { mark: "✓", label: "sent" },
  delivered: { mark: "✓✓", label: "delivered" },
  failed: { mark: "!", label: "not sent" },
};

export function statusText(status) {
  if (status.state === "online") {
    const via = status.transport === "longpoll" ? "long poll" : status.transport === "websocket" ? "WebSocket" : "";
    if (status.leader === false) return "online · through another tab";
    return via ? `online · ${via}` : "online";
  }
  return status.state === "connecting" ? "connecting…" : "offline · reconnecting…";
}

/** One element with a class and optional text (text only: message text is never parsed as HTML). */
export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}
