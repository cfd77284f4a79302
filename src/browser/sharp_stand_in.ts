// Stands in for `sharp` (native libvips) in the browser bundle. The browser encodes PNGs with
// its own codec (./png.ts: encodePng) and decodes images with createImageBitmap (decodeImage).
export default function sharp(): never {
  throw new Error("sharp is not available in the browser build: use encodePng / decodeImage from flux2's browser bundle");
}
