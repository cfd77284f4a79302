// Which weights run fastest on this CPU, chosen from its instruction-set features.
//
// ORT's integer GEMM (MLAS QGEMM, what `--quantize int8` runs on) has kernels for int8 dot-product
// instructions: AMX (Sapphire Rapids and later), AVX512-VNNI, AVX-VNNI (x86), SDOT/UDOT ("dotprod")
// and SMMLA ("i8mm") on Arm. With them int8 beats the float32 GEMM that bf16 weights run on (measured
// on an AVX512-VNNI EPYC and on an AMX Xeon, where ORT was seen executing MLAS's AMX tile kernel:
// docs/performance.md). Without them (plain AVX2) MLAS multiplies u8×s8 with
// vpmaddubsw, whose int16 pair sums saturate for full-range int8 weights (ORT's documented U8S8
// saturation issue): that path is neither measured here nor safe, so bf16 stays the default there.
//
// The features come from /proc/cpuinfo (Linux); elsewhere none are known and the choice is bf16.

import * as fs from "../platform/fs.js";
import * as os from "../platform/os.js";

export interface CpuFeatures {
  arch: string;
  model: string;
  amx: boolean;
  avx512vnni: boolean;
  avxvnni: boolean;
  avx2: boolean;
  avx512bf16: boolean;
  armI8mm: boolean;
  armDotprod: boolean;
  /** where the flags came from ("" when nothing could be read) */
  source: string;
}

/** Parse /proc/cpuinfo text (x86 `flags`, Arm `Features`); `arch` as os.arch() reports it. */
export function parseCpuInfo(text: string, arch: string): CpuFeatures {
  const flagLine = text.split("\n").find((l) => /^(flags|Features)\s*:/.test(l)) ?? "";
  const flags = new Set(flagLine.replace(/^[^:]*:/, "").trim().split(/\s+/).filter(Boolean));
  const model = (text.split("\n").find((l) => /^model name\s*:/.test(l)) ?? "").replace(/^[^:]*:\s*/, "");
  return {
    arch, model,
    amx: flags.has("amx_int8"),
    avx512vnni: flags.has("avx512_vnni"),
    avxvnni: flags.has("avx_vnni"),
    avx2: flags.has("avx2"),
    avx512bf16: flags.has("avx512_bf16"),
    armI8mm: flags.has("i8mm"),
    armDotprod: flags.has("asimddp"),
    source: flagLine ? "/proc/cpuinfo" : "",
  };
}

/** This machine's features (read once). */
let cached: CpuFeatures | null = null;
export function cpuFeatures(): CpuFeatures {
  if (cached) return cached;
  let text = "";
  try {
    text = fs.readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    // not Linux: no flags known
  }
  cached = parseCpuInfo(text, os.arch());
  if (!cached.model) cached.model = os.cpus()[0]?.model ?? "unknown";
  return cached;
}

/** The int8 dot-product instructions present, by name (empty: none). */
export function int8DotProducts(f: CpuFeatures): string[] {
  const out: string[] = [];
  if (f.amx) out.push("AMX");
  if (f.avx512vnni) out.push("AVX512-VNNI");
  if (f.avxvnni) out.push("AVX-VNNI");
  if (f.armI8mm) out.push("Arm i8mm");
  if (f.armDotprod) out.push("Arm dotprod");
  return out;
}

/**
 * Whether ORT's u8×s8 integer GEMM (DynamicQuantizeMatMul) computes exact integer sums on this
 * CPU: only with int8 dot-product instructions. On x86 without VNNI/AMX, MLAS's AVX2 kernel adds
 * u8×s8 pairs with vpmaddubsw, whose int16 sums saturate for full-range int8 weights (measured on
 * an AVX2 AMD EPYC: per-channel int8 outputs off by up to 4× against the exact integer sum;
 * test/quant.test.ts). Unknown CPUs (no /proc/cpuinfo, the browser) count as not exact.
 */
export function integerGemmExact(f: CpuFeatures = cpuFeatures()): boolean {
  return int8DotProducts(f).length > 0;
}

export interface WeightsChoice {
  /** "int8": per-channel int8 on the integer GEMM; "bf16": weights as stored, float32 math */
  weights: "int8" | "bf16";
  reason: string;
}

/**
 * Below this many transformer parameters the model is not worth quantizing: its GEMMs are small,
 * quantizing costs more than it saves, and the tiny test checkpoints keep their float results.
 */
export const AUTO_INT8_MIN_PARAMS = 1e9;

/**
 * The weights to use when none are forced: int8 where the CPU has int8 dot products (its drift
 * meets the accuracy bar: cosine ≥ 0.999 per step against float32, docs/performance.md), bf16
 * otherwise. `params` is the transformer's parameter count; `device` other than cpu keeps bf16.
 */
export function chooseWeights(f: CpuFeatures, params: number, device = "cpu"): WeightsChoice {
  if (device !== "cpu") return { weights: "bf16", reason: `device ${device}: the int8 path is the CPU's integer GEMM` };
  if (params < AUTO_INT8_MIN_PARAMS) {
    return { weights: "bf16", reason: `a ${(params / 1e6).toFixed(1)}M-parameter transformer is too small for int8 to pay (it does from ${AUTO_INT8_MIN_PARAMS / 1e9}B)` };
  }
  const dots = int8DotProducts(f);
  if (dots.length) return { weights: "int8", reason: `the CPU has int8 dot products (${dots.join(", ")}), which ORT's integer GEMM uses` };
  if (f.avx2) return { weights: "bf16", reason: "the CPU has AVX2 but no VNNI/AMX: u8×s8 products can saturate there, and int8 is not faster" };
  return { weights: "bf16", reason: f.source ? "the CPU has no int8 dot-product instructions" : "the CPU's features are unknown (no /proc/cpuinfo)" };
}
