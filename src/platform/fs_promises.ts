// The engine's only door to `node:fs/promises` (see ./README.md); the browser bundle
// swaps in ./browser/fs_promises.ts.
export * from "node:fs/promises";
