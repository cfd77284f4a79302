// Vite build for the studio: `vite build --config studio/vite.config.ts`
// writes a self-contained app to dist/studio/ (the server serves it at `/`).
// Everything is bundled: no CDN, no web fonts, no external requests.
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

const here = fileURLToPath(new URL(".", import.meta.url));

export default defineConfig({
  root: here,
  base: "./",
  plugins: [react()],
  build: {
    outDir: fileURLToPath(new URL("../dist/studio", import.meta.url)),
    emptyOutDir: true,
    sourcemap: true,
    // One small app: keep the asset names stable and inline nothing remote.
    assetsInlineLimit: 4096,
  },
  server: {
    // `npx vite --config studio/vite.config.ts` for UI work: API calls go to a
    // running `flux2 serve` (FLUX2_SERVER, default http://127.0.0.1:8080).
    proxy: { "/v1": process.env.FLUX2_SERVER ?? "http://127.0.0.1:8080", "/browser": process.env.FLUX2_SERVER ?? "http://127.0.0.1:8080" },
    // Cross-origin isolated like `flux2 serve` (src/server/static.ts ISOLATION_HEADERS): WASM threads in "Run in this browser".
    headers: { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "credentialless" },
  },
});
