// The PyTorch side of `flux2 bench --compare torch`: finds a Python with PyTorch and runs the
// project's own transformer step (src/bench/torch_step.py, written from the spec) on the same
// random checkpoint, so flux2.ts can be timed against what a Python user would run instead.
//
// PyTorch is optional: without it the bench says how to install it and goes on without.

import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { runForJson } from "./child.js";
import { fileURLToPath } from "node:url";

export const TORCH_INSTALL_HINT =
  "PyTorch not found, so there is no side-by-side comparison. On Debian/Ubuntu: `apt-get install python3-torch` " +
  "(then /usr/bin/python3 has it); or set FLUX2_TORCH_PYTHON to a Python that can `import torch`.";

export type TorchDtype = "bf16" | "fp32";

export interface TorchPython {
  python: string;
  version: string;
}

export interface TorchStepResult {
  torch: string;
  dtype: TorchDtype;
  threads: number;
  resolution: number;
  text_length: number;
  load_seconds: number;
  first_run_seconds: number;
  runs: number[];
  peak_rss_bytes: number;
  /** the BLAS library PyTorch loaded (its float32 matmuls run on it) */
  blas?: string | null;
}

/**
 * Debian's reference BLAS (libblas3, /usr/lib/<arch>/blas/libblas.so.3): what PyTorch's float32
 * matmuls run on when no optimized BLAS is installed; ~30× slower than OpenBLAS (measured on this
 * machine: docs/performance.md), so a float32 comparison against it says nothing about PyTorch.
 */
export function isReferenceBlas(lib: string | null | undefined): boolean {
  return !!lib && /\/blas\/libblas\.so/.test(lib);
}

export const REFERENCE_BLAS_HINT =
  "PyTorch's float32 matmuls run on Debian's reference BLAS here (libblas3), ~30× slower than OpenBLAS: " +
  "`apt-get install libopenblas0-pthread` (or put its libblas.so.3 first on LD_LIBRARY_PATH) for a fair float32 comparison.";

/** The script, from dist/src/bench/ or src/bench/ (tsc does not copy it, so look in the source tree). */
export function torchScript(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = path.basename(path.dirname(path.dirname(here))) === "dist" ? path.resolve(here, "../../..") : path.resolve(here, "../..");
  return path.join(root, "src", "bench", "torch_step.py");
}

/**
 * $FLUX2_TORCH_PYTHON when set (only that one), else the first of python3, /usr/bin/python3 that
 * imports torch. (A pyenv or venv `python3` first on PATH often lacks Debian's python3-torch,
 * which lives in /usr/bin's.)
 */
export function findTorchPython(): TorchPython | null {
  const candidates = process.env.FLUX2_TORCH_PYTHON ? [process.env.FLUX2_TORCH_PYTHON] : ["python3", "/usr/bin/python3"];
  for (const python of [...new Set(candidates)]) {
    const r = spawnSync(python, ["-c", "import torch; print(torch.__version__)"], { encoding: "utf8", timeout: 300_000 });
    if (r.status === 0 && r.stdout.trim()) return { python, version: r.stdout.trim() };
  }
  return null;
}

function runPython(py: TorchPython, args: string[], echo: (s: string) => void): Promise<any> {
  return runForJson(py.python, [torchScript(), ...args], `${py.python} ${path.basename(torchScript())} ${args.join(" ")}`, echo, (out) => {
    const line = out.trim().split("\n").pop() ?? "";
    return line.startsWith("{") ? line : undefined;
  });
}

/** One PyTorch transformer step (a warm-up, then `repeats` timed forwards) in its own process. */
export function torchStep(py: TorchPython, model: string, o: { dtype: TorchDtype; resolution: number; textLength: number; repeats: number; threads?: number },
                          echo: (s: string) => void): Promise<TorchStepResult> {
  const args = ["bench", model, "--dtype", o.dtype, "--resolution", String(o.resolution), "--text-length", String(o.textLength), "--repeats", String(Math.max(1, o.repeats))];
  if (o.threads) args.push("--threads", String(o.threads));
  return runPython(py, args, echo);
}

export interface TorchMatmulResult {
  torch: string;
  threads: number;
  blas?: string | null;
  kernels: { kernel: "torch_bf16" | "torch_fp32"; M: number; N: number; K: number; seconds: number; gflops: number; runs: number[] }[];
}

/** x [M, K] · W [N, K]ᵀ in PyTorch bf16 and float32 (F.linear), interleaved, best of `rounds`. */
export function torchMatmul(py: TorchPython, M: number, N: number, K: number, o: { rounds: number; threads?: number }, echo: (s: string) => void): Promise<TorchMatmulResult> {
  const args = ["matmul", String(M), String(N), String(K), "--rounds", String(Math.max(1, o.rounds))];
  if (o.threads) args.push("--threads", String(o.threads));
  return runPython(py, args, echo);
}

export interface TorchGoldenCase {
  name: string;
  max_abs_error?: number;
  tolerance?: number;
  pass?: boolean;
  skipped?: string;
}

/** The PyTorch step against the golden transformer cases (float32). */
export function torchCheckGolden(py: TorchPython, golden: string): Promise<{ torch: string; cases: TorchGoldenCase[] }> {
  return runPython(py, ["check", golden], () => {});
}
