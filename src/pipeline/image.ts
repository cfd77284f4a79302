// Image conversion at the pipeline edges: decoder output → uint8 RGB (docs/FLUX2-spec.md §3.6),
// encoding with generation parameters, and decoding user images with sharp.

import * as fs from "../platform/fs.js";
import * as zlib from "../platform/zlib.js";
import sharp from "sharp";

const f = Math.fround;

// ---------------------------------------------------------------------------
// Decoder output → pixels

/** clamp(x/2 + 0.5, 0, 1) in float32, NCHW kept (the pipelines' output_type="pt" image). */
export function toUnitRange(decoded: Float32Array): Float32Array {
  // x/2 is exact in binary floating point, so only the +0.5 rounds.
  return Float32Array.from(decoded, (x) => Math.min(Math.max(f(x / 2 + 0.5), 0), 1));
}

/**
 * diffusers' postprocess to uint8: round_half_even(clamp(x/2 + 0.5, 0, 1)·255), the
 * product in float32 as NumPy computes it; NCHW (B, 3, H, W) → NHWC (B, H, W, 3).
 */
export function toUint8Diffusers(decoded: Float32Array, B: number, H: number, W: number): Uint8Array {
  const hw = H * W;
  if (decoded.length !== B * 3 * hw) throw new RangeError(`toUint8Diffusers: ${decoded.length} values is not ${B}×3×${H}×${W}`);
  const unit = toUnitRange(decoded);
  const out = new Uint8Array(B * hw * 3);
  for (let b = 0; b < B; b++)
    for (let c = 0; c < 3; c++)
      for (let p = 0; p < hw; p++) out[(b * hw + p) * 3 + c] = roundHalfEven(f(unit[(b * 3 + c) * hw + p] * 255));
  return out;
}

function roundHalfEven(x: number): number {
  const r = Math.round(x); // rounds .5 up
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// ---------------------------------------------------------------------------
// Encoding

export type ImageFormat = "png" | "jpg" | "webp";

/** EXIF IFD0 tags and an XMP packet to write (provenance: src/provenance/provenance.ts). */
export interface ImageTags {
  ifd0: Record<string, string>;
  xmp?: string;
}

/**
 * Encode packed RGB (H, W, 3) with sharp. `parameters` (the A1111 / ComfyUI
 * "parameters" text) is stored, for PNG, as a tEXt chunk with keyword
 * "parameters" (iTXt, UTF-8, when the text is not Latin-1, as PIL's
 * PngInfo.add_text does); for JPEG / WebP as the EXIF UserComment, which libvips
 * writes as ASCII (non-ASCII characters are transliterated there). `tags` adds EXIF
 * IFD0 entries and XMP (PNG: eXIf and an XML:com.adobe.xmp text chunk). The output is
 * byte-identical for identical input: nothing time- or machine-dependent is written.
 */
export async function encodeImage(rgb: Uint8Array, W: number, H: number, format: ImageFormat, parameters?: string, tags?: ImageTags): Promise<Buffer> {
  if (rgb.length !== W * H * 3) throw new RangeError(`encodeImage: ${rgb.length} bytes is not ${W}×${H}×3`);
  let img = sharp(rgb, { raw: { width: W, height: H, channels: 3 } });
  if (tags?.xmp !== undefined) img = img.withXmp(tags.xmp);
  switch (format) {
    case "png": {
      if (tags) img = img.withExif({ IFD0: tags.ifd0 });
      const png = await img.png().toBuffer();
      return parameters === undefined ? png : insertPngText(png, "parameters", parameters);
    }
    case "jpg":
      img = img.jpeg({ quality: 95 });
      break;
    case "webp":
      img = img.webp({ quality: 95 });
      break;
    default:
      throw new RangeError(`unknown image format "${format as string}" (png, jpg or webp)`);
  }
  if (parameters !== undefined || tags) img = img.withExif({ ...(tags ? { IFD0: tags.ifd0 } : {}), ...(parameters !== undefined ? { IFD2: { UserComment: parameters } } : {}) });
  return img.toBuffer();
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * Insert a text chunk right after IHDR. sharp (libvips) has no API for writing
 * arbitrary PNG text chunks, so we splice one into its output; chunks are
 * self-contained (length, type, data, CRC), so nothing else changes.
 */
export function insertPngText(png: Buffer, keyword: string, text: string): Buffer {
  checkPng(png);
  if (!/^[\x20-\x7e\xa1-\xff]{1,79}$/.test(keyword) || / $|^ |  /.test(keyword)) {
    throw new RangeError(`invalid PNG text keyword "${keyword}"`);
  }
  const ihdrEnd = 8 + 12 + png.readUInt32BE(8);
  return Buffer.concat([png.subarray(0, ihdrEnd), textChunk(keyword, text), png.subarray(ihdrEnd)]);
}

function textChunk(keyword: string, text: string): Buffer {
  const key = Buffer.from(keyword, "latin1");
  // Latin-1 without NUL fits tEXt; anything else goes into an uncompressed iTXt (UTF-8).
  if (/^[^\0\u0100-\uffff]*$/.test(text)) return pngChunk("tEXt", Buffer.concat([key, Buffer.from([0]), Buffer.from(text, "latin1")]));
  // iTXt: keyword \0, compression flag 0, method 0, empty language \0, empty translated keyword \0, text.
  return pngChunk("iTXt", Buffer.concat([key, Buffer.from([0, 0, 0, 0, 0]), Buffer.from(text, "utf8")]));
}

/** One PNG chunk: length, type, data, CRC-32 of type + data. */
export function pngChunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "latin1");
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

// zlib.crc32 exists from Node 20.15 / 22.2 only; package.json allows any Node 20,
// so older runtimes fall back to the standard table-driven CRC-32 (same polynomial).
let crcTable: Uint32Array | undefined;
function crc32(data: Uint8Array): number {
  const native = (zlib as { crc32?: (d: Uint8Array) => number }).crc32;
  if (typeof native === "function") return native(data) >>> 0;
  crcTable ??= Uint32Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  let c = 0xffffffff;
  for (const byte of data) c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ---------------------------------------------------------------------------
// Reading PNG text back

/** Every tEXt, zTXt and iTXt entry of a PNG, keyword → text (later chunks win). */
export function readPngText(buf: Buffer): Record<string, string> {
  checkPng(buf);
  const out: Record<string, string> = {};
  for (let o = 8; o + 12 <= buf.length; ) {
    const len = buf.readUInt32BE(o);
    const type = buf.toString("latin1", o + 4, o + 8);
    const data = buf.subarray(o + 8, o + 8 + len);
    if (data.length !== len) throw new Error("PNG is truncated inside a chunk");
    const entry = parseTextChunk(type, data);
    if (entry) out[entry[0]] = entry[1];
    if (type === "IEND") break;
    o += 12 + len;
  }
  return out;
}

function parseTextChunk(type: string, data: Buffer): [string, string] | undefined {
  const nul = data.indexOf(0);
  if (nul < 0 || !["tEXt", "zTXt", "iTXt"].includes(type)) return undefined;
  const key = data.toString("latin1", 0, nul);
  if (type === "tEXt") return [key, data.toString("latin1", nul + 1)];
  if (type === "zTXt") return [key, zlib.inflateSync(data.subarray(nul + 2)).toString("latin1")];
  const compressed = data[nul + 1] === 1;
  const langEnd = data.indexOf(0, nul + 3);
  const transEnd = data.indexOf(0, langEnd + 1);
  if (langEnd < 0 || transEnd < 0) return undefined;
  const body = data.subarray(transEnd + 1);
  return [key, (compressed ? zlib.inflateSync(body) : body).toString("utf8")];
}

function checkPng(buf: Buffer): void {
  if (buf.length < 33 || !buf.subarray(0, 8).equals(PNG_SIGNATURE) || buf.toString("latin1", 12, 16) !== "IHDR") {
    throw new Error("not a PNG file");
  }
}

// ---------------------------------------------------------------------------
// Decoding user images

export interface DecodedImage {
  rgb: Uint8Array;
  width: number;
  height: number;
}

export interface DecodeOptions {
  /** Refuse images with more pixels than this (default 8192²). */
  maxPixels?: number;
}

export const DEFAULT_MAX_PIXELS = 8192 * 8192;

/**
 * Decode an image file or buffer to packed 8-bit RGB (H, W, 3). Like diffusers'
 * load_image: EXIF orientation applied, then PIL's convert("RGB"), which drops
 * alpha without compositing on any background; grey and CMYK are converted to
 * sRGB, as is any embedded ICC profile (sharp's default; PIL would ignore it).
 * Animated / multi-page images are refused, as are images over maxPixels.
 */
export async function decodeImage(input: string | Buffer, opts: DecodeOptions = {}): Promise<DecodedImage> {
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  const name = typeof input === "string" ? input : "image buffer";
  if (typeof input === "string" && !fs.existsSync(input)) throw new Error(`${name}: no such file`);
  const meta = await sharp(input, { limitInputPixels: false }).metadata().catch((e: Error) => {
    throw new Error(`${name}: cannot read image (${e.message})`);
  });
  const { width, height } = meta;
  if (!width || !height) throw new Error(`${name}: cannot read image (no dimensions)`);
  if (width * height > maxPixels) {
    throw new Error(`${name}: image is ${width}×${height} = ${width * height} pixels, more than the limit of ${maxPixels}`);
  }
  if ((meta.pages ?? 1) > 1) throw new Error(`${name}: animated or multi-page images are not supported (${meta.pages} frames)`);
  try {
    const { data, info } = await sharp(input, { limitInputPixels: maxPixels, autoOrient: true })
      .toColourspace("srgb")
      .removeAlpha()
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels, expected 3`);
    return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
  } catch (e) {
    throw new Error(`${name}: cannot decode image (${(e as Error).message})`);
  }
}
