// `node:zlib` for the browser bundle. PNG text chunks need CRC-32 (src/pipeline/image.ts has
// its own table fallback when `crc32` is absent, so none is exported here); inflating zTXt
// chunks is not offered in the browser.
export function inflateSync(_data: Uint8Array): never {
  throw new Error("compressed PNG text (zTXt) cannot be read in the browser build; read the file with the Node package");
}

/** Absent on purpose: src/pipeline/image.ts computes CRC-32 with its own table when zlib has none. */
export const crc32: undefined = undefined;
