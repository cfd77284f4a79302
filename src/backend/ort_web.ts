// ONNX Runtime Web backend (onnxruntime-web): the same graphs as src/backend/ort.ts, run by
// ORT's WebAssembly build (SIMD; threads only where the page is cross-origin isolated) or by its
// WebGPU provider when the browser has an adapter. It also runs in Node (tests, `npm run bench`).
//
// Weights: small graphs are serialized with their weights inline. Large graphs keep every weight
// as an external-data reference into its .safetensors file, and the file's bytes are handed to
// ORT as `externalData` by reference (the in-memory file system already holds them, see
// src/platform/browser/fs.ts), so no second copy of the weights is made in JavaScript. WASM's
// 32-bit address space caps the whole session at 4 GB; see README "In the browser".

import * as ort from "onnxruntime-web";
import * as fs from "../platform/fs.js";
import type { Graph, Initializer } from "../onnx/graph.js";
import { defaultWasmThreads } from "./web_device.js";
import { ortTypeOf, type Backend, type Device, type HostData, type HostTensor, type Session, type SessionOptions } from "./backend.js";

/** Inline weights below this size (a serialized protobuf must stay well under 2 GB). */
const INLINE_LIMIT = 512 * 1024 * 1024;

export interface OrtWebBackendOptions {
  /** "webgpu" (needs an adapter) or "cpu" (WebAssembly). Default: "cpu". */
  device?: Device;
  /** WASM threads (more than 1 needs a cross-origin isolated page); default: defaultWasmThreads() (web_device.ts). */
  threads?: number;
  /** Where ORT fetches its .wasm/.mjs files (a URL prefix ending in "/"); default: next to the bundle. */
  wasmPaths?: string;
  /** Constant-fold bf16/f16 → float32 weight conversions at load (as OrtBackend's option). */
  foldWeightConversions?: boolean;
}

class OrtWebSession implements Session {
  constructor(private session: ort.InferenceSession) {}

  get inputNames() { return this.session.inputNames; }
  get outputNames() { return this.session.outputNames; }

  async run(feeds: Record<string, HostTensor>, outputs?: string[]): Promise<Record<string, HostTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = new ort.Tensor(ortTypeOf(v.data), v.data as never, v.shape);
    const res = outputs ? await this.session.run(ortFeeds, outputs) : await this.session.run(ortFeeds);
    const out: Record<string, HostTensor> = {};
    for (const [k, v] of Object.entries(res)) {
      // WebGPU outputs may live on the GPU; getData() brings them to the host.
      const data = v.location === "cpu" ? v.data : await v.getData(true);
      out[k] = { data: data as HostData, shape: [...v.dims] };
    }
    return out;
  }

  async release() {
    await this.session.release();
  }
}

export class OrtWebBackend implements Backend {
  readonly name = "onnxruntime-web";
  readonly device: Device;

  constructor(private options: OrtWebBackendOptions = {}) {
    this.device = options.device ?? "cpu";
    if (this.device === "cuda") throw new Error("onnxruntime-web has no CUDA provider: use device \"webgpu\" or \"cpu\" (WebAssembly)");
    if (options.wasmPaths) ort.env.wasm.wasmPaths = options.wasmPaths;
    // ORT reads numThreads once, when its WASM starts (the first session): later backends share it.
    const threads = options.threads ?? defaultWasmThreads();
    if (options.threads !== undefined && (!Number.isInteger(options.threads) || options.threads < 1)) throw new Error(`threads: a whole number ≥ 1, got ${options.threads}`);
    const g = globalThis as { crossOriginIsolated?: boolean; document?: unknown };
    if (threads && threads > 1 && g.document !== undefined && !g.crossOriginIsolated) {
      throw new Error(`${threads} WASM threads need a cross-origin isolated page (headers Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: credentialless or require-corp, as \`flux2 serve\` sends); leave threads unset or 1 here`);
    }
    if (threads) ort.env.wasm.numThreads = threads;
  }

  private sessionOptions(): ort.InferenceSession.SessionOptions {
    return {
      executionProviders: this.device === "webgpu" ? ["webgpu", "wasm"] : ["wasm"],
      graphOptimizationLevel: "all",
      logSeverityLevel: 3,
    };
  }

  async createSession(graph: Graph, options: SessionOptions = {}): Promise<Session> {
    const fold = { foldConversions: !!this.options.foldWeightConversions };
    if (!options.external && graph.weightBytes() < INLINE_LIMIT) {
      const bytes = graph.serialize(() => null, undefined, fold);
      return new OrtWebSession(await this.create(bytes, this.sessionOptions()));
    }
    // External data: each weight file under a short name, its bytes passed by reference.
    const files = [...new Set(graph.initializers.flatMap((i) => (i.source.kind === "file" ? [i.source.file] : [])))].sort();
    const name = new Map(files.map((f, i) => [f, `weights-${i}.safetensors`]));
    const place = (init: Initializer) => (init.source.kind === "file" ? { location: name.get(init.source.file)!, offset: init.source.offset } : null);
    const model = graph.serialize(place, undefined, fold);
    const externalData = files.map((f) => ({ path: name.get(f)!, data: fs.readFileSync(f) as Uint8Array }));
    return new OrtWebSession(await this.create(model, { ...this.sessionOptions(), externalData }));
  }

  private async create(model: Uint8Array, opts: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
    try {
      return await ort.InferenceSession.create(model, opts);
    } catch (e) {
      if (this.device === "cpu") throw e;
      throw new Error(`cannot start ONNX Runtime Web's WebGPU provider (${(e as Error).message.split("\n")[0]}); use device "cpu" (WebAssembly) on this browser`);
    }
  }
}

export { deviceCapabilities, defaultWasmThreads, type DeviceCapabilities } from "./web_device.js";
