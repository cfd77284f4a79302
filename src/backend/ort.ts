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
import type { Backend, Device, HostData, HostTensor, Session, SessionOptions } from "./backend.js";

/** Inline weights below this size; above it, use external data (protobuf caps messages at 2 GB). */
const INLINE_LIMIT = 512 * 1024 * 1024;

export function cacheRoot(): string {
  return process.env.FLUX2_CACHE ?? path.join(os.homedir(), ".cache", "flux2ts");
}

function ortType(data: HostData): ort.Tensor.Type {
  if (data instanceof Float32Array) return "float32";
  if (data instanceof BigInt64Array) return "int64";
  if (data instanceof Int32Array) return "int32";
  if (data instanceof Uint8Array) return "uint8";
  if (data instanceof Float64Array) return "float64";
  throw new Error("unsupported tensor data type");
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
    for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = new ort.Tensor(ortType(v.data), v.data as never, v.shape);
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
  threads?: number;
  /** ORT graph optimization level. */
  optimization?: "disabled" | "basic" | "extended" | "all";
  /** Write the optimized graph here (to check fusions). */
  optimizedModelPath?: string;
}

export class OrtBackend implements Backend {
  readonly name = "onnxruntime";
  readonly device: Device;

  constructor(private options: OrtBackendOptions = {}) {
    this.device = options.device ?? "cpu";
  }

  private sessionOptions(): ort.InferenceSession.SessionOptions {
    const providers: ort.InferenceSession.ExecutionProviderConfig[] =
      this.device === "cpu" ? ["cpu"] : [this.device, "cpu"];
    const opts: ort.InferenceSession.SessionOptions = {
      executionProviders: providers,
      graphOptimizationLevel: this.options.optimization ?? "all",
      // Warnings only (ORT otherwise prints shape-merge notes for symbolic dims).
      logSeverityLevel: 3,
    };
    if (this.options.threads) opts.intraOpNumThreads = this.options.threads;
    if (this.options.optimizedModelPath) opts.optimizedModelFilePath = this.options.optimizedModelPath;
    return opts;
  }

  async createSession(graph: Graph, options: SessionOptions = {}): Promise<Session> {
    const opts = this.sessionOptions();
    if (!options.external && graph.weightBytes() < INLINE_LIMIT) {
      const bytes = graph.serialize(() => null);
      return new OrtSession(await ort.InferenceSession.create(bytes, opts));
    }
    const modelPath = writeExternalModel(graph, options.cacheKey);
    return new OrtSession(await ort.InferenceSession.create(modelPath, opts));
  }
}

/**
 * Write `graph` as <cache>/<key>/model.onnx with external data pointing into
 * hard links of the original weight files. Reuses an existing folder.
 */
export function writeExternalModel(graph: Graph, cacheKey?: string): string {
  const files = [...new Set(graph.initializers.flatMap((i) => (i.source.kind === "file" ? [i.source.file] : [])))].sort();
  const linkName = new Map(files.map((f, i) => [f, `weights-${i}${path.extname(f)}`]));
  const place = (init: Initializer) =>
    init.source.kind === "file" ? { location: linkName.get(init.source.file)!, offset: init.source.offset } : null;
  const model = graph.serialize(place);
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
