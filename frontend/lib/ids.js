// Frame ids: a send's id is its idempotency key for 7 days across all of an identity's devices,
// so every id is a random session prefix plus a counter (docs/protocol.md §6.2).

/**
 * Who someone is: a signed-in user, or a visitor (docs/identity.md).
 * @typedef {{kind: string, id: string}} Identity
 */

/** @param {number} bytes */
function randomHex(bytes) {
  const values = new Uint8Array(bytes);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(values);
  else for (let i = 0; i < bytes; i += 1) values[i] = Math.floor(Math.random() * 256); // Node 18 without webcrypto
  return Array.from(values, (value) => value.toString(16).padStart(2, "0")).join("");
}

/** @returns {() => string} */
export function idFactory(prefix = randomHex(6)) {
  let counter = 0;
  return () => `${prefix}-${(counter += 1)}`;
}

/** @param {Identity} identity */
export function identityKey(identity) {
  return `${identity.kind}:${identity.id}`;
}

/** @param {Identity | null | undefined} a @param {Identity | null | undefined} b */
export function sameIdentity(a, b) {
  return Boolean(a && b && a.kind === b.kind && a.id === b.id);
}
