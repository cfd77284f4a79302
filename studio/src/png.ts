// Generation settings embedded in PNG files, read in the browser.
//
// Why no library: a PNG is an 8-byte signature and a list of length-prefixed
// chunks, and the three text chunk types (tEXt, zTXt, iTXt) are a keyword, a
// NUL and the text. Walking them with a DataView is a few lines; the one
// compressed case (zTXt, compressed iTXt) is zlib, which the browser's own
// DecompressionStream("deflate") inflates. A PNG-parsing package would add
// bundle weight and a dependency to audit for what is ~40 lines here.
//
// Three conventions are recognised, best first:
//   "flux2"      — flux2.ts's JSON record (src/pipeline/metadata.ts ImageRecord)
//   "parameters" — A1111 text (prompt, "Negative prompt: …", "Steps: 4, Seed: 1, Size: WxH, …")
//   "prompt"     — ComfyUI's API-format workflow JSON (CLIPTextEncode, KSampler, …)

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

async function inflate(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Every text chunk of a PNG, keyword → text (later chunks win). Throws if not a PNG. */
export async function readPngText(buf: ArrayBuffer): Promise<Record<string, string>> {
  const bytes = new Uint8Array(buf);
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) throw new Error("not a PNG file");
  const view = new DataView(buf);
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder("utf-8");
  const out: Record<string, string> = {};
  for (let p = 8; p + 12 <= bytes.length;) {
    const len = view.getUint32(p);
    const type = latin1.decode(bytes.subarray(p + 4, p + 8));
    const data = bytes.subarray(p + 8, Math.min(p + 8 + len, bytes.length));
    p += 12 + len;
    if (type === "IEND") break;
    if (type !== "tEXt" && type !== "zTXt" && type !== "iTXt") continue;
    const nul = data.indexOf(0);
    if (nul < 0) continue;
    const key = latin1.decode(data.subarray(0, nul));
    if (type === "tEXt") out[key] = latin1.decode(data.subarray(nul + 1));
    else if (type === "zTXt") out[key] = latin1.decode(await inflate(data.subarray(nul + 2)));
    else {
      // iTXt: keyword \0 flag method language \0 translated-keyword \0 text
      const compressed = data[nul + 1] === 1;
      const lang = data.indexOf(0, nul + 3);
      const tkey = lang < 0 ? -1 : data.indexOf(0, lang + 1);
      if (tkey < 0) continue;
      const text = data.subarray(tkey + 1);
      out[key] = utf8.decode(compressed ? await inflate(text) : text);
    }
  }
  return out;
}

/** Settings recovered from an image, in the studio's own terms. */
export interface LoadedSettings {
  source: "flux2" | "a1111" | "comfyui";
  prompt: string;
  negativePrompt?: string;
  width?: number;
  height?: number;
  seed?: number;
  steps?: number;
  guidance?: number;
  model?: string;
  variant?: string;
  loras?: { name: string; strength: number }[];
  strength?: number;
  /** Reference images the image was made from: a PNG records their sizes, not their pixels. */
  references?: number;
  /** Recorded settings the studio has no control for (A1111's Sampler, ComfyUI's scheduler…), name → value. */
  other?: Record<string, string>;
}

const int = (v: unknown): number | undefined => {
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() ? Number(v) : NaN;
  return Number.isFinite(n) ? n : undefined;
};

/** A1111 "parameters" text: the same split as src/pipeline/metadata.ts parseParameters. */
export function parseParameters(text: string): { prompt: string; negativePrompt: string; settings: Record<string, string> } {
  const lines = text.replace(/\r\n/g, "\n").split("\n");
  const last = lines[lines.length - 1] ?? "";
  const settings: Record<string, string> = {};
  if (/(^|, )Steps: /.test(last)) {
    for (const m of last.matchAll(/\s*([\w ]+): ("(?:[^"\\]|\\.)*"|[^,]*)(?:,|$)/g)) settings[m[1].trim()] = m[2].trim();
    lines.pop();
  }
  const negAt = lines.findIndex((l) => l.startsWith("Negative prompt:"));
  const prompt = (negAt >= 0 ? lines.slice(0, negAt) : lines).join("\n");
  const negativePrompt = negAt >= 0 ? lines.slice(negAt).join("\n").slice("Negative prompt:".length).trim() : "";
  return { prompt, negativePrompt, settings };
}

const A1111_USED = new Set(["Size", "Seed", "Steps", "CFG scale", "Guidance", "Distilled CFG Scale", "Model", "Variant"]);

function fromA1111(text: string): LoadedSettings {
  const { prompt, negativePrompt, settings } = parseParameters(text);
  const size = /^(\d+)x(\d+)$/.exec(settings.Size ?? "");
  return {
    source: "a1111", prompt, negativePrompt: negativePrompt || undefined,
    width: size ? Number(size[1]) : undefined, height: size ? Number(size[2]) : undefined,
    seed: int(settings.Seed), steps: int(settings.Steps),
    guidance: int(settings["CFG scale"] ?? settings.Guidance ?? settings["Distilled CFG Scale"]),
    model: settings.Model, variant: settings.Variant,
    other: Object.fromEntries(Object.entries(settings).filter(([k]) => !A1111_USED.has(k))),
  };
}

function fromFlux2(json: string): LoadedSettings | null {
  let r: Record<string, unknown>;
  try { r = JSON.parse(json) as Record<string, unknown>; } catch { return null; }
  if (!r || typeof r.prompt !== "string") return null;
  return {
    source: "flux2", prompt: r.prompt,
    negativePrompt: typeof r.negativePrompt === "string" && r.negativePrompt ? r.negativePrompt : undefined,
    width: int(r.width), height: int(r.height), seed: int(r.seed), steps: int(r.steps), guidance: typeof r.guidance === "number" ? r.guidance : undefined,
    model: typeof r.model === "string" ? r.model : undefined, variant: typeof r.variant === "string" ? r.variant : undefined,
    loras: Array.isArray(r.loras) ? (r.loras as { name?: unknown; strength?: unknown }[])
      .filter((l) => typeof l?.name === "string").map((l) => ({ name: String(l.name), strength: typeof l.strength === "number" ? l.strength : 1 })) : undefined,
    strength: typeof r.strength === "number" ? r.strength : undefined,
    references: Array.isArray(r.references) ? r.references.length : undefined,
  };
}

/** ComfyUI API-format workflow: {"3": {"class_type": "KSampler", "inputs": {...}}, …}. */
function fromComfy(json: string): LoadedSettings | null {
  let g: Record<string, { class_type?: string; inputs?: Record<string, unknown> }>;
  try { g = JSON.parse(json); } catch { return null; }
  if (!g || typeof g !== "object") return null;
  const nodes = Object.values(g).filter((n) => n && typeof n === "object" && typeof n.class_type === "string");
  if (!nodes.length) return null;
  const out: LoadedSettings = { source: "comfyui", prompt: "" };
  const texts: string[] = [];
  for (const n of nodes) {
    const i = n.inputs ?? {};
    const t = n.class_type!;
    if (/TextEncode/i.test(t)) {
      const s = i.text ?? i.prompt ?? i.clip_l ?? i.t5xxl;
      if (typeof s === "string") texts.push(s);
    }
    if (/Sampler/i.test(t)) {
      out.seed ??= int(i.seed ?? i.noise_seed);
      out.steps ??= int(i.steps);
      out.guidance ??= int(i.cfg);
    }
    if (t === "RandomNoise") out.seed ??= int(i.noise_seed);
    if (t === "BasicScheduler" || /Scheduler/.test(t)) out.steps ??= int(i.steps);
    if (t === "FluxGuidance") out.guidance = int(i.guidance) ?? out.guidance;
    if (/EmptyLatent|EmptyFlux|EmptySD3/i.test(t) || t === "ModelSamplingFlux") {
      out.width ??= int(i.width);
      out.height ??= int(i.height);
    }
    if (/CheckpointLoader|UNETLoader/i.test(t)) {
      const m = i.ckpt_name ?? i.unet_name;
      if (typeof m === "string") out.model ??= m;
    }
  }
  out.prompt = texts[0] ?? "";
  if (texts.length > 1 && texts[1]) out.negativePrompt = texts[1];
  return out;
}

/** The settings stored in a PNG, or null if it carries none of the known conventions. */
export async function settingsFromPng(buf: ArrayBuffer): Promise<LoadedSettings | null> {
  const text = await readPngText(buf);
  if (text.flux2) { const s = fromFlux2(text.flux2); if (s) return s; }
  if (text.parameters) return fromA1111(text.parameters);
  if (text.prompt) { const s = fromComfy(text.prompt); if (s) return s; }
  return null;
}
