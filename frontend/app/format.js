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

/** A name as a system line says it: "You" for me. */
function who(identity, me, { capital = true } = {}) {
  if (identity && me && identity.kind === me.kind && identity.id === me.id) return capital ? "You" : "you";
  return displayName(identity);
}

function names(identities, me) {
  const list = (identities ?? []).map((identity) => who(identity, me, { capital: false }));
  return list.length <= 1 ? (list[0] ?? "") : `${list.slice(0, -1).join(", ")} and ${list.at(-1)}`;
}

const ROLE_WORDS = { admin: "an admin", member: "a member" };

/** A group's event message (protocol.md §13.3) as one line of text; null for a type not known
 * here (the page then shows nothing for it, but its seq still counts). */
export function eventText(event, from, me) {
  if (!event) return null;
  const actor = who(from, me);
  switch (event.type) {
    case "created": return `${actor} created the group “${event.title ?? ""}”`;
    case "joined": return `${actor} added ${names(event.members, me)}${event.role === "admin" ? " as admins" : ""}`;
    case "removed": return `${actor} removed ${who(event.member, me, { capital: false })}`;
    case "left": return `${actor} left`;
    case "renamed": return `${actor} renamed the group to “${event.title ?? ""}”`;
    case "role":
      if (event.role === "owner") return `${actor} made ${who(event.member, me, { capital: false })} the owner`;
      return `${actor} made ${who(event.member, me, { capital: false })} ${ROLE_WORDS[event.role] ?? event.role}`;
    default: return null;
  }
}

/** The list's preview of a last message: its text, or its event as a line; a photo is "Photo"
 * (or "Photo: caption"). */
export function previewText(last, me, { group = false } = {}) {
  if (!last) return "";
  if (last.event?.type === "deleted" || last.deleted) return "Message deleted"; // protocol.md §16
  if (last.event) return eventText(last.event, last.from, me) ?? "";
  if (last.image) last = { ...last, text: last.text ? `Photo: ${last.text}` : "Photo" };
  // the conversation list's preview of an event message: text "", no event (protocol.md §13.4)
  if (group && last.text === "") return last.from ? `${who(last.from, me)} changed the group` : "";
  const mine = me && last.from && last.from.kind === me.kind && last.from.id === me.id;
  if (mine) return `You: ${last.text}`;
  return group && last.from ? `${displayName(last.from)}: ${last.text}` : last.text;
}

/** "typing…" under a conversation's header: in a group, who (protocol.md §14.2). */
export function typingText(identities, { group = false } = {}) {
  if (!identities.length) return "";
  if (!group) return "typing…";
  const typists = identities.map(displayName);
  if (typists.length > 2) return "several people are typing…";
  return `${typists.join(" and ")} ${typists.length === 1 ? "is" : "are"} typing…`;
}

export function groupInitials(title) {
  return [...String(title ?? "").trim()][0]?.toUpperCase() ?? "#";
}

export const STATE_LABELS = {
  uploading: { mark: "⇡", label: "uploading" },
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
