// `node:crypto` for the browser bundle. The engine hashes only to name on-disk caches of
// quantized weights (src/quant/quantize.ts); browsers have no synchronous hash, so that path
// is refused with what to do instead.
export function createHash(_algorithm: string): never {
  throw new Error("quantizing a model at load needs Node; quantize it first (`flux2 quantize`) and load the quantized folder in the browser");
}
