// The engine's only door to Node's `url` module (see ./README.md): the layers under the
// pipeline import this file, never `node:url`, so the browser bundle can put
// ./browser/url.ts in its place (vite alias in browser.vite.config.ts).
export * from "node:url";
