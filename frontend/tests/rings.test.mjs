// The long poll's rings (protocol §2b, version 4), the client's half: every
// tests/long_poll_rings/*.json run against lib/rings.js. pytest runs the same files against
// webim_client/rings.py (tests/test_long_poll_rings.py).

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { Rings } from "../lib/rings.js";

const FOLDER = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "tests", "long_poll_rings");
const CASES = readdirSync(FOLDER).filter((name) => name !== "README.md").sort();

const isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);

/** A case's wait answer as the server writes it: an object `Body` (and its object `f`) as JSON text. */
function encoded(answer) {
  if (Array.isArray(answer)) return answer.map(encoded);
  if (!isObject(answer)) return answer;
  return Object.fromEntries(Object.entries(answer).map(([key, value]) => [key, key === "Body" ? bodyText(value) : encoded(value)]));
}

function bodyText(body) {
  if (!isObject(body)) return body;
  return JSON.stringify(isObject(body.f) ? { ...body, f: JSON.stringify(body.f) } : body);
}

function runStep(rings, step) {
  if ("wait" in step) return rings.waited(encoded(step.wait));
  if ("poll" in step) return rings.polled(step.poll.base, step.poll.frames);
  rings.released(step.released);
  return null;
}

for (const name of CASES) {
  test(`rings: ${name}`, () => {
    assert.ok(name.endsWith(".json"), `${name}: only cases and the README belong here`);
    const kase = JSON.parse(readFileSync(join(FOLDER, name), "utf8"));
    const rings = new Rings(kase.next ?? 1);
    kase.steps.forEach((step, index) => {
      const taken = runStep(rings, step);
      const expect = step.expect ?? {};
      const where = `${name} step ${index + 1}`;
      if ("frames" in expect) assert.deepEqual(taken?.frames, expect.frames, where);
      if ("poll" in expect) assert.equal(taken?.poll, expect.poll, where);
      if ("next" in expect) assert.equal(rings.next, expect.next, where);
      if ("owes" in expect) assert.equal(rings.owes, expect.owes, where);
    });
  });
}

test("rings: the cases cover every kind of step", () => {
  const kinds = new Set(CASES.flatMap((name) => JSON.parse(readFileSync(join(FOLDER, name), "utf8")).steps
    .map((step) => ["wait", "poll", "released"].find((kind) => kind in step))));
  assert.deepEqual([...kinds].sort(), ["poll", "released", "wait"]);
  assert.ok(CASES.length >= 8);
});
