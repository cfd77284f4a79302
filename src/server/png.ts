// A synchronous PNG encoder for the small per-step previews. It runs inside
// the pipeline's onStep callback, where an async encoder (sharp) would only
// get to run after the whole generation: the denoising loop keeps the worker
// thread's event loop busy.

import * as zlib from "node:zlib";
import { pngChunk as chunk } from "../pipeline/image.js";

/** Packed 8-bit RGB (H, W, 3) → PNG bytes. */
export function encodePngSync(rgb: Uint8Array, width: number, height: number): Buffer {
  if (rgb.length !== width * height * 3) throw new RangeError(`encodePngSync: ${rgb.length} bytes is not ${width}×${height}×3`);
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit, truecolour, deflate, no filter method, no interlace
  const raw = Buffer.alloc(height * (width * 3 + 1));
  for (let y = 0; y < height; y++) raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), y * (width * 3 + 1) + 1);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr), chunk("IDAT", zlib.deflateSync(raw)), chunk("IEND", new Uint8Array(0)),
  ]);
}

export function pngDataUrl(rgb: Uint8Array, width: number, height: number): string {
  return `data:image/png;base64,${encodePngSync(rgb, width, height).toString("base64")}`;
}
