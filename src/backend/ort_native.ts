// ONNX Runtime through flux2.ts's own native addon (native/, built by scripts/build-native.ts),
// for one thing onnxruntime-node cannot do: run the trainer's matrix products in bfloat16.
//
// ONNX Runtime's CPU provider has no bfloat16 MatMul on x86, and its float32 MatMul already runs
// near one core's float32 peak on the trainer's shapes. The addon registers a custom operator,
// ai.flux2ts::BfMatMul (FusedMatMul's attributes; inputs rounded to bfloat16, products summed in
// float32, as PyTorch's bf16 autocast), written for AVX-512 BF16. With trainingMatmul "bf16" the
// trainers rewrite their step graphs' large products into it (src/train/bf16.ts); every other
// graph (samples, caches, generation) runs as on OrtBackend, in float32, on the same
// libonnxruntime. docs/training.md, "bf16 matrix products", has the measurements.

import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { Graph } from "../onnx/graph.js";
import { ortTypeOf, type Backend, type Device, type HostTensor, type MatmulPrecision, type Session, type SessionOptions } from "./backend.js";
import { OrtBackend, ortModel } from "./ort.js";

interface NativeTensor {
  data: HostTensor["data"];
  shape: number[];
}

interface NativeAddon {
  info(): { bf16: boolean; apiVersion: number; ortVersion: string };
  createSession(model: Uint8Array | string, options: Record<string, unknown>): { handle: unknown; inputNames: string[]; outputNames: string[] };
  /** Runs on a libuv worker thread; the input arrays must not change until it settles. */
  run(handle: unknown, names: string[], tensors: NativeTensor[], outputNames: string[]): Promise<NativeTensor[]>;
  release(handle: unknown): void;
}

/** Where the build puts the addon: <package>/build/native/flux2_native.node. */
export const NATIVE_ADDON_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../build/native/flux2_native.node");

let loaded: { addon: NativeAddon } | { error: string } | undefined;

function loadAddon(): { addon: NativeAddon } | { error: string } {
  if (loaded) return loaded;
  if (!fs.existsSync(NATIVE_ADDON_PATH)) {
    loaded = { error: `the native addon is not built (${NATIVE_ADDON_PATH} is missing): run \`npm run build\` (it builds the addon with g++ and Node's headers; \`node dist/scripts/build-native.js --strict\` says why it cannot)` };
  } else {
    try {
      loaded = { addon: createRequire(import.meta.url)(NATIVE_ADDON_PATH) as NativeAddon };
    } catch (e) {
      loaded = { error: `the native addon did not load (${(e as Error).message.split("\n")[0]}): rebuild it with \`node dist/scripts/build-native.js --force\`` };
    }
  }
  return loaded;
}

/** Whether bf16 matrix products can run here, and if not, why (a sentence that says what to do). */
export function nativeBf16Status(): { ok: true; fast: boolean; ortVersion: string } | { ok: false; reason: string } {
  const l = loadAddon();
  if ("error" in l) return { ok: false, reason: l.error };
  const info = l.addon.info();
  return { ok: true, fast: info.bf16, ortVersion: info.ortVersion };
}

function addon(): NativeAddon {
  const l = loadAddon();
  if ("error" in l) throw new Error(l.error);
  return l.addon;
}

const OPTIMIZATION = { disabled: 0, basic: 1, extended: 2, all: 99 } as const;

class NativeSession implements Session {
  constructor(private handle: unknown, readonly inputNames: readonly string[], readonly outputNames: readonly string[]) {}

  async run(feeds: Record<string, HostTensor>, outputs?: string[]): Promise<Record<string, HostTensor>> {
    const names = Object.keys(feeds);
    for (const k of names) ortTypeOf(feeds[k].data); // the same refusal as OrtBackend for other arrays
    const want = outputs ?? [...this.outputNames];
    const res = await addon().run(this.handle, names, names.map((k) => ({ data: feeds[k].data, shape: feeds[k].shape })), want);
    return Object.fromEntries(want.map((k, i) => [k, { data: res[i].data, shape: res[i].shape }]));
  }

  async release(): Promise<void> {
    addon().release(this.handle);
  }
}

export interface NativeOrtBackendOptions {
  threads?: number;
  optimization?: keyof typeof OPTIMIZATION;
  /** Tell the trainers to take their steps' matrix products in bfloat16 (the reason this backend exists). */
  trainingMatmul?: MatmulPrecision;
}

export class NativeOrtBackend implements Backend {
  readonly name = "onnxruntime-native";
  readonly device: Device = "cpu";
  readonly trainingMatmul: MatmulPrecision;

  constructor(private options: NativeOrtBackendOptions = {}) {
    addon(); // fail at construction, with the reason, rather than at the first session
    this.trainingMatmul = options.trainingMatmul ?? "fp32";
  }

  async createSession(graph: Graph, options: SessionOptions = {}): Promise<Session> {
    const sessionOptions: Record<string, unknown> = { optimization: OPTIMIZATION[this.options.optimization ?? "all"] };
    if (this.options.threads) sessionOptions.threads = this.options.threads;
    if (options.memPattern !== undefined) sessionOptions.memPattern = options.memPattern;
    const s = addon().createSession(ortModel(graph, options), sessionOptions);
    return new NativeSession(s.handle, s.inputNames, s.outputNames);
  }
}

/**
 * Why bf16 training products cannot run here (a sentence that says what to do), or undefined
 * where they can: not on a GPU, not without the addon, and not on a CPU without AVX-512 BF16,
 * where the portable kernel would be slower than float32 and so defeat the option's only purpose.
 * One rule for both `--matmul bf16` (refused with it) and `--matmul auto` (float32 with it).
 */
function bf16Refusal(device?: Device): string | undefined {
  if (device && device !== "cpu") return `--matmul bf16 is for training on the CPU; with --device ${device} leave it out (the GPU providers choose their own precision)`;
  const st = nativeBf16Status();
  if (!st.ok) return `--matmul bf16: ${st.reason}`;
  if (!st.fast) return "--matmul bf16: this CPU has no AVX-512 BF16 instructions (lscpu: avx512_bf16), so bfloat16 products would run slower than float32 ones; leave --matmul out";
  return undefined;
}

/**
 * What `--matmul auto` trains with here: bf16 where openTrainingBackend would accept it, float32
 * elsewhere, with the reason, so that one recipe runs on every machine and takes the faster
 * products where they exist.
 */
export function autoTrainingMatmul(device?: Device): { matmul: MatmulPrecision; reason: string } {
  const refusal = bf16Refusal(device);
  if (refusal) return { matmul: "fp32", reason: refusal };
  return { matmul: "bf16", reason: "this CPU has AVX-512 BF16 and the native addon is built" };
}

/**
 * The backend a training run uses: OrtBackend, or with matmul "bf16" a NativeOrtBackend whose
 * training graphs take their matrix products in bfloat16 (refused, with what to do, where
 * bf16Refusal says so).
 */
export function openTrainingBackend(o: { device?: Device; threads?: number; matmul?: MatmulPrecision }): Backend {
  if ((o.matmul ?? "fp32") === "fp32") return new OrtBackend({ device: o.device, threads: o.threads });
  const refusal = bf16Refusal(o.device);
  if (refusal) throw new Error(refusal);
  return new NativeOrtBackend({ threads: o.threads, trainingMatmul: "bf16" });
}
