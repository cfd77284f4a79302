// A float32 matrix product whose multiplications are taken in bfloat16 (flux2.ts, native/).
#pragma once
#include <cstddef>
#include <cstdint>

namespace flux2 {

// One product C[M,N] = alpha * op(A) op(B), op(A) = A [M,K] or Aᵀ (A stored [K,M]),
// op(B) = B [K,N] or Bᵀ (B stored [N,K]). Inputs are rounded to bfloat16 (to nearest even),
// products are exact in float32 and summed in float32: PyTorch's bf16 autocast, on the CPU.
struct GemmShape {
  int M, K, N;
  bool transA, transB;
  float alpha;
};

// Runs `count` tasks, possibly on several threads (ONNX Runtime's intra-op pool in the custom op).
using ParallelFor = void (*)(void* ctx, size_t count, void (*task)(void* data, size_t i), void* data);

// True where this CPU has AVX-512 BF16 (vdpbf16ps); otherwise the portable path is used, which
// gives the same roundings of the inputs but is slower than ONNX Runtime's float32 MatMul.
bool cpuHasBf16();

// `batches` products: A, B and C advance by their own stride per batch (0 repeats an operand).
void gemmBf16(const GemmShape& s, const float* A, size_t strideA, const float* B, size_t strideB,
              float* C, size_t strideC, size_t batches, ParallelFor parallel, void* ctx);

// float32 -> bfloat16 bits, round to nearest even (NaN stays NaN).
inline uint16_t toBf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace flux2
