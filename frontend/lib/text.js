// Message text rules, the same as the server's (docs/protocol.md §6.2), checked before sending
// so the user learns at once rather than from an error frame.

export const MAX_TEXT_CHARACTERS = 4000; // (at most 16,000 UTF-8 bytes: no byte limit binds)

/** Unicode code points, as the server counts them (an emoji is 1, not 2 as in `.length`). @param {string} text */
export function codePoints(text) {
  return Array.from(text).length;
}

/**
 * Why this text cannot be sent, or null when it can.
 * @param {unknown} text @returns {"empty" | "too_long" | "invalid" | null}
 */
export function textProblem(text) {
  if (typeof text !== "string" || !/\S/u.test(text)) return "empty";
  if (codePoints(text) > MAX_TEXT_CHARACTERS) return "too_long";
  if (/\p{Cs}/u.test(text)) return "invalid"; // a lone surrogate: the server refuses it (invalid_field)
  return null;
}

/** Throws what is wrong with a text before anything is queued (the page also checks as you type). @param {unknown} text */
export function assertSendable(text) {
  const problem = textProblem(text);
  const reasons = { empty: "the message is empty", too_long: "the message is too long",
    invalid: "the message holds an unpaired surrogate" };
  if (problem) throw new Error(reasons[problem]);
}
