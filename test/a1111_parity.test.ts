// The studio parses A1111 "parameters" text in the browser (studio/src/png.ts) with its own
// copy of the server's parser (src/pipeline/metadata.ts): the studio bundle cannot import
// engine modules. The copies once drifted (CRLF); this test runs both on the same texts.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import ts from "typescript";
import { formatParameters, parseParameters } from "../src/pipeline/metadata.js";
import { repoRoot } from "./golden.js";

type Parser = typeof parseParameters;

/** The studio's parseParameters, compiled from its TypeScript source as the bundler would. */
async function studioParser(): Promise<Parser> {
  const source = fs.readFileSync(path.join(repoRoot, "studio", "src", "png.ts"), "utf8");
  const js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 } }).outputText;
  const mod = await import(`data:text/javascript;base64,${Buffer.from(js).toString("base64")}`);
  assert.equal(typeof mod.parseParameters, "function", "studio/src/png.ts no longer exports parseParameters");
  return mod.parseParameters;
}

const record = {
  prompt: "a red fox, in the snow\nsecond line", negativePrompt: "blurry, low quality", width: 1024, height: 768,
  steps: 4, guidance: 1, seed: 42, variant: "klein", model: "FLUX.2-klein-4B", strength: 0.8,
  references: [{ width: 512, height: 512, resizedFrom: "640x640" }], loras: [{ name: "style", strength: 0.5 }, { name: "detail", strength: 1 }],
  upsampledFrom: "a fox, \"quoted\"", watermark: "flux2, v1",
};

const TEXTS = [
  formatParameters(record),
  formatParameters({ ...record, negativePrompt: null, loras: [], references: [], strength: undefined }),
  formatParameters(record).replace(/\n/g, "\r\n"),
  "just a prompt",
  "just a prompt\r\nwith CRLF",
  "prompt\nNegative prompt: bad\nmulti-line negative\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512",
  "Steps: 4, Seed: 3",
  "",
  "prompt\r\nNegative prompt: x\r\nSteps: 4, Seed: 3, Size: 64x64\r\n",
  'p\nSteps: 4, Lora hashes: "a: 1, b: 2", Version: v',
];

test("the server's and the studio's A1111 parsers agree, CRLF included", async () => {
  const studio = await studioParser();
  for (const text of TEXTS) assert.deepEqual(studio(text), parseParameters(text), JSON.stringify(text));
});

test("a CRLF text parses like its LF form (no stray \\r in values)", () => {
  const lf = formatParameters(record);
  assert.deepEqual(parseParameters(lf.replace(/\n/g, "\r\n")), parseParameters(lf));
  assert.equal(parseParameters(lf).settings.Seed, "42");
});
