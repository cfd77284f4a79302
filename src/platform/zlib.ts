// The engine's only door to Node's `zlib` module (see ./README.md): the layers under the
// pipeline import this file, never `node:zlib`, so the browser bundle can put
// ./browser/zlib.ts in its place (vite alias in browser.vite.config.ts).
export * from "node:zlib";
