// The CLI's number options: inclusive bounds by default, open ends where a value at the bound is meaningless.
import { test } from "node:test";
import assert from "node:assert/strict";
import { numOption } from "../src/cli/common.js";

test("numOption: inclusive bounds, or open ones with a typical value in the error", () => {
  assert.equal(numOption(undefined, "x", 0, 1), undefined);
  assert.equal(numOption("1", "x", 0, 1), 1);
  assert.equal(numOption("0", "x", 0, 1), 0);
  assert.throws(() => numOption("1.5", "x", 0, 1), /--x must be a number from 0 to 1, got "1.5"/);
  assert.throws(() => numOption("abc", "x", 0, 1), /--x must be a number from 0 to 1, got "abc"/);
  // An AdamW beta: 0 allowed, 1 not.
  assert.equal(numOption("0", "adam-beta2", 0, 1, { hi: true, example: 0.999 }), 0);
  assert.throws(() => numOption("1", "adam-beta2", 0, 1, { hi: true, example: 0.999 }), /--adam-beta2 must be a number at least 0 and below 1 \(e\.g\. 0\.999\), got "1"/);
  // An EMA decay: neither end.
  assert.equal(numOption("0.5", "ema-decay", 0, 1, { lo: true, hi: true }), 0.5);
  for (const v of ["0", "1"]) assert.throws(() => numOption(v, "ema-decay", 0, 1, { lo: true, hi: true }), /--ema-decay must be a number above 0 and below 1, got/);
  assert.throws(() => numOption("0", "adam-epsilon", 0, 1, { lo: true, example: 1e-8 }), /--adam-epsilon must be a number above 0 and at most 1 \(e\.g\. 1e-8\)/);
});
