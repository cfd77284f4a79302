// The public API, imported by the package's own name (Node's self-reference through package.json
// "exports"), as a user's code would: the front door is small, the subpaths hold the model classes
// and the conformance runner, nothing else is reachable, and the README's three-line picture runs.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { readPngText } from "../src/pipeline/image.js";
import { parseParameters } from "../src/pipeline/metadata.js";
import { repoRoot } from "./golden.js";

const TINY = path.join(repoRoot, "testdata", "golden", "checkpoints", "klein_distilled");
// A variable specifier: the compiler must not resolve "flux2" to dist/ before dist exists.
const byName = (spec: string): Promise<Record<string, unknown>> => import(spec);

test("'flux2' is the front door: load, generate, edit, save and their errors", async () => {
  const api = await byName("flux2");
  assert.deepEqual(Object.keys(api).sort(), ["CheckpointError", "InvalidRequestError", "edit", "generate", "load", "save"]);
});

test("'flux2/models' and 'flux2/conformance' hold the model classes and the conformance runner", async () => {
  const models = await byName("flux2/models");
  for (const name of ["Flux2Transformer", "Flux2KvTransformer", "Flux2Vae", "Qwen3Encoder", "MistralEncoder", "OrtBackend", "WeightSet"]) {
    assert.equal(typeof models[name], "function", `flux2/models lacks ${name}`);
  }
  const conformance = await byName("flux2/conformance");
  assert.equal(typeof conformance.runConformance, "function");
});

test("modules outside the exports are not reachable by the package name", async () => {
  await assert.rejects(byName("flux2/dist/src/pipeline/flux2.js"), (e: NodeJS.ErrnoException) => e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED");
});

/** The README's library snippet, verbatim but for the model folder and the output file. */
function readmeSnippet(model: string, out: string): string {
  const readme = fs.readFileSync(path.join(repoRoot, "README.md"), "utf8");
  const m = /<!-- library-snippet:[^>]*-->\n```js\n([\s\S]*?)```/.exec(readme);
  assert.ok(m, "README.md has no library snippet block");
  const code = m[1];
  assert.equal(code.trim().split("\n").length, 3, "the README promises a picture in three lines");
  assert.ok(code.includes('"models/FLUX.2-klein-4B"') && code.includes('"fox.png"'));
  return code.replace('"models/FLUX.2-klein-4B"', JSON.stringify(model)).replace('"fox.png"', JSON.stringify(out));
}

/**
 * The tiny checkpoint with a 64² default size and 64 text tokens (its model_index.json's flux2.ts
 * hints; the components are links to the originals), so the snippet's default-size run is quick.
 */
function tinyWithSmallDefaults(dir: string): string {
  const model = path.join(dir, "tiny");
  fs.mkdirSync(model);
  for (const e of fs.readdirSync(TINY, { withFileTypes: true })) {
    if (e.isDirectory()) fs.symlinkSync(path.join(TINY, e.name), path.join(model, e.name), "dir");
  }
  const index = JSON.parse(fs.readFileSync(path.join(TINY, "model_index.json"), "utf8"));
  fs.writeFileSync(path.join(model, "model_index.json"), JSON.stringify({ ...index, flux2ts: { resolution: 64, max_sequence_length: 64 } }));
  return model;
}

test("the README's three lines make a picture (tiny checkpoint)", async () => {
  // Inside the package, so that `import … from "flux2"` resolves to this package.
  const dir = fs.mkdtempSync(path.join(repoRoot, "dist", "test", "readme-snippet-"));
  const out = path.join(dir, "fox.png");
  const script = path.join(dir, "snippet.mjs");
  fs.writeFileSync(script, readmeSnippet(tinyWithSmallDefaults(dir), out));
  try {
    await import(script);
    const png = fs.readFileSync(out);
    const meta = await sharp(png).metadata();
    assert.deepEqual([meta.width, meta.height], [64, 64]);
    const params = parseParameters(readPngText(png).parameters);
    assert.equal(params.prompt, "a red fox in the snow");
    assert.equal(params.settings.Seed, "42");
    const { channels, isOpaque } = await sharp(png).stats();
    assert.ok(isOpaque && channels.some((c) => c.stdev > 1), "the picture is a flat colour");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("edit() takes image files, sizes the output from the first, and refuses an empty list", async () => {
  const { load, edit, generate, save } = (await byName("flux2")) as typeof import("../src/index.js");
  const pipe = await load(TINY, { keepLoaded: true });
  try {
    const file = path.join(repoRoot, "dist", "test", `edit-input-${process.pid}.png`);
    await save(await generate(pipe, { prompt: "a cat", width: 96, height: 64, seed: 1, maxSequenceLength: 64 }), file);
    try {
      const result = await edit(pipe, { prompt: "the cat in a hat", images: [file], seed: 2, maxSequenceLength: 64 });
      assert.deepEqual([result.width, result.height], [96, 64]);
      const again = await edit(pipe, { prompt: "the cat in a hat", images: [fs.readFileSync(file)], seed: 2, maxSequenceLength: 64 });
      assert.deepEqual(again.images[0].rgb, result.images[0].rgb, "a path and its bytes give the same edit");
    } finally {
      fs.rmSync(file, { force: true });
    }
    await assert.rejects(edit(pipe, { prompt: "x", images: [] }), /at least one image/);
  } finally {
    await pipe.release();
  }
});
