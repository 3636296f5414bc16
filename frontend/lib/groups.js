// Group frames (docs/protocol.md §13.2) and the event message our own change fills its seq with.
// The server answers a change with its seq (`group` / `group_changed`) and pushes the event
// message to the other members only, so, as `sent` does for a message, the answer fills that
// seq: the event is rebuilt from our request (protocol §13.3).

/** The client's methods that change a group: action, and whether it is idempotent by its id. */
export const GROUP_CHANGES = {
  createGroup: "group_create",
  addMembers: "group_add",
  removeMember: "group_remove",
  leaveGroup: "group_leave",
  renameGroup: "group_rename",
  setRole: "group_role",
};

const ANSWERS = new Set(["group", "group_changed"]);

/** @typedef {import("./ids.js").Identity} Identity */
/** @typedef {import("./transports.js").Frame} Frame */

/** @param {Frame | null | undefined} frame */
export function isGroupAnswer(frame) {
  return ANSWERS.has(frame?.type);
}

/** @param {Identity} value @returns {Identity} */
function identity(value) {
  return { kind: value.kind, id: value.id };
}

/** @param {Identity[] | undefined} members @param {Identity | null} me */
function uniqueWithout(members, me) {
  const seen = new Set(me ? [`${me.kind}:${me.id}`] : []);
  /** @type {Identity[]} */
  const out = [];
  for (const member of members ?? []) {
    const key = `${member.kind}:${member.id}`;
    if (!seen.has(key)) { seen.add(key); out.push(identity(member)); }
  }
  return out;
}

/**
 * The event our request stored, as §13.3 describes it (a `joined` lists the identities asked for).
 * @param {Frame | null} request @param {Frame} answer @param {Identity | null} me
 */
export function eventOf(request, answer, me) {
  switch (request?.action) {
    case "group_create":
      return { type: "created", title: answer.title ?? request.title, members: [...(me ? [identity(me)] : []), ...uniqueWithout(request.members, me)] };
    case "group_add": return { type: "joined", members: uniqueWithout(request.members, null), role: request.role ?? "member" };
    case "group_remove": return { type: "removed", member: identity(request.member) };
    case "group_leave": return { type: "left" };
    case "group_rename": return { type: "renamed", title: request.title };
    case "group_role": return { type: "role", member: identity(request.member), role: request.role };
    default: // an answer whose request we no longer know: a type no one shows, still filling its seq
      return answer.type === "group" ? { type: "created", title: answer.title, members: me ? [identity(me)] : [] } : { type: "changed" };
  }
}

/**
 * The message our change's answer stands for, or null when it stored nothing (`group_add` of
 * members all already in answers `seq: null`). request: the frame we sent, or null if unknown.
 * @param {Frame} answer @param {Frame | null} request @param {Identity | null} me
 */
export function ownEventMessage(answer, request, me) {
  if (!Number.isInteger(answer.seq)) return null;
  return {
    type: "message", conversation_id: answer.conversation_id, seq: answer.seq, from: me, text: "",
    time: answer.time, client_id: answer.ref, event: eventOf(request, answer, me),
  };
}
