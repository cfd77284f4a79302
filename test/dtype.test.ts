// src/io/dtype.ts: every narrow-float codec decodes exactly and encodes to the nearest code.

import { test } from "node:test";
import assert from "node:assert/strict";
import { bf16ToF32, f16ToF32, f32ArrayToBf16, f32ToBf16Bits, f32ToF16Bits, f32ToF8e4m3, f8e4m3ToF32 } from "../src/io/dtype.js";

test("float16: every code decodes and encodes back to itself", () => {
  for (let h = 0; h < 0x10000; h++) {
    const v = f16ToF32(h);
    if (Number.isNaN(v)) assert.equal(f32ToF16Bits(v), 0x7e00);
    else assert.equal(f32ToF16Bits(v), h, `code 0x${h.toString(16)} (${v})`);
  }
});

test("float16: halfway values round to the even code, overflow to infinity", () => {
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00, "tie between 1 and 1+2^-10 goes to even 1");
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02, "tie goes up to the even code");
  assert.equal(f32ToF16Bits(1 + 2 ** -11 + 2 ** -20), 0x3c01, "above the tie rounds up");
  assert.equal(f32ToF16Bits(2 ** -25), 0x0000, "half the smallest subnormal ties to 0");
  assert.equal(f32ToF16Bits(3 * 2 ** -25), 0x0002, "1.5 subnormal units tie to 2");
  assert.equal(f32ToF16Bits(65504), 0x7bff);
  assert.equal(f32ToF16Bits(65520), 0x7c00, "the tie above the largest finite value is infinity");
  assert.equal(f32ToF16Bits(-1e6), 0xfc00);
  assert.equal(f32ToF16Bits(-0), 0x8000);
});

test("bfloat16: the array codec equals the scalar one, and decoding is the upper half", () => {
  const src = Float32Array.from({ length: 4096 }, (_, i) => Math.sin(i * 12.9898) * 10 ** ((i % 40) - 20));
  const arr = f32ArrayToBf16(src);
  for (let i = 0; i < src.length; i++) {
    assert.equal(arr[i], f32ToBf16Bits(src[i]));
    assert.equal(bf16ToF32(arr[i]), new Float32Array(new Uint32Array([arr[i] << 16]).buffer)[0]);
  }
  assert.equal(f32ToBf16Bits(bf16ToF32(0x3f81)), 0x3f81);
});

test("float8 e4m3fn: every finite code round-trips, ties go to the even code, large values saturate", () => {
  for (let b = 0; b < 256; b++) {
    const v = f8e4m3ToF32(b);
    if (Number.isNaN(v)) continue;
    assert.equal(f32ToF8e4m3(v), b === 0x80 ? 0x80 : b, `code ${b}`);
  }
  assert.equal(f32ToF8e4m3(1 + 1 / 16), 0x38, "halfway between 1 and 1.125 goes to even 1");
  assert.equal(f32ToF8e4m3(1000), 0x7e);
  assert.equal(f32ToF8e4m3(-1000), 0xfe);
});
