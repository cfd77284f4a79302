// The engine's only door to Node's `os` module (see ./README.md): the layers under the
// pipeline import this file, never `node:os`, so the browser bundle can put
// ./browser/os.ts in its place (vite alias in browser.vite.config.ts).
export * from "node:os";
