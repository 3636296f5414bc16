import assert from "node:assert/strict";
import { test } from "node:test";

import { Session } from "../lib/auth.js";
import { TransportError } from "../lib/http.js";
import { MemoryStorage, settle } from "./fakes.mjs";

/** The identity endpoints, scripted: visitors are numbered; renew keeps the visitor unless told. */
function fakeApi() {
  const api = { calls: [], visitors: 0, renewRefused: false };
  api.call = async (method, path, { token } = {}) => {
    api.calls.push(`${method} ${path}`);
    if (path === "/identity/visitor") {
      api.visitors += 1;
      return { token: `tv${api.visitors}`, identity: { kind: "visitor", id: `v-${api.visitors}` } };
    }
    if (path === "/identity/visitor/renew") {
      if (api.renewRefused) throw new TransportError("expired", { status: 401, code: "expired_credential" });
      return { token: `${token}+`, identity: { kind: "visitor", id: `v-${api.visitors}` } };
    }
    if (path === "/identity/me") {
      if (token === "bad") throw new TransportError("invalid", { status: 401 });
      return { identity: {} };
    }
    throw new Error(path);
  };
  return api;
}

test("a browser becomes a visitor once and stays that visitor across reloads", async () => {
  const storage = new MemoryStorage();
  const api = fakeApi();
  assert.equal(await new Session({ api, storage }).token(), "tv1");
  const reloaded = new Session({ api, storage });
  assert.equal(await reloaded.token(), "tv1");
  assert.deepEqual(reloaded.identity, { kind: "visitor", id: "v-1" });
  assert.equal(api.visitors, 1);
});

test("a refused visitor token is renewed for the same visitor", async () => {
  const api = fakeApi();
  const session = new Session({ api, storage: new MemoryStorage() });
  await session.token();
  let changed = null;
  session.onIdentityChange = (identity) => { changed = identity; };
  await session.refresh();
  assert.equal(await session.token(), "tv1+");
  await settle();
  assert.equal(changed, null, "still the same person");
});

test("when even renewal is refused, a new visitor starts and the page is told", async () => {
  const api = fakeApi();
  const session = new Session({ api, storage: new MemoryStorage() });
  await session.token();
  let changed = null;
  session.onIdentityChange = (identity) => { changed = identity; };
  api.renewRefused = true;
  await session.refresh();
  await settle();
  assert.deepEqual(changed, { kind: "visitor", id: "v-2" });
});

test("check tells a refused credential from an unreachable server", async () => {
  const storage = new MemoryStorage();
  const session = new Session({ api: fakeApi(), storage });
  await session.token();
  assert.equal(await session.check(), "ok");
  storage.setItem("webim.session", JSON.stringify({ mode: "visitor", token: "bad", identity: { kind: "visitor", id: "v" } }));
  assert.equal(await new Session({ api: fakeApi(), storage }).check(), "unauthorized");
  const offline = { call: async () => { throw new TypeError("Failed to fetch"); } };
  assert.equal(await new Session({ api: offline, storage }).check(), "unreachable");
});
