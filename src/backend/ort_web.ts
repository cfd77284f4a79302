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
import { ortTypeOf, type Backend, type Device, type HostData, type HostTensor, type Session, type SessionOptions } from "./backend.js";

/** Inline weights below this size (a serialized protobuf must stay well under 2 GB). */
const INLINE_LIMIT = 512 * 1024 * 1024;

export interface OrtWebBackendOptions {
  /** "webgpu" (needs an adapter) or "cpu" (WebAssembly). Default: "cpu". */
  device?: Device;
  /** WASM threads (needs crossOriginIsolated in a browser); default: ORT's choice. */
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
    if (options.threads) ort.env.wasm.numThreads = options.threads;
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

/** What this device offers the engine: shown by the studio's "Run in this browser" toggle. */
export interface DeviceCapabilities {
  webgpu: boolean;
  /** The WebGPU adapter's vendor / architecture, when there is one. */
  adapter: string | null;
  /** Largest WebGPU storage buffer, bytes (weights per buffer must fit). */
  maxBufferBytes: number | null;
  /** WASM threads are possible only in a cross-origin isolated page. */
  threads: number;
  crossOriginIsolated: boolean;
  /** navigator.deviceMemory (GiB, rounded down by the browser, at most 8), if told. */
  deviceMemoryGiB: number | null;
}

export async function deviceCapabilities(): Promise<DeviceCapabilities> {
  const nav = globalThis.navigator as (Navigator & { gpu?: any; deviceMemory?: number }) | undefined;
  let adapter: any = null;
  try {
    adapter = nav?.gpu ? await nav.gpu.requestAdapter() : null;
  } catch {
    adapter = null;
  }
  const info = adapter?.info ?? null;
  const isolated = !!(globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated;
  return {
    webgpu: !!adapter,
    adapter: info ? [info.vendor, info.architecture, info.description].filter(Boolean).join(" ") || "unnamed adapter" : null,
    maxBufferBytes: adapter ? Number(adapter.limits.maxStorageBufferBindingSize) : null,
    threads: isolated ? (nav?.hardwareConcurrency ?? 1) : 1,
    crossOriginIsolated: isolated,
    deviceMemoryGiB: nav?.deviceMemory ?? null,
  };
}
