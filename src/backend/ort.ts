// ONNX Runtime backend (onnxruntime-node).
//
// Small graphs are serialized with their weights inline and loaded from
// memory. Large graphs (real checkpoints) are written to a cache folder as a
// .onnx file whose initializers are external-data references into the
// original .safetensors files, so ORT memory-maps the weights instead of
// copying them. ORT refuses external-data paths that are absolute, contain
// "..", or are symlinks leaving the model's folder, so each weight file is
// hard-linked into the cache folder (falling back to a copy across devices).

import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import ort from "onnxruntime-node";
import type { Graph, Initializer } from "../onnx/graph.js";
import { ortTypeOf, type Backend, type Device, type HostData, type HostTensor, type Session, type SessionOptions } from "./backend.js";

// ONNX Runtime 1.30's Linux build creates a telemetry client (Microsoft's 1DS SDK) when its
// environment is first created, i.e. on the first InferenceSession. That client reads
// /proc/self/cmdline and walks it with a recursive matcher, about three stack frames per
// character (gdb: ~87,000 frames for a 30 KB command line); past about 29 KB (a long --prompt)
// it overflows the 8 MB main-thread stack and the process dies with SIGSEGV before any model
// runs. It also writes a cache under ~/.cache/Microsoft. ORT skips all of it when ORT_DISABLE_TELEMETRY is set, and
// reads the variable only at that first session, so setting it here (before any session) is
// enough. A user who sets the variable explicitly keeps their value.
process.env.ORT_DISABLE_TELEMETRY ??= "1";

/** Inline weights below this size; above it, use external data (protobuf caps messages at 2 GB). */
const INLINE_LIMIT = 512 * 1024 * 1024;

export function cacheRoot(): string {
  return process.env.FLUX2_CACHE ?? path.join(os.homedir(), ".cache", "flux2ts");
}

function toHost(t: ort.Tensor): HostTensor {
  return { data: t.data as HostData, shape: [...t.dims] };
}

class OrtSession implements Session {
  constructor(private session: ort.InferenceSession) {}

  get inputNames() { return this.session.inputNames; }
  get outputNames() { return this.session.outputNames; }

  async run(feeds: Record<string, HostTensor>, outputs?: string[]): Promise<Record<string, HostTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = new ort.Tensor(ortTypeOf(v.data), v.data as never, v.shape);
    const res = outputs ? await this.session.run(ortFeeds, outputs) : await this.session.run(ortFeeds);
    const out: Record<string, HostTensor> = {};
    for (const [k, v] of Object.entries(res)) out[k] = toHost(v);
    return out;
  }

  async release() {
    await this.session.release();
  }
}

export interface OrtBackendOptions {
  device?: Device;
  /** GPU index for cuda / webgpu (default: the provider's default device). */
  deviceId?: number;
  threads?: number;
  /** ORT graph optimization level. */
  optimization?: "disabled" | "basic" | "extended" | "all";
  /** Write the optimized graph here (to check fusions). */
  optimizedModelPath?: string;
  /** ORT's CPU memory arena (`enableCpuMemArena`, default on). */
  memArena?: boolean;
  /** ORT's memory-pattern planner (`enableMemPattern`, default on). */
  memPattern?: boolean;
  /** Let kernels repack constant weights at load (default on; `session.disable_prepacking` when off). */
  prepacking?: boolean;
  /**
   * Constant-fold weight conversions (bf16/f16 → float32 Casts) at load, i.e. hold a float32 copy
   * of every such weight. Default off: weights stay in their stored dtype, memory-mapped, and are
   * converted just before use (see Graph.serialize and docs/performance.md).
   */
  foldWeightConversions?: boolean;
  /** Extra ORT session config entries, e.g. { "session.use_env_allocators": "1" }. */
  config?: Record<string, string>;
  /** Write an ORT profile (chrome-trace JSON) with this file prefix. */
  profilePrefix?: string;
}

export class OrtBackend implements Backend {
  readonly name = "onnxruntime";
  readonly device: Device;

  constructor(private options: OrtBackendOptions = {}) {
    this.device = options.device ?? "cpu";
  }

  private sessionOptions(external: boolean, session: SessionOptions = {}): ort.InferenceSession.SessionOptions {
    const o = this.options;
    const gpu = o.deviceId !== undefined ? ({ name: this.device, deviceId: o.deviceId } as ort.InferenceSession.ExecutionProviderConfig) : this.device;
    const providers: ort.InferenceSession.ExecutionProviderConfig[] = this.device === "cpu" ? ["cpu"] : [gpu, "cpu"];
    const opts: ort.InferenceSession.SessionOptions = {
      executionProviders: providers,
      graphOptimizationLevel: o.optimization ?? "all",
      // Warnings only (ORT otherwise prints shape-merge notes for symbolic dims).
      logSeverityLevel: 3,
    };
    if (o.threads) opts.intraOpNumThreads = o.threads;
    if (o.memArena !== undefined) opts.enableCpuMemArena = o.memArena;
    const memPattern = session.memPattern ?? o.memPattern;
    if (memPattern !== undefined) opts.enableMemPattern = memPattern;
    if (o.profilePrefix) {
      opts.enableProfiling = true;
      opts.profileFilePrefix = o.profilePrefix;
    }
    const config: Record<string, string> = { ...o.config };
    if (o.prepacking === false) config["session.disable_prepacking"] = "1";
    if (o.optimizedModelPath) {
      opts.optimizedModelFilePath = o.optimizedModelPath;
      // A real checkpoint's optimized graph would exceed protobuf's 2 GB: keep its weights outside.
      if (external) {
        config["session.optimized_model_external_initializers_file_name"] = `${path.basename(o.optimizedModelPath)}.data`;
        config["session.optimized_model_external_initializers_min_size_in_bytes"] = "1024";
      }
    }
    if (Object.keys(config).length) opts.extra = nestConfig(config);
    return opts;
  }

  async createSession(graph: Graph, options: SessionOptions = {}): Promise<Session> {
    const model = ortModel(graph, options, { foldConversions: !!this.options.foldWeightConversions });
    return new OrtSession(await this.create(model, typeof model === "string", options));
  }

  private async create(model: Uint8Array | string, external: boolean, session: SessionOptions): Promise<ort.InferenceSession> {
    try {
      return await (typeof model === "string"
        ? ort.InferenceSession.create(model, this.sessionOptions(external, session))
        : ort.InferenceSession.create(model, this.sessionOptions(external, session)));
    } catch (e) {
      if (this.device === "cpu") throw e;
      throw new Error(`cannot start ONNX Runtime's ${this.device} execution provider: ${firstLine((e as Error).message)}\n${GPU_HINTS[this.device]}`);
    }
  }
}

const GPU_HINTS: Record<Exclude<Device, "cpu">, string> = {
  cuda: "The CUDA provider is not downloaded at install: run `node node_modules/onnxruntime-node/script/install.js --onnxruntime-node-install=cuda12` (needs an NVIDIA GPU, CUDA 12 and cuDNN 9), or use --device cpu.",
  webgpu: "WebGPU needs a GPU adapter (on Linux a Vulkan driver, libvulkan.so.1); use --device cpu on machines without one.",
};

function firstLine(s: string): string {
  const line = s.split("\n").find((l) => l.trim()) ?? s;
  return line.replace(/^.*?(Failed to|No supported|cannot|could not)/i, "$1").slice(0, 300);
}

/** { "session.a": "1" } → { session: { a: "1" } } (onnxruntime-node flattens `extra` back into config keys). */
function nestConfig(config: Record<string, string>): Record<string, unknown> {
  const out: Record<string, any> = {};
  for (const [key, value] of Object.entries(config)) {
    const parts = key.split(".");
    let o = out;
    for (const p of parts.slice(0, -1)) o = o[p] ??= {};
    o[parts[parts.length - 1]] = value;
  }
  return out;
}

/**
 * What ONNX Runtime loads for `graph`: its bytes with the weights inline, or (a large graph, or
 * options.external) the path of a model file whose weights stay in their files.
 */
export function ortModel(graph: Graph, options: SessionOptions = {}, opts: { foldConversions?: boolean } = {}): Uint8Array | string {
  if (!options.external && graph.weightBytes() < INLINE_LIMIT) return graph.serialize(() => null, undefined, opts);
  return writeExternalModel(graph, options.cacheKey, opts);
}

/**
 * Write `graph` as <cache>/<key>/model.onnx with external data pointing into
 * hard links of the original weight files. Reuses an existing folder.
 */
export function writeExternalModel(graph: Graph, cacheKey?: string, opts: { foldConversions?: boolean } = {}): string {
  const files = [...new Set(graph.initializers.flatMap((i) => (i.source.kind === "file" ? [i.source.file] : [])))].sort();
  const linkName = new Map(files.map((f, i) => [f, `weights-${i}${path.extname(f)}`]));
  const place = (init: Initializer) =>
    init.source.kind === "file" ? { location: linkName.get(init.source.file)!, offset: init.source.offset } : null;
  const model = graph.serialize(place, undefined, opts);
  const dir = path.join(cacheRoot(), "onnx", cacheKey ?? cacheKeyFor(graph.name, model, files));
  fs.mkdirSync(dir, { recursive: true });
  for (const f of files) linkWeightFile(f, path.join(dir, linkName.get(f)!));
  const modelPath = path.join(dir, "model.onnx");
  const tmp = `${modelPath}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, model);
  fs.renameSync(tmp, modelPath);
  return modelPath;
}

function linkWeightFile(src: string, dst: string): void {
  const real = fs.realpathSync(src);
  const have = fs.statSync(dst, { throwIfNoEntry: false });
  const want = fs.statSync(real);
  if (have && have.ino === want.ino && have.dev === want.dev) return;
  if (have) fs.rmSync(dst);
  try {
    fs.linkSync(real, dst);
  } catch {
    // Different filesystem (or no hard-link permission): a copy is the only
    // form ORT accepts. Say so, since it costs disk space and time.
    process.stderr.write(`flux2: cannot hard-link ${real} into the cache; copying it (set FLUX2_CACHE to a folder on the same disk to avoid this)\n`);
    fs.copyFileSync(real, dst);
  }
}

/** Same graph and same weight files (by identity) give the same folder. */
function cacheKeyFor(name: string, model: Uint8Array, files: string[]): string {
  const h = crypto.createHash("sha256");
  h.update(model);
  for (const f of files) {
    const st = fs.statSync(f);
    h.update(`${fs.realpathSync(f)}:${st.size}:${st.mtimeMs}`);
  }
  return `${name}-${h.digest("hex").slice(0, 16)}`;
}
