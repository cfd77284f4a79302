// Training data: a folder of images with same-name .txt captions (the
// kohya / ai-toolkit convention), aspect-ratio buckets, and the order in which
// a run visits them.
//
// Layout:
//   DATA/photo1.png + DATA/photo1.txt          repeat 1
//   DATA/10_mychar/a.jpg + a.txt                kohya folder name: repeated 10 times per epoch
// An image without a .txt gets its folder's name (after the `N_` count) as the
// caption, or an empty one at the top level (kohya's class-token fallback).
// With a trigger word, `[trigger]` in a caption is replaced by it, and a
// caption that does not contain it gets `trigger, ` in front (ai-toolkit).
//
// Several captions per image (`multiCaption`, kohya's --enable_wildcard): each
// non-empty line of the .txt is one caption, and every visit of the image
// picks one of them with a generator seeded by (seed, step, micro-batch), so a
// resumed run picks what an uninterrupted one would. Without it the whole file
// is one caption, line breaks included (a pretty-printed JSON prompt stays
// whole).
//
// Buckets (ai-toolkit): for each training resolution R (512, 768, 1024 …) an
// image keeps its aspect ratio and is scaled to about R² pixels (never up),
// then both sides are floored to multiples of 16 and the image is resized to
// cover that bucket and centre-cropped. Several resolutions give one sample
// per image per resolution.
//
// Order: an epoch is every sample `repeats` times; the samples are shuffled
// by a generator seeded by (seed, epoch), grouped into batches within each
// bucket (every batch has one shape), and the batches shuffled again. The
// order is a pure function of (seed, epoch), so a resumed run sees the same
// batches as an uninterrupted one.

import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { decodeImage } from "../pipeline/image.js";
import { Xoshiro128 } from "../util/random.js";
import { streamSeed } from "./schedule.js";

export const IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".avif", ".bmp"];
/** Every bucket side is a multiple of this (FLUX.2: 2 × the VAE's 8). */
export const BUCKET_MULTIPLE = 16;
/** Smallest bucket side accepted. */
export const MIN_BUCKET_SIDE = 64;

export class DataError extends Error {}

export interface DataImage {
  file: string;
  /** The caption (the first of `captions`). */
  caption: string;
  /** Every caption of the image: one, or each line of its .txt with multiCaption. */
  captions: string[];
  repeats: number;
  width: number;
  height: number;
}

export interface Dataset {
  dir: string;
  images: DataImage[];
  /** Files skipped (unreadable or corrupt), with the reason. */
  skipped: { file: string; reason: string }[];
  /** Images that had no .txt (their caption came from the folder name). */
  uncaptioned: number;
}

/** kohya's repeat-count folder name: `10_name` → { repeats 10, name "name" }. */
export function parseFolderName(name: string): { repeats: number; name: string } | null {
  const m = name.match(/^(\d+)_(.*)$/);
  if (!m) return null;
  const repeats = Number(m[1]);
  if (!Number.isSafeInteger(repeats) || repeats < 1) return null;
  return { repeats, name: m[2].replace(/_/g, " ").trim() };
}

/** Put the trigger word into a caption the ai-toolkit way. */
export function applyTrigger(caption: string, trigger: string | undefined): string {
  if (!trigger) return caption.replace(/\[trigger\]/g, "").trim();
  if (caption.includes("[trigger]")) return caption.replace(/\[trigger\]/g, trigger);
  if (caption.includes(trigger)) return caption;
  return caption ? `${trigger}, ${caption}` : trigger;
}

/** Read the image folder: captions, repeat counts, sizes; corrupt images are skipped with a warning. */
export async function scanDataset(dir: string, opts: { trigger?: string; multiCaption?: boolean; warn?: (s: string) => void } = {}): Promise<Dataset> {
  const warn = opts.warn ?? ((s: string) => console.error(s));
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    throw new DataError(`--data ${dir}: no such folder; give a folder of images with same-name .txt captions`);
  }
  const entries: { file: string; repeats: number; folderCaption: string }[] = [];
  const addFolder = (folder: string, repeats: number, folderCaption: string, depth: number) => {
    for (const name of fs.readdirSync(folder).sort()) {
      const full = path.join(folder, name);
      const st = fs.statSync(full);
      if (st.isDirectory()) {
        if (depth > 0) continue; // kohya layout: one level of `N_name` folders
        const parsed = parseFolderName(name);
        addFolder(full, parsed?.repeats ?? 1, parsed?.name ?? "", depth + 1);
      } else if (IMAGE_EXTENSIONS.includes(path.extname(name).toLowerCase())) {
        entries.push({ file: full, repeats, folderCaption });
      }
    }
  };
  addFolder(dir, 1, "", 0);

  const images: DataImage[] = [];
  const skipped: Dataset["skipped"] = [];
  let uncaptioned = 0;
  for (const e of entries) {
    let size: { width: number; height: number };
    try {
      const img = await decodeImage(e.file);
      size = { width: img.width, height: img.height };
    } catch (err) {
      const reason = (err as Error).message.replace(`${e.file}: `, "");
      skipped.push({ file: e.file, reason });
      warn(`warning: skipping ${e.file}: ${reason}`);
      continue;
    }
    const txt = e.file.slice(0, -path.extname(e.file).length) + ".txt";
    let caption: string;
    if (fs.existsSync(txt)) {
      caption = fs.readFileSync(txt, "utf8").trim();
    } else {
      caption = e.folderCaption;
      uncaptioned++;
    }
    const lines = opts.multiCaption ? caption.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "") : [caption];
    const captions = (lines.length ? lines : [""]).map((c) => applyTrigger(c, opts.trigger));
    images.push({ file: e.file, caption: captions[0], captions, repeats: e.repeats, ...size });
  }
  if (images.length === 0) {
    const what = entries.length ? `none of its ${entries.length} image(s) could be read` : `it has no images (${IMAGE_EXTENSIONS.join(", ")})`;
    throw new DataError(`--data ${dir}: ${what}; put training images there, each with a same-name .txt caption (photo.png + photo.txt), or sub-folders named like 10_name to repeat them`);
  }
  return { dir, images, skipped, uncaptioned };
}

export interface Bucket {
  width: number;
  height: number;
}

/** The bucket of a w×h image at training resolution R (area about R², never upscaled, sides multiples of 16). */
export function bucketFor(width: number, height: number, resolution: number): Bucket {
  const scale = Math.min(1, Math.sqrt((resolution * resolution) / (width * height)));
  const m = BUCKET_MULTIPLE;
  return { width: Math.floor((width * scale) / m) * m, height: Math.floor((height * scale) / m) * m };
}

export interface Sample {
  /** Index into Dataset.images. */
  image: number;
  resolution: number;
  bucket: Bucket;
}

/** One sample per image and resolution; images too small for a bucket are refused, naming them. */
export function makeSamples(ds: Dataset, resolutions: number[]): Sample[] {
  const samples: Sample[] = [];
  const tooSmall: string[] = [];
  for (const [i, img] of ds.images.entries()) {
    for (const r of resolutions) {
      const bucket = bucketFor(img.width, img.height, r);
      if (bucket.width < MIN_BUCKET_SIDE || bucket.height < MIN_BUCKET_SIDE) {
        tooSmall.push(`${img.file} (${img.width}×${img.height} → ${bucket.width}×${bucket.height} at ${r})`);
      } else {
        samples.push({ image: i, resolution: r, bucket });
      }
    }
  }
  if (tooSmall.length) {
    const list = tooSmall.slice(0, 5).join(", ") + (tooSmall.length > 5 ? `, and ${tooSmall.length - 5} more` : "");
    throw new DataError(
      `${tooSmall.length} image(s) are smaller than ${MIN_BUCKET_SIDE} px on a side after bucketing: ${list}. ` +
      `Use images at least ${MIN_BUCKET_SIDE} px on each side (after scaling to the training resolution), a larger --resolution, or remove them`,
    );
  }
  return samples;
}

/** The image's pixels for its bucket: resized to cover it (Lanczos) and centre-cropped; packed RGB (H, W, 3). */
export async function loadBucketed(file: string, bucket: Bucket): Promise<Uint8Array> {
  const img = await decodeImage(file);
  const { data } = await sharp(img.rgb, { raw: { width: img.width, height: img.height, channels: 3 } })
    .resize(bucket.width, bucket.height, { fit: "cover", position: "centre", kernel: "lanczos3" })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return new Uint8Array(data.buffer, data.byteOffset, data.length);
}

/** A micro-batch: sample indices that share one bucket. */
export type Batch = number[];

/** What a batch must share: its bucket (one image size per graph). */
export type BatchKey = (sample: Sample, index: number) => string;
const bucketKey: BatchKey = (s) => `${s.bucket.width}x${s.bucket.height}`;

/**
 * The batches of one epoch (see the file header), a pure function of (seed, epoch). Samples are
 * batched with others of the same `key` (default: the bucket).
 */
export function epochBatches(samples: Sample[], images: DataImage[], batchSize: number, seed: number, epoch: number, key: BatchKey = bucketKey): Batch[] {
  const rng = new Xoshiro128(streamSeed(seed, 1, epoch));
  const order: number[] = [];
  samples.forEach((s, i) => { for (let r = 0; r < images[s.image].repeats; r++) order.push(i); });
  shuffle(order, rng);
  const batches = groupIntoBatches(order, samples, batchSize, key);
  shuffle(batches, rng);
  return batches;
}

/**
 * The sample indices of `order` grouped by `key` (default: the bucket), groups in first-seen
 * order and each in `order`'s order, cut into batches of at most batchSize.
 */
export function groupIntoBatches(order: number[], samples: Sample[], batchSize: number, key: BatchKey = bucketKey): Batch[] {
  const byKey = new Map<string, number[]>();
  for (const i of order) {
    const k = key(samples[i], i);
    let list = byKey.get(k);
    if (!list) byKey.set(k, (list = []));
    list.push(i);
  }
  const batches: Batch[] = [];
  for (const list of byKey.values()) for (let k = 0; k < list.length; k += batchSize) batches.push(list.slice(k, k + batchSize));
  return batches;
}

/** Number of micro-batches in every epoch (the same each epoch). */
export function batchesPerEpoch(samples: Sample[], images: DataImage[], batchSize: number, key: BatchKey = bucketKey): number {
  const counts = new Map<string, number>();
  samples.forEach((s, i) => {
    const k = key(s, i);
    counts.set(k, (counts.get(k) ?? 0) + images[s.image].repeats);
  });
  let n = 0;
  for (const c of counts.values()) n += Math.ceil(c / batchSize);
  return n;
}

/**
 * Which micro-batch a training step reads: micro-batch m = step × gradAccum + micro is batch
 * m mod E of epoch floor(m / E), E the batches per epoch. The current epoch's batches are kept,
 * so each epoch is shuffled once. Every task (flow matching, VAE, text encoder) picks its
 * batches through this, so a resumed run reads the same batches whatever it trains.
 */
export class EpochBatcher {
  readonly perEpoch: number;
  private current: { epoch: number; batches: Batch[] } | null = null;

  constructor(
    private readonly samples: Sample[],
    private readonly images: DataImage[],
    private readonly o: { batchSize: number; gradAccum: number; seed: number },
    private readonly key: BatchKey = bucketKey,
  ) {
    this.perEpoch = batchesPerEpoch(samples, images, o.batchSize, key);
  }

  batch(step: number, micro: number): Batch {
    const m = step * this.o.gradAccum + micro;
    const epoch = Math.floor(m / this.perEpoch);
    if (this.current?.epoch !== epoch) this.current = { epoch, batches: epochBatches(this.samples, this.images, this.o.batchSize, this.o.seed, epoch, this.key) };
    return this.current.batches[m % this.perEpoch];
  }
}

/**
 * What a cache key or a run's data fingerprint hashes of an image's captions: a single caption as
 * the string it was before multi-caption data existed (so older caches and runs stay valid), else
 * the list.
 */
export function captionIdentity(img: DataImage): string | string[] {
  return img.captions.length === 1 ? img.caption : img.captions;
}

// Stream id for streamSeed(seed, CAPTION, step, micro): the other tasks' streams are 1–4.
const CAPTION = 5;

/**
 * The captions of micro-batch j of step k, one per sample: an image's only caption, or one of its
 * several picked by a generator seeded by (seed, k, j) (see the file header).
 */
export function pickCaptions(images: DataImage[], samples: Sample[], batch: Batch, seed: number, step: number, micro: number): string[] {
  const rng = new Xoshiro128(streamSeed(seed, CAPTION, step, micro));
  return batch.map((s) => {
    const c = images[samples[s].image].captions;
    return c.length === 1 ? c[0] : c[Math.floor(rng.nextDouble() * c.length)];
  });
}

/** Fisher–Yates with the run's generator. */
function shuffle<T>(a: T[], rng: Xoshiro128): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng.nextDouble() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
}
