// The engine's only door to Node's `crypto` module (see ./README.md): the layers under the
// pipeline import this file, never `node:crypto`, so the browser bundle can put
// ./browser/crypto.ts in its place (vite alias in browser.vite.config.ts).
export * from "node:crypto";
