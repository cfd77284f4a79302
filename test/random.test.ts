import { test } from "node:test";
import assert from "node:assert/strict";
import { randn, Xoshiro128 } from "../src/util/random.js";

test("known prefix: a changed algorithm is caught", () => {
  // Reproduced independently in Python (CPython floats + glibc libm) from the file header's description.
  const want = [
    1.401778221130371, 0.2716195583343506, 0.4889889359474182, -0.5547052025794983,
    -0.8219976425170898, 1.1374461650848389, 1.3021856546401978, -0.7901330590248108,
  ];
  assert.deepEqual([...randn(1234, 8)], want);
  const r = new Xoshiro128(1234n);
  assert.deepEqual([r.nextU32(), r.nextU32(), r.nextU32(), r.nextU32()], [0xa3a1626b, 0x96a58b20, 0x07cc552b, 0x5d1dabb1]);
});

test("deterministic; number and bigint seeds agree; shorter draws are prefixes", () => {
  const a = randn(42, 1001);
  assert.deepEqual(randn(42, 1001), a);
  assert.deepEqual(randn(42n, 1001), a);
  assert.deepEqual(randn(42, 7), a.subarray(0, 7));
  assert.notDeepEqual(randn(43, 16), a.subarray(0, 16));
  // Seeds are taken mod 2^64.
  assert.deepEqual(randn(-1, 8), randn((1n << 64n) - 1n, 8));
  assert.deepEqual(randn(0, 0), new Float32Array(0));
});

test("standard normal moments over 1e6 samples", () => {
  const n = 1_000_000;
  const x = randn(7, n);
  let s = 0, s2 = 0, s4 = 0, beyond3 = 0;
  for (const v of x) {
    assert.ok(Number.isFinite(v));
    s += v;
    s2 += v * v;
    s4 += v ** 4;
    if (Math.abs(v) > 3) beyond3++;
  }
  const mean = s / n, variance = s2 / n - mean * mean;
  // Standard errors: mean 1e-3, variance ~1.4e-3, fourth moment ~1e-2; bounds are ~5 σ.
  assert.ok(Math.abs(mean) < 5e-3, `mean ${mean}`);
  assert.ok(Math.abs(variance - 1) < 7e-3, `variance ${variance}`);
  assert.ok(Math.abs(s4 / n - 3) < 5e-2, `fourth moment ${s4 / n}`);
  // P(|z| > 3) = 0.0026998.
  assert.ok(Math.abs(beyond3 / n - 0.0026998) < 3e-4, `tail ${beyond3 / n}`);
});

test("rejects bad seeds and counts", () => {
  assert.throws(() => randn(1.5, 4), RangeError);
  assert.throws(() => randn(2 ** 60, 4), RangeError);
  assert.throws(() => randn(1, -1), RangeError);
});
