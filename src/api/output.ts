// The one writer of results: each generated image encoded (PNG, JPEG or WebP)
// with its provenance marks and the record of what was done (A1111
// "parameters" text, the "flux2" JSON chunk). The CLI writes the bytes to files,
// the server stores them; both get them from here.

import type { GenerateResult } from "../pipeline/flux2.js";
import type { ImageFormat } from "../pipeline/image.js";
import type { ImageRecord } from "../pipeline/metadata.js";
import { encodeGenerated } from "../provenance/provenance.js";
import type { GenerationRequest } from "./request.js";
import type { PreparedGeneration } from "./prepare.js";

export interface EncodedImage {
  bytes: Buffer;
  ext: ImageFormat;
  record: ImageRecord;
}

export interface OutputInfo {
  /** The model's name as recorded: the server's model id, the CLI's folder name. */
  model: string;
  variant: string;
  /** LoRAs in use, as recorded. */
  loras?: { name: string; strength: number }[];
  /** The user's prompt when the request's prompt is its rewrite. */
  upsampledFrom?: string;
  /** The file the initial noise came from (flux2 generate --initial-latents). */
  initialLatents?: string | null;
  /** Embed the invisible watermark (default on). */
  watermark?: boolean;
  /** Waits on an encode; the server stops waiting on cancel. */
  settle?: <T>(work: Promise<T>) => Promise<T>;
}

/** BFL's output_format names → our file formats. */
export function imageFormat(outputFormat: GenerationRequest["output_format"] | undefined): ImageFormat {
  return outputFormat === "jpeg" ? "jpg" : outputFormat === "webp" ? "webp" : "png";
}

/** The record of image `i` of a result. */
export function imageRecord(result: GenerateResult, i: number, r: Pick<GenerationRequest, "prompt" | "negative_prompt">, prepared: Pick<PreparedGeneration, "references" | "strength">,
                            info: OutputInfo): ImageRecord {
  const img = result.images[i];
  return {
    prompt: img.prompt ?? r.prompt, negativePrompt: r.negative_prompt ?? null, width: img.width, height: img.height,
    steps: result.steps, guidance: result.guidance, seed: img.seed, variant: info.variant, model: info.model,
    references: prepared.references?.length ? prepared.references : undefined, strength: prepared.strength,
    loras: info.loras?.length ? info.loras : undefined, upsampledFrom: info.upsampledFrom,
    ...(info.initialLatents !== undefined ? { initialLatents: info.initialLatents } : {}),
  };
}

/** Encode every image of a result, in order. */
export async function encodeOutputs(result: GenerateResult, format: ImageFormat, record: (i: number) => ImageRecord, info: Pick<OutputInfo, "watermark" | "settle">): Promise<EncodedImage[]> {
  const settle = info.settle ?? ((p) => p);
  const out: EncodedImage[] = [];
  for (const [i, img] of result.images.entries()) {
    const { bytes, record: r } = await settle(encodeGenerated(img.rgb, img.width, img.height, format, record(i), info.watermark !== false));
    out.push({ bytes, ext: format, record: r });
  }
  return out;
}
