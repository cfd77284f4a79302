// Generation parameters carried inside output images.
//
// The "parameters" text follows the A1111 convention that ComfyUI, Civitai and
// most image viewers read: the prompt, an optional "Negative prompt:" line,
// then one line of "Key: value" pairs. A second PNG chunk "flux2" holds the
// same record as JSON, for tools (the studio) that reload settings exactly.

export interface ImageRecord {
  prompt: string;
  negativePrompt: string | null;
  width: number;
  height: number;
  steps: number;
  guidance: number;
  seed: number | null;
  variant: string;
  model: string;
  initialLatents?: string | null;
  references?: { width: number; height: number; resizedFrom?: string }[];
  strength?: number;
  loras?: { name: string; strength: number }[];
  /** The invisible watermark: its name, "off", or why there is none (src/provenance/). */
  watermark?: string;
  /** The user's prompt when `prompt` is its rewrite by prompt upsampling (src/text/upsample.ts). */
  upsampledFrom?: string;
}

export const VERSION = "flux2.ts 0.1.0";

/** A1111-style "parameters" text. Commas inside values are avoided so parsers split cleanly. */
export function formatParameters(r: ImageRecord): string {
  const lines = [r.prompt];
  if (r.negativePrompt) lines.push(`Negative prompt: ${r.negativePrompt}`);
  const pairs: [string, string | number][] = [
    ["Steps", r.steps], ["Sampler", "Euler"], ["Schedule type", "FLUX.2 empirical mu"],
    ["CFG scale", r.guidance], ["Seed", r.seed ?? "initial latents"], ["Size", `${r.width}x${r.height}`],
    ["Model", r.model], ["Variant", r.variant],
  ];
  if (r.strength !== undefined) pairs.push(["Denoising strength", r.strength]);
  if (r.references?.length) pairs.push(["References", r.references.map((x) => `${x.width}x${x.height}${x.resizedFrom ? ` (from ${x.resizedFrom})` : ""}`).join(" ")]);
  // Quoted, as A1111 quotes values that contain commas.
  if (r.loras?.length) pairs.push(["LoRAs", `"${r.loras.map((l) => `${l.name}: ${l.strength}`).join(", ")}"`]);
  if (r.upsampledFrom !== undefined) pairs.push(["Upsampled from", JSON.stringify(r.upsampledFrom)]);
  if (r.watermark !== undefined) pairs.push(["Watermark", r.watermark.replace(/,/g, ";")]);
  pairs.push(["Version", VERSION]);
  lines.push(pairs.map(([k, v]) => `${k}: ${v}`).join(", "));
  return lines.join("\n");
}

/**
 * Parse A1111-style parameters back into key/value settings (for reloading an image's settings).
 * The studio has a browser copy (studio/src/png.ts); test/a1111_parity.test.ts keeps the two equal.
 */
export function parseParameters(text: string): { prompt: string; negativePrompt: string; settings: Record<string, string> } {
  // Windows tools write CRLF; a stray "\r" would end up in the last setting's value.
  const lines = text.replace(/\r\n/g, "\n").split("\n");
  const last = lines[lines.length - 1] ?? "";
  const settings: Record<string, string> = {};
  const hasSettings = /(^|, )Steps: /.test(last);
  if (hasSettings) {
    for (const m of last.matchAll(/\s*([\w ]+): ("(?:[^"\\]|\\.)*"|[^,]*)(?:,|$)/g)) settings[m[1].trim()] = m[2].trim();
    lines.pop();
  }
  const negAt = lines.findIndex((l) => l.startsWith("Negative prompt:"));
  const prompt = (negAt >= 0 ? lines.slice(0, negAt) : lines).join("\n");
  const negativePrompt = negAt >= 0 ? lines.slice(negAt).join("\n").slice("Negative prompt:".length).trim() : "";
  return { prompt, negativePrompt, settings };
}
