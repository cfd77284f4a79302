// The engine's only door to Node's `path` module (see ./README.md): the layers under the
// pipeline import this file, never `node:path`, so the browser bundle can put
// ./browser/path.ts in its place (vite alias in browser.vite.config.ts).
import nodePath from "node:path";

export const { join, dirname, basename, resolve, extname, relative, isAbsolute, normalize, sep } = nodePath;
