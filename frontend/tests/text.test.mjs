import { test } from "node:test";
import assert from "node:assert/strict";
import { assertSendable, textProblem } from "../lib/text.js";

test("text: the server's rules, checked before sending", () => {
  assert.equal(textProblem("hello"), null);
  assert.equal(textProblem("   "), "empty");
  assert.equal(textProblem("😀".repeat(4000)), null); // 4,000 code points, 16,000 bytes: allowed
  assert.equal(textProblem("a".repeat(4001)), "too_long");
  assert.equal(textProblem("half \ud83d pair"), "invalid"); // the server answers invalid_field
  assert.equal(textProblem("whole \ud83d\ude00 pair"), null);
  assert.throws(() => assertSendable("x\udc00"), /surrogate/);
});
