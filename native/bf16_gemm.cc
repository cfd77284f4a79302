// bfloat16 matrix products for the trainer (see bf16_gemm.h).
//
// Why hand-written: ONNX Runtime's CPU provider has no bfloat16 MatMul on x86, and its float32
// MatMul (MLAS) already runs near one core's float32 peak on the trainer's shapes. AVX-512 BF16's
// vdpbf16ps does two multiply-adds per float32 lane in the time of one FMA, so a plain
// register-blocked kernel is about twice MLAS on a Zen 4 (docs/training.md, "bf16 matrix products").
//
// Layout: op(A) is packed as [M][K/2] 32-bit words, each a pair of bf16 (k even in the low half),
// so one word broadcasts to all 16 lanes; op(B) as 32-column panels [N/32][K/2][32] of the same
// pairs, two zmm loads per k-pair. The micro-kernel keeps a 12×32 block of C in 24 registers.
#include "bf16_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace flux2 {
namespace {

constexpr int MR = 12;  // rows of C per micro-kernel call
constexpr int NR = 32;  // columns of C per panel (two zmm of float32)
constexpr int ROWS_PER_PACK_TASK = 64;

#define FLUX2_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

inline uint32_t pairOf(float lo, float hi) { return toBf16(lo) | (uint32_t(toBf16(hi)) << 16); }
inline float bf16ToFloat(uint32_t bits16) {
  uint32_t u = bits16 << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct Job {
  GemmShape s;
  int Kp, panels, mblocks, aChunks;
  const float* A;
  const float* B;
  float* C;
  size_t sA, sB, sC;   // float strides per batch (0: shared)
  uint32_t* Ap;        // (sA ? batches : 1) × M × Kp
  uint32_t* Bp;        // (sB ? batches : 1) × panels × Kp × NR
  size_t aBatches, bBatches;  // how many packed copies of each operand (1: shared by every batch)
  bool simd;
};

// ---- packing ---------------------------------------------------------------------------------

FLUX2_AVX512 inline __m512i pairRows(const float* r0, const float* r1) {
  __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r0)));
  __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r1)));
  return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

// 16 columns of two rows -> 16 pairs at `out`.
FLUX2_AVX512 void storePairRows(const float* r0, const float* r1, uint32_t* out) {
  _mm512_storeu_si512(out, pairRows(r0, r1));
}

// A row stored contiguously along k (A, or a row of Bᵀ) -> Kp pairs.
FLUX2_AVX512 void packRowSimd(const float* src, int K, uint32_t* dst) {
  int k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + k + 16), _mm512_loadu_ps(src + k));
    _mm512_storeu_si512(dst + k / 2, (__m512i)v);
  }
  for (; k < K; k += 2) dst[k / 2] = pairOf(src[k], k + 1 < K ? src[k + 1] : 0.f);
}

void packRowScalar(const float* src, int K, uint32_t* dst) {
  for (int k = 0; k < K; k += 2) dst[k / 2] = pairOf(src[k], k + 1 < K ? src[k + 1] : 0.f);
}

// Rows [m0, m1) of op(A) into Ap.
void packA(const Job& j, const float* A, uint32_t* Ap, int m0, int m1) {
  const GemmShape& s = j.s;
  if (!s.transA) {
    for (int m = m0; m < m1; m++) {
      if (j.simd) packRowSimd(A + size_t(m) * s.K, s.K, Ap + size_t(m) * j.Kp);
      else packRowScalar(A + size_t(m) * s.K, s.K, Ap + size_t(m) * j.Kp);
    }
    return;
  }
  // A stored [K][M]: a k-pair is two rows of A. Pairs are made 16 k-pairs × 16 columns at a time
  // in a small tile and written out by row, so each write to Ap is 64 contiguous bytes (written
  // pair by pair straight into Ap, every store missed the cache: 0.84x float32 on a weight gradient).
  for (int m = m0; m < m1; m += 16) {
    const int mw = std::min(16, m1 - m);
    for (int kp0 = 0; kp0 < j.Kp; kp0 += 16) {
      const int kw = std::min(16, j.Kp - kp0);
      uint32_t tile[16][16];
      for (int i = 0; i < kw; i++) {
        const int kp = kp0 + i;
        const float* r0 = A + size_t(2 * kp) * s.M + m;
        const float* r1 = 2 * kp + 1 < s.K ? A + size_t(2 * kp + 1) * s.M + m : nullptr;
        if (j.simd && r1 && mw == 16) storePairRows(r0, r1, tile[i]);
        else for (int c = 0; c < mw; c++) tile[i][c] = pairOf(r0[c], r1 ? r1[c] : 0.f);
      }
      for (int c = 0; c < mw; c++) {
        uint32_t* dst = Ap + size_t(m + c) * j.Kp + kp0;
        for (int i = 0; i < kw; i++) dst[i] = tile[i][c];
      }
    }
  }
}

// Panel p (columns [32p, 32p+32)) of op(B) into its slot of Bp; columns past N are zero.
void packBPanel(const Job& j, const float* B, uint32_t* Bp, int p) {
  const GemmShape& s = j.s;
  uint32_t* dst = Bp + size_t(p) * j.Kp * NR;
  const int n0 = p * NR, cols = std::min(NR, s.N - n0);
  if (s.transB) {
    // B stored [N][K]: each column of op(B) is a contiguous row of B.
    std::vector<uint32_t> row(j.Kp);
    for (int c = 0; c < NR; c++) {
      if (c < cols) {
        if (j.simd) packRowSimd(B + size_t(n0 + c) * s.K, s.K, row.data());
        else packRowScalar(B + size_t(n0 + c) * s.K, s.K, row.data());
        for (int kp = 0; kp < j.Kp; kp++) dst[size_t(kp) * NR + c] = row[kp];
      } else {
        for (int kp = 0; kp < j.Kp; kp++) dst[size_t(kp) * NR + c] = 0;
      }
    }
    return;
  }
  for (int kp = 0; kp < j.Kp; kp++) {
    const float* r0 = B + size_t(2 * kp) * s.N + n0;
    const float* r1 = 2 * kp + 1 < s.K ? B + size_t(2 * kp + 1) * s.N + n0 : nullptr;
    uint32_t* out = dst + size_t(kp) * NR;
    if (j.simd && r1 && cols == NR) {
      storePairRows(r0, r1, out);
      storePairRows(r0 + 16, r1 + 16, out + 16);
      continue;
    }
    for (int c = 0; c < NR; c++) out[c] = c < cols ? pairOf(r0[c], r1 ? r1[c] : 0.f) : 0;
  }
}

// ---- micro-kernels ---------------------------------------------------------------------------

template <int R>
FLUX2_AVX512 void kernelSimd(const uint32_t* Ap, int Kp, const uint32_t* Bp, float* C, int ldc, int cols, float alpha) {
  __m512 acc[R][2];
  for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int kp = 0; kp < Kp; kp++) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(Bp + size_t(kp) * NR);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(Bp + size_t(kp) * NR + 16);
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int(Ap[size_t(r) * Kp + kp]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
    }
  }
  const __mmask16 m0 = cols >= 16 ? 0xffff : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? 0xffff : cols <= 16 ? 0 : __mmask16((1u << (cols - 16)) - 1);
  const __m512 a = _mm512_set1_ps(alpha);
  for (int r = 0; r < R; r++) {
    _mm512_mask_storeu_ps(C + size_t(r) * ldc, m0, _mm512_mul_ps(acc[r][0], a));
    _mm512_mask_storeu_ps(C + size_t(r) * ldc + 16, m1, _mm512_mul_ps(acc[r][1], a));
  }
}

using KernelFn = void (*)(const uint32_t*, int, const uint32_t*, float*, int, int, float);
constexpr KernelFn kSimd[MR] = {&kernelSimd<1>, &kernelSimd<2>, &kernelSimd<3>, &kernelSimd<4>,  &kernelSimd<5>,  &kernelSimd<6>,
                                &kernelSimd<7>, &kernelSimd<8>, &kernelSimd<9>, &kernelSimd<10>, &kernelSimd<11>, &kernelSimd<12>};

// The same sums without AVX-512 BF16: each pair's two products in float32, added to the total.
void kernelScalar(int rows, const uint32_t* Ap, int Kp, const uint32_t* Bp, float* C, int ldc, int cols, float alpha) {
  for (int r = 0; r < rows; r++) {
    for (int c = 0; c < cols; c++) {
      float acc = 0.f;
      for (int kp = 0; kp < Kp; kp++) {
        const uint32_t a = Ap[size_t(r) * Kp + kp], b = Bp[size_t(kp) * NR + c];
        acc += bf16ToFloat(a & 0xffff) * bf16ToFloat(b & 0xffff) + bf16ToFloat(a >> 16) * bf16ToFloat(b >> 16);
      }
      C[size_t(r) * ldc + c] = acc * alpha;
    }
  }
}

// ---- tasks -----------------------------------------------------------------------------------

// Tasks: every packed A's row chunks, then every packed B's panels.
void packAny(void* data, size_t i) {
  const Job& j = *static_cast<const Job*>(data);
  const size_t aTasks = j.aBatches * size_t(j.aChunks);
  if (i < aTasks) {
    const size_t b = i / j.aChunks;
    const int chunk = int(i % j.aChunks);
    const int m0 = chunk * ROWS_PER_PACK_TASK, m1 = std::min(j.s.M, m0 + ROWS_PER_PACK_TASK);
    packA(j, j.A + b * j.sA, j.Ap + b * size_t(j.s.M) * j.Kp, m0, m1);
    return;
  }
  i -= aTasks;
  const size_t b = i / j.panels;
  const int p = int(i % j.panels);
  packBPanel(j, j.B + b * j.sB, j.Bp + b * size_t(j.panels) * j.Kp * NR, p);
}

void computeTask(void* data, size_t i) {
  const Job& j = *static_cast<const Job*>(data);
  const size_t b = i / j.mblocks;
  const int mb = int(i % j.mblocks);
  const int m0 = mb * MR, rows = std::min(MR, j.s.M - m0);
  const uint32_t* Ap = j.Ap + (j.sA ? b : 0) * size_t(j.s.M) * j.Kp + size_t(m0) * j.Kp;
  const uint32_t* Bp = j.Bp + (j.sB ? b : 0) * size_t(j.panels) * j.Kp * NR;
  float* C = j.C + b * j.sC + size_t(m0) * j.s.N;
  for (int p = 0; p < j.panels; p++) {
    const int n0 = p * NR, cols = std::min(NR, j.s.N - n0);
    const uint32_t* panel = Bp + size_t(p) * j.Kp * NR;
    if (j.simd) kSimd[rows - 1](Ap, j.Kp, panel, C + n0, j.s.N, cols, j.s.alpha);
    else kernelScalar(rows, Ap, j.Kp, panel, C + n0, j.s.N, cols, j.s.alpha);
  }
}

void runTasks(ParallelFor parallel, void* ctx, size_t count, void (*task)(void*, size_t), void* data) {
  if (parallel && count > 1) parallel(ctx, count, task, data);
  else for (size_t i = 0; i < count; i++) task(data, i);
}

}  // namespace

bool cpuHasBf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  }();
  return has;
}

void gemmBf16(const GemmShape& s, const float* A, size_t strideA, const float* B, size_t strideB,
              float* C, size_t strideC, size_t batches, ParallelFor parallel, void* ctx) {
  if (batches == 0 || s.M == 0 || s.N == 0) return;
  if (s.K == 0) {
    for (size_t b = 0; b < batches; b++) std::fill(C + b * strideC, C + b * strideC + size_t(s.M) * s.N, 0.f);
    return;
  }
  Job j{};
  j.s = s;
  j.Kp = (s.K + 1) / 2;
  j.panels = (s.N + NR - 1) / NR;
  j.mblocks = (s.M + MR - 1) / MR;
  j.aChunks = (s.M + ROWS_PER_PACK_TASK - 1) / ROWS_PER_PACK_TASK;
  j.A = A; j.B = B; j.C = C;
  j.sA = strideA; j.sB = strideB; j.sC = strideC;
  j.simd = cpuHasBf16();
  j.aBatches = strideA ? batches : 1;
  j.bBatches = strideB ? batches : 1;
  std::vector<uint32_t> Ap(j.aBatches * size_t(s.M) * j.Kp), Bp(j.bBatches * size_t(j.panels) * j.Kp * NR);
  j.Ap = Ap.data();
  j.Bp = Bp.data();
  runTasks(parallel, ctx, j.aBatches * j.aChunks + j.bBatches * j.panels, packAny, &j);
  runTasks(parallel, ctx, batches * j.mblocks, computeTask, &j);
}

}  // namespace flux2
