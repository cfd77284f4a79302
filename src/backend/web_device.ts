// What a browser offers the in-browser engine (onnxruntime-web): the WebGPU adapter and its
// buffer limits, and how many WASM threads the engine uses. Kept apart from ort_web.ts (no
// onnxruntime-web, no node:* imports) so the studio can share these types and the thread rule.

export interface DeviceCapabilities {
  webgpu: boolean;
  /** The WebGPU adapter's vendor / architecture, when there is one ("(software)" for a fallback adapter such as SwiftShader). */
  adapter: string | null;
  /** Largest WebGPU storage-buffer binding, bytes (one weight tensor in one binding must fit). */
  maxBufferBytes: number | null;
  /** Largest WebGPU buffer, bytes. */
  maxBufferSize: number | null;
  /** WASM threads the engine uses here (more than 1 only in a cross-origin isolated page). */
  threads: number;
  crossOriginIsolated: boolean;
  /** navigator.deviceMemory (GiB, rounded down by the browser, at most 8), if told. */
  deviceMemoryGiB: number | null;
}

/** At most this many WASM threads: ORT's WASM kernels gain little past it, and each thread is a Worker. */
export const MAX_WASM_THREADS = 8;

/**
 * WASM threads for this page: 1 unless it is cross-origin isolated (SharedArrayBuffer needs COOP +
 * COEP, which `flux2 serve` sends), else every logical core up to MAX_WASM_THREADS. ORT's own
 * default (half the cores, at most 4) leaves cores to a busy page; the studio's main thread only
 * waits while an image is made, so it takes them all. Undefined outside a browser (Node picks its own).
 */
export function defaultWasmThreads(): number | undefined {
  const g = globalThis as { crossOriginIsolated?: boolean; navigator?: { hardwareConcurrency?: number }; window?: unknown; document?: unknown };
  if (g.document === undefined && g.window === undefined) return undefined;
  if (!g.crossOriginIsolated) return 1;
  return Math.max(1, Math.min(MAX_WASM_THREADS, g.navigator?.hardwareConcurrency ?? 1));
}

export async function deviceCapabilities(threads = defaultWasmThreads()): Promise<DeviceCapabilities> {
  const nav = globalThis.navigator as (Navigator & { gpu?: any; deviceMemory?: number }) | undefined;
  let adapter: any = null;
  try {
    adapter = nav?.gpu ? await nav.gpu.requestAdapter() : null;
  } catch {
    adapter = null;
  }
  const info = adapter?.info ?? null;
  const name = info ? [info.vendor, info.architecture, info.description].filter(Boolean).join(" ") || "unnamed adapter" : null;
  const isolated = !!(globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated;
  return {
    webgpu: !!adapter,
    adapter: name && (info.isFallbackAdapter || adapter.isFallbackAdapter) ? `${name} (software)` : name,
    maxBufferBytes: adapter ? Number(adapter.limits.maxStorageBufferBindingSize) : null,
    maxBufferSize: adapter ? Number(adapter.limits.maxBufferSize) : null,
    threads: threads ?? 1,
    crossOriginIsolated: isolated,
    deviceMemoryGiB: nav?.deviceMemory ?? null,
  };
}
