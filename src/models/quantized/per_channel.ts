// Per-output-channel symmetric int8 weights in the layout of ORT's QGEMM operators
// (`com.microsoft.DynamicQuantizeMatMul`, `MatMulIntegerToFloat`), which run on MLAS's integer
// GEMM (u8 activations × s8 weights: AVX2, AVX512-VNNI, AVX-VNNI and AMX kernels; Arm dotprod
// and i8mm).
//
// A PyTorch Linear weight W [N, K] (out, in) becomes
//
//   qT      int8  [K, N]   q[n, k] = round(W[n, k] · s_in[k] / scale[n]), clamped to [−127, 127]
//   scales  float [N]      scale[n] = max_k |W[n, k] · s_in[k]| / 127
//
// stored transposed because those operators take B as [K, N] and have no transB. The activation x
// is quantized per tensor by the operator itself (uint8, asymmetric, dynamic range of the call).
//
// `s_in` (optional, [K]) is SmoothQuant-style smoothing: a per-input-channel factor folded into
// the weight, with x divided by it before the product, so x · Wᵀ is unchanged in exact math while
// an outlier input channel of x is moved into the weight, where per-channel scales absorb it.
// Symmetric [−127, 127] (not −128) keeps the code range symmetric around zero.

export interface PerChannelMatrix {
  N: number;
  K: number;
  /** int8 codes, [K, N] (transposed) */
  qT: Int8Array;
  /** [N] */
  scales: Float32Array;
}

/** Quantize W [N, K] (row-major float32), optionally multiplied by `smooth` [K] along K first. */
export function quantizePerChannel(w: Float32Array, N: number, K: number, smooth?: Float32Array): PerChannelMatrix {
  if (w.length !== N * K) throw new Error(`quantize: ${w.length} values for [${N}, ${K}]`);
  if (smooth && smooth.length !== K) throw new Error(`quantize: ${smooth.length} smoothing factors for K = ${K}`);
  const qT = new Int8Array(K * N);
  const scales = new Float32Array(N);
  const row = new Float32Array(K);
  for (let n = 0; n < N; n++) {
    let amax = 0;
    for (let k = 0; k < K; k++) {
      const v = smooth ? w[n * K + k] * smooth[k] : w[n * K + k];
      row[k] = v;
      const a = Math.abs(v);
      if (a > amax) amax = a;
    }
    const scale = Math.fround(amax / 127);
    scales[n] = scale;
    const inv = scale > 0 ? 1 / scale : 0;
    for (let k = 0; k < K; k++) {
      let c = Math.round(row[k] * inv);
      if (c > 127) c = 127;
      else if (c < -127) c = -127;
      qT[k * N + n] = c;
    }
  }
  return { N, K, qT, scales };
}

/** The float32 W [N, K] the codes stand for (smoothing not undone: divide by s_in yourself). */
export function dequantizePerChannel(m: PerChannelMatrix): Float32Array {
  const { N, K, qT, scales } = m;
  const out = new Float32Array(N * K);
  for (let k = 0; k < K; k++) {
    for (let n = 0; n < N; n++) out[n * K + k] = Math.fround(qT[k * N + n] * scales[n]);
  }
  return out;
}

/** Bytes of a quantized [N, K] weight: codes + scales. */
export function perChannelBytes(N: number, K: number): number {
  return N * K + 4 * N;
}
