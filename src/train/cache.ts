// The latent and text-embedding cache of a training run.
//
// Training never needs the VAE or the text encoder after the data is encoded
// once: every sample's latents (VAE mode → 2×2 patchify → latent batch-norm, as
// the klein script's `cache_latents` path and FLUX.2's pipeline do) and every
// distinct caption's prompt embeddings are computed here, written to
// RUN_DIR/cache/<key>.safetensors, and both models are released before the
// transformer is opened. The key hashes everything the tensors depend on (the
// model's VAE and text-encoder files, the images' paths, sizes and times, the
// buckets, the captions, the text length and its padding), so a changed image or caption
// computes a new cache and an unchanged run reuses it.
//
// Text padding "max" (FLUX.2's rule) pads every caption to the maximum length; "bucket" pads
// each to its own length bucket (32/48/64/…, src/text/length.ts), as the pipeline then pads the
// prompts of a model trained so, and the caption-dropout embedding is kept once per bucket.

import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { Backend } from "../backend/backend.js";
import { readAll, writeSafetensors, type TensorToWrite } from "../io/safetensors.js";
import { VARIANT_CARDS } from "../pipeline/variants.js";
import { Flux2Vae } from "../models/vae.js";
import type { Checkpoint } from "../pipeline/checkpoint.js";
import { toSignedUnit } from "../pipeline/conditioning.js";
import { bnNormalize, patchify } from "../pipeline/latents.js";
import { tensor } from "../util/tensor.js";
import { captionIdentity, groupIntoBatches, loadBucketed, type DataImage, type Sample } from "./data.js";
import { loadPipeline } from "../loaders/pretrained.js";
import type { TextPadding } from "../text/length.js";
import { lengthBucket } from "../text/length.js";
import { PromptTokenizer } from "../text/tokenizer.js";

export interface EncodedData {
  /** Per sample: (1, C, h, w) normalized latents. */
  latents: Float32Array[];
  latentShapes: [number, number, number][];
  /** Per distinct caption: (1, L, J) prompt embeddings, L its padded length; with "max" padding, "" is the caption-dropout embedding. */
  embeds: Map<string, Float32Array>;
  /** Per distinct caption: its padded length L (the maximum length with "max" padding). */
  embedLengths: Map<string, number>;
  /** With "bucket" padding: the caption-dropout embedding (1, L, J) per padded length in use. */
  emptyByLength: Map<number, Float32Array>;
  /** J: the prompt embeddings' features. */
  embedDim: number;
  file: string;
  reused: boolean;
}

export interface CacheOptions {
  runDir: string;
  maxSequenceLength: number;
  /** How captions are padded: to maxSequenceLength, or each to its length bucket (default "max"). */
  textPadding?: TextPadding;
  /** Also encode the empty caption (caption dropout). */
  withEmpty: boolean;
  /**
   * Captions and images encoded per encoder run: the run's batch size, which the memory plan
   * already counts for the VAE (src/train/memory.ts) and which its training graphs must fit anyway.
   */
  batchSize: number;
  backend: Backend;
  log: (s: string) => void;
}

function fileStamp(p: string): string {
  if (!fs.existsSync(p)) return `${p}:missing`;
  const st = fs.statSync(p);
  if (st.isDirectory()) return fs.readdirSync(p).sort().map((n) => fileStamp(path.join(p, n))).join("|");
  return `${path.resolve(p)}:${st.size}:${st.mtimeMs}`;
}

export function cacheKey(ck: Checkpoint, images: DataImage[], samples: Sample[], o: { maxSequenceLength: number; withEmpty: boolean; textPadding?: TextPadding }): string {
  const h = crypto.createHash("sha256");
  h.update(JSON.stringify({
    version: 1, vae: fileStamp(ck.vae.weights), te: fileStamp(ck.textEncoder.weights), tok: ck.tokenizer,
    L: o.maxSequenceLength, empty: o.withEmpty,
    ...(o.textPadding === "bucket" ? { padding: "bucket" } : {}), // absent for "max": older caches stay valid
    images: images.map((i) => [fileStamp(i.file), captionIdentity(i)]),
    samples: samples.map((s) => [s.image, s.bucket.width, s.bucket.height]),
  }));
  return h.digest("hex").slice(0, 16);
}

/** Encode (or reuse) every sample's latents and every caption's embeddings; the encoders are released on return. */
export async function encodeData(ck: Checkpoint, images: DataImage[], samples: Sample[], o: CacheOptions): Promise<EncodedData> {
  const key = cacheKey(ck, images, samples, o);
  const file = path.join(o.runDir, "cache", `${key}.safetensors`);
  const bucketed = o.textPadding === "bucket";
  const captions = [...new Set(samples.flatMap((s) => images[s.image].captions))];
  if (o.withEmpty && !bucketed && !captions.includes("")) captions.push("");
  if (fs.existsSync(file)) {
    try {
      const got = readCache(file, samples.length, captions, o.maxSequenceLength);
      o.log(`reusing the latent and text cache ${file}`);
      return { ...got, file, reused: true };
    } catch (e) {
      o.log(`warning: ignoring the cache ${file} (${(e as Error).message}); encoding again`);
    }
  }

  // Text first (the largest encoder), released before the VAE is loaded.
  o.log(`encoding ${captions.length} caption(s) with the text encoder (once; cached in ${path.dirname(file)})`);
  const pipe = loadPipeline(ck.source, { backend: o.backend, keepLoaded: true });
  const layers = [...VARIANT_CARDS[ck.variant].textLayers];
  const embeds = new Map<string, Float32Array>();
  const embedLengths = new Map<string, number>();
  const emptyByLength = new Map<number, Float32Array>();
  let embedDim = 0;
  try {
    // Each caption's padded length; captions are encoded in groups of one length.
    const byLength = new Map<number, string[]>();
    const tokenizer = bucketed ? await PromptTokenizer.load(ck.tokenizer) : null;
    for (const c of captions) {
      const L = tokenizer ? lengthBucket(Math.min(tokenizer.tokenCount(c), o.maxSequenceLength), o.maxSequenceLength) : o.maxSequenceLength;
      embedLengths.set(c, L);
      let group = byLength.get(L);
      if (!group) byLength.set(L, (group = []));
      group.push(c);
    }
    // Batched: one run per caption left most of a small encoder's time in per-run cost (flux2-mini's
    // 9,833 captions on two threads: 73 s one by one, 47 s 16 at a time). Every prompt of a run is
    // padded to exactly its group's length, so a caption's embeddings do not depend on its batch-mates.
    const per = Math.max(1, o.batchSize);
    for (const [L, group] of byLength) {
      for (let start = 0; start < group.length; start += per) {
        const chunk = group.slice(start, start + per);
        const e = await pipe.encodePrompts(chunk, L, layers);
        const size = e.shape[1] * e.shape[2];
        chunk.forEach((c, b) => embeds.set(c, e.data.slice(b * size, (b + 1) * size)));
        embedDim = e.shape[2];
      }
      if (bucketed && o.withEmpty) emptyByLength.set(L, (await pipe.encodePrompts([""], L, layers)).data.slice());
    }
  } finally {
    await pipe.release();
  }

  o.log(`encoding ${samples.length} image(s) with the VAE`);
  const vae = await Flux2Vae.fromFiles(o.backend, ck.vae.weights, requireConfig(ck.vae.config), ck.vae.format);
  const latents: Float32Array[] = new Array(samples.length);
  const latentShapes: [number, number, number][] = new Array(samples.length);
  try {
    const { mean, std } = vae.bnStats();
    // Batched by bucket (one image size per run), for the same reason as the captions.
    const inOrder = samples.map((_, i) => i);
    for (const group of groupIntoBatches(inOrder, samples, Math.max(1, o.batchSize))) {
      const { width, height } = samples[group[0]].bucket;
      const plane = width * height;
      const pixels = new Float32Array(group.length * 3 * plane);
      // Decoded at once: sharp works on libuv's thread pool, so the files of a batch load in parallel.
      const rgbs = await Promise.all(group.map((i) => loadBucketed(images[samples[i].image].file, samples[i].bucket)));
      rgbs.forEach((rgb, b) => pixels.set(toSignedUnit({ rgb, width, height }).data as Float32Array, b * 3 * plane));
      const enc = await vae.encode(tensor(pixels, [group.length, 3, height, width]));
      const x0 = bnNormalize(patchify(tensor(enc.mean.data as Float32Array, enc.mean.shape)), mean, std);
      const [, c, h, w] = x0.shape;
      group.forEach((i, b) => {
        latents[i] = x0.data.slice(b * c * h * w, (b + 1) * c * h * w);
        latentShapes[i] = [c, h, w];
      });
    }
  } finally {
    await vae.release();
  }

  const tensors: Record<string, TensorToWrite> = {};
  latents.forEach((l, i) => (tensors[`latent.${i}`] = { dtype: "F32", shape: [1, ...latentShapes[i]], data: l }));
  captions.forEach((c, j) => (tensors[`embed.${j}`] = { dtype: "F32", shape: [1, embedLengths.get(c)!, embedDim], data: embeds.get(c)! }));
  for (const [L, e] of emptyByLength) tensors[`empty.${L}`] = { dtype: "F32", shape: [1, L, embedDim], data: e };
  writeSafetensors(file, tensors, { flux2_train_cache: JSON.stringify({ captions }) });
  return { latents, latentShapes, embeds, embedLengths, emptyByLength, embedDim, file, reused: false };
}

function readCache(file: string, nSamples: number, captions: string[], maxLength: number) {
  const all = readAll(file);
  const latents: Float32Array[] = [];
  const latentShapes: [number, number, number][] = [];
  for (let i = 0; i < nSamples; i++) {
    const t = all.get(`latent.${i}`);
    if (!t) throw new Error(`it lacks latent.${i}`);
    latents.push(t.data as Float32Array);
    latentShapes.push([t.shape[1], t.shape[2], t.shape[3]]);
  }
  const embeds = new Map<string, Float32Array>();
  const embedLengths = new Map<string, number>();
  let embedDim = 0;
  captions.forEach((c, j) => {
    const t = all.get(`embed.${j}`);
    if (!t) throw new Error(`it lacks embed.${j}`);
    if (t.shape[1] > maxLength) throw new Error(`embed.${j} has ${t.shape[1]} tokens, over the maximum ${maxLength}`);
    embeds.set(c, t.data as Float32Array);
    embedLengths.set(c, t.shape[1]);
    embedDim = t.shape[2];
  });
  const emptyByLength = new Map<number, Float32Array>();
  for (const [name, t] of all) {
    const m = /^empty\.(\d+)$/.exec(name);
    if (m) emptyByLength.set(Number(m[1]), t.data as Float32Array);
  }
  return { latents, latentShapes, embeds, embedLengths, emptyByLength, embedDim };
}

function requireConfig(p: string | null): string {
  if (!p) throw new Error("no config.json for the VAE: pass the checkpoint folder (or --vae with its folder)");
  return p;
}
