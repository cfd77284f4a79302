// The engine's only door to Node's `fs` module (see ./README.md): the layers under the
// pipeline import this file, never `node:fs`, so the browser bundle can put
// ./browser/fs.ts in its place (vite alias in browser.vite.config.ts).
export * from "node:fs";
