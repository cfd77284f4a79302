// Vite library build of the browser bundle: `vite build --config browser.vite.config.ts`
// (part of `npm run build`) writes dist/browser/flux2.js (ESM) and ONNX Runtime Web's .wasm.
//
// The engine's Node doors are swapped for their browser twins here and nowhere else:
// src/platform/X.ts → src/platform/browser/X.ts, src/backend/ort.ts (onnxruntime-node) →
// src/browser/node_backend_stand_in.ts (onnxruntime-web), sharp → src/browser/sharp_stand_in.ts.
import * as fs from "node:fs";
import * as path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { defineConfig, type Plugin } from "vite";

const src = (p: string) => fileURLToPath(new URL(`./src/${p}`, import.meta.url));

const OUT = fileURLToPath(new URL("./dist/browser", import.meta.url));
const WASM = "ort-wasm-simd-threaded.jsep.wasm";

/**
 * ONNX Runtime Web finds its 28 MB .wasm with `new URL("<name>.wasm", import.meta.url)`. Vite's
 * library mode would inline that as base64 into flux2.js; instead the URL is hidden from Vite's
 * asset scan and the .wasm is copied next to flux2.js, where the same expression finds it.
 */
function ortWasmBesideBundle(): Plugin {
  return {
    name: "flux2-ort-wasm-beside-bundle",
    enforce: "pre",
    transform(code, id) {
      if (!id.includes("onnxruntime-web") || !code.includes(WASM)) return null;
      return { code: code.split(`new URL("${WASM}",import.meta.url)`).join(`new URL(${JSON.stringify(WASM)}.toString(),import.meta.url)`), map: null };
    },
    writeBundle() {
      const ortDist = path.dirname(createRequire(import.meta.url).resolve("onnxruntime-web/" + WASM));
      fs.copyFileSync(path.join(ortDist, WASM), path.join(OUT, WASM));
    },
  };
}

export default defineConfig({
  plugins: [ortWasmBesideBundle()],
  resolve: {
    alias: [
      { find: /^\.\.\/platform\/(fs|fs_promises|path|os|zlib|url|crypto)\.js$/, replacement: src("platform/browser/$1.ts") },
      { find: /^\.\.\/backend\/ort\.js$/, replacement: src("browser/node_backend_stand_in.ts") },
      { find: /^sharp$/, replacement: src("browser/sharp_stand_in.ts") },
    ],
  },
  build: {
    outDir: OUT,
    emptyOutDir: true,
    sourcemap: true,
    target: "es2022",
    minify: false,
    lib: { entry: src("browser/index.ts"), formats: ["es"], fileName: () => "flux2.js" },
  },
});
