// "Run in this browser": the studio drives flux2's browser bundle (dist/browser/flux2.js, served
// by `flux2 serve` at /browser/) instead of the server's generation endpoints. The bundle is
// loaded on first use only, so the studio stays small for everyone who runs on the server.
// The types below are the part of the bundle's API (src/browser/index.ts) the studio uses.

import type { Job } from "../api";
// Shared with the bundle (type-only; these two files import nothing from Node or ONNX Runtime).
import type { DeviceCapabilities as Capabilities } from "../../../src/backend/web_device";
import type { DownloadProgress, DownloadReport } from "../../../src/browser/model_store";

export type { Capabilities, DownloadProgress, DownloadReport };

interface Preview { rgb: Uint8Array; width: number; height: number }
interface Generated { rgb: Uint8Array; width: number; height: number; seed: number | null }
interface Pipeline {
  variant: string;
  generate(o: Record<string, unknown> & { onStep?: (s: { step: number; steps: number; preview?: Preview }) => void }): Promise<{ images: Generated[]; steps: number; guidance: number }>;
}
interface Bundle {
  loadModel(url: string, o: { onProgress?: (p: DownloadProgress) => void; headers?: Record<string, string>; backend?: { device?: "cpu" | "webgpu" } }): Promise<{ pipeline: Pipeline; download: DownloadReport }>;
  deviceCapabilities(): Promise<Capabilities>;
  encodePng(rgb: Uint8Array, w: number, h: number, parameters?: string): Promise<Uint8Array>;
  formatParameters(r: Record<string, unknown>): string;
  decodeImage(data: Blob): Promise<Preview>;
}

let bundle: Promise<Bundle> | null = null;

export function loadBundle(): Promise<Bundle> {
  bundle ??= import(/* @vite-ignore */ new URL("browser/flux2.js", document.baseURI).href) as Promise<Bundle>;
  bundle.catch(() => { bundle = null; });
  return bundle;
}

export interface LocalModel {
  id: string;
  pipeline: Pipeline;
  download: DownloadReport;
  device: "cpu" | "webgpu";
}

/** Download (or take from the cache) the model's files and open it in this tab. */
export async function openLocalModel(id: string, device: "cpu" | "webgpu", key: string, onProgress: (p: DownloadProgress) => void): Promise<LocalModel> {
  const b = await loadBundle();
  const url = new URL(`v1/files/${encodeURIComponent(id)}`, document.baseURI).href;
  const { pipeline, download } = await b.loadModel(url, { onProgress, headers: key ? { "x-key": key } : {}, backend: { device } });
  return { id, pipeline, download, device };
}

export class Cancelled extends Error {
  constructor() { super("cancelled"); }
}

function toPngUrl(bytes: Uint8Array): string {
  return URL.createObjectURL(new Blob([bytes as Uint8Array<ArrayBuffer>], { type: "image/png" }));
}

async function previewUrl(b: Bundle, p: Preview): Promise<string> {
  return toPngUrl(await b.encodePng(p.rgb, p.width, p.height));
}

let counter = 0;

/** One image in this tab; the result is shaped as a server job so the output and gallery show it. */
export async function generateLocally(m: LocalModel, body: Record<string, unknown>, signal: AbortSignal,
  onStep: (step: number, steps: number, preview: string | null) => void): Promise<Job> {
  const b = await loadBundle();
  const created = Date.now() / 1000;
  // Inpainting, strength and outpainting are not wired into the in-browser run yet: refuse, do not ignore.
  for (const f of ["mask_image", "strength", "expand"]) {
    if (body[f] !== undefined) throw new Error(`${f.replace("_", " ")} is not available in the browser yet; turn off "Run in this browser" to use it on the server`);
  }
  const refUrls = Object.keys(body).filter((k) => /^input_image(_\d+)?$/.test(k)).sort((a, z) => Number(a.slice(12) || 1) - Number(z.slice(12) || 1)).map((k) => String(body[k]));
  const references = await Promise.all(refUrls.map(async (u) => b.decodeImage(await (await fetch(u)).blob())));
  let pending: Promise<void> = Promise.resolve();
  const res = await m.pipeline.generate({
    prompt: String(body.prompt), width: body.width, height: body.height, seed: body.seed,
    ...(body.steps !== undefined ? { steps: body.steps } : {}),
    ...(body.guidance !== undefined ? { guidance: body.guidance } : {}),
    ...(typeof body.negative_prompt === "string" ? { negativePrompt: body.negative_prompt } : {}),
    ...(references.length ? { references } : {}),
    preview: true,
    // Throwing here stops the run between steps: that is how Cancel works in the browser.
    onStage: () => { if (signal.aborted) throw new Cancelled(); },
    onStep: (s) => {
      if (signal.aborted) throw new Cancelled();
      const pv = s.preview;
      pending = pending.then(async () => onStep(s.step, s.steps, pv ? await previewUrl(b, pv) : null));
    },
  });
  await pending;
  const img = res.images[0];
  const record = {
    prompt: String(body.prompt), negativePrompt: typeof body.negative_prompt === "string" && body.negative_prompt ? body.negative_prompt : null,
    width: img.width, height: img.height, steps: res.steps, guidance: res.guidance, seed: img.seed, variant: m.pipeline.variant, model: m.id,
  };
  const png = await b.encodePng(img.rgb, img.width, img.height, b.formatParameters(record));
  const sample = toPngUrl(png);
  return {
    id: `local-${Date.now().toString(36)}-${counter++}`, model: m.id, status: "Ready", createdAt: created,
    params: { ...body, run: "this browser" }, error: null, progress: 1, preview: null, hidden: false, startedAt: created, endedAt: Date.now(), batch: null,
    result: { sample, samples: [sample], prompt: record.prompt, seed: img.seed, width: img.width, height: img.height, raw: { ...record, run: "this browser" } },
  };
}
