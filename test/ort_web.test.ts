// The onnxruntime-web backend (src/backend/ort_web.ts) run in Node: the tiny klein checkpoint's
// pixels equal onnxruntime-node's, with weights inline and with every weight passed as external
// data (the path big models take: the safetensors bytes handed to ORT by reference).

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { loadPipeline } from "../src/loaders/pretrained.js";
import { OrtWebBackend } from "../src/backend/ort_web.js";
import type { Backend } from "../src/backend/backend.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const CHECKPOINT = path.join(ROOT, "testdata/golden/checkpoints/klein_distilled");
const OPTS = { prompt: "a lighthouse at dusk", width: 64, height: 48, steps: 2, seed: 3 };

function maxDiff(a: Uint8Array, b: Uint8Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe("onnxruntime-web backend", () => {
  it("makes the same pixels as onnxruntime-node, inline and with external data", async () => {
    const native = (await loadPipeline(CHECKPOINT).generate(OPTS)).images[0].rgb;
    assert.ok(new Set(native).size > 50, "the image has detail");
    const web = new OrtWebBackend();
    const sessions: boolean[] = [];
    const external: Backend = {
      name: web.name, device: web.device,
      createSession: (g, o) => { sessions.push(true); return web.createSession(g, { ...o, external: true }); },
    };
    for (const backend of [web, external]) {
      const rgb = (await loadPipeline(CHECKPOINT, { backend }).generate(OPTS)).images[0].rgb;
      assert.ok(maxDiff(rgb, native) <= 1, `${backend === web ? "inline" : "external data"}: largest difference ${maxDiff(rgb, native)}`);
    }
    assert.ok(sessions.length >= 3, "text encoder, transformer and VAE all went through external data");
  });

  it("refuses CUDA with what to use instead", () => {
    assert.throws(() => new OrtWebBackend({ device: "cuda" }), /no CUDA provider: use device "webgpu" or "cpu"/);
  });
});
