// `flux2 bench --attention` (src/bench/attention.ts): every attention variant computes the same
// softmax(q kᵀ / √Dh) v as the float32 MultiHeadAttention the transformer uses, within its
// precision; and the reference-BLAS detection behind the PyTorch float32 warning.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ATTENTION_VARIANTS, measureAttention } from "../src/bench/attention.js";
import { isReferenceBlas } from "../src/bench/torch.js";

test("attention variants agree with float32 MultiHeadAttention (small shape)", async () => {
  // 6 heads: the decompositions split them into groups (of 3 here, the largest divisor ≤ 4).
  const r = await measureAttention(96, 6, 32, { rounds: 1 });
  assert.deepEqual(r.map((a) => a.variant), ATTENTION_VARIANTS);
  const by = Object.fromEntries(r.map((a) => [a.variant, a]));
  for (const v of ["mha_fp32", "decomposed_fp32", "qk_int8", "qk_pv_int8"] as const) {
    assert.equal(by[v].error, undefined, `${v} ran`);
    assert.equal(by[v].runs.length, 1);
    assert.ok(by[v].seconds! > 0 && by[v].gflops! > 0);
  }
  assert.equal(by.mha_fp32.max_abs_error, 0);
  // float32 decomposition: same math, different summation order
  assert.ok(by.decomposed_fp32.max_abs_error! < 1e-5, `decomposed max err ${by.decomposed_fp32.max_abs_error}`);
  // integer q kᵀ: per-tensor uint8 quantization of q and k costs a little
  assert.ok(by.qk_int8.cosine! > 0.999 && by.qk_int8.max_abs_error! > 0, `qk_int8 cosine ${by.qk_int8.cosine}`);
  assert.ok(by.qk_pv_int8.cosine! > 0.99 && by.qk_pv_int8.cosine! < by.qk_int8.cosine!, `qk_pv_int8 cosine ${by.qk_pv_int8.cosine}`);
  // The others either ran (then they are accurate) or say why not.
  for (const v of ["attention_onnx", "mha_fp16"] as const) {
    if (by[v].error) assert.match(by[v].error!, /\S/);
    else assert.ok(by[v].cosine! > 0.9999, `${v} cosine ${by[v].cosine}`);
  }
});

test("Debian's reference BLAS is told apart from OpenBLAS", () => {
  assert.equal(isReferenceBlas("/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0"), true);
  assert.equal(isReferenceBlas("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so"), false);
  assert.equal(isReferenceBlas("/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"), false);
  assert.equal(isReferenceBlas(null), false);
});
