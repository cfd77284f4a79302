// Tolerance rules of the golden set, compared in float64 (NaN always fails).

import type { TensorRule } from "./cases.js";

export interface Comparison {
  ok: boolean;
  maxAbs: number;
  /** For pixel rules: the fraction of pixels identical in every channel. */
  identical?: number;
  reason?: string;
}

export function compareValues(
  actual: ArrayLike<number | bigint>, actualShape: number[],
  expected: ArrayLike<number | bigint>, expectedShape: number[],
  rule: TensorRule,
): Comparison {
  if (actualShape.join(",") !== expectedShape.join(",")) {
    return { ok: false, maxAbs: Infinity, reason: `shape [${actualShape}] != expected [${expectedShape}]` };
  }
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(Number(actual[i]) - Number(expected[i]));
    if (Number.isNaN(d)) return { ok: false, maxAbs: NaN, reason: `NaN at element ${i}` };
    if (d > maxAbs) maxAbs = d;
  }
  if (rule.min_identical_pixels === undefined) return { ok: maxAbs <= rule.abs, maxAbs };
  const identical = identicalPixelFraction(actual, expected, expectedShape[expectedShape.length - 1]);
  return { ok: maxAbs <= rule.abs && identical >= rule.min_identical_pixels, maxAbs, identical };
}

/** Pixels (channels-last) whose every channel is equal, as a fraction of all pixels. */
function identicalPixelFraction(a: ArrayLike<number | bigint>, b: ArrayLike<number | bigint>, channels: number): number {
  const pixels = b.length / channels;
  let same = 0;
  for (let p = 0; p < pixels; p++) {
    let eq = true;
    for (let c = 0; c < channels; c++) if (Number(a[p * channels + c]) !== Number(b[p * channels + c])) eq = false;
    if (eq) same++;
  }
  return pixels ? same / pixels : 1;
}
