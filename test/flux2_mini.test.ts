// The bundled default model (models/flux2-mini, trained by this project: docs/flux2-mini.md)
// makes real pictures on a fresh clone: the README's first command, `flux2 serve` and the
// studio with no arguments, and the README's apple. Pictures are judged with the eval's own
// measurements (src/eval/metrics.ts, src/eval/retrieval.ts), never by eye.
//
// What is asserted is what this version of the model reaches, measured and documented in
// docs/flux2-mini.md: a white background and a shape of the prompted blue's hue. The target
// (ΔE ≤ 15 for every such prompt) is not reached yet; flux2 eval reports by how much.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { chromium, type BrowserContext } from "playwright-core";
import { deltaE, hexLab, hueChroma, hueDifference } from "../src/mini/colour.js";
import { findShape, leafShare } from "../src/eval/metrics.js";
import { emojiGallery, rankOf, thumbnailFeature } from "../src/eval/retrieval.js";
import { listEmoji } from "../src/mini/emoji.js";
import { SafetensorsFile } from "../src/io/safetensors.js";
import { DEFAULT_MODEL_ID } from "../src/pipeline/default_model.js";
import { serveConfig } from "../src/cli/serve.js";
import { startServer } from "../src/server/app.js";
import { repoRoot } from "./golden.js";

const MODEL = path.join(repoRoot, "models", "flux2-mini");
const BLUE = "#1E90FF";
const PROMPT = `a ${BLUE} circle on a white background`;
const cli = path.join(repoRoot, "dist", "src", "cli", "main.js");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-mini-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/**
 * The eval's reading of a picture (white background; the shape's mean colour), and whether that
 * colour is the prompted blue's hue: within HUE_TOLERANCE degrees of it, with chroma ≥ 15.
 */
const HUE_TOLERANCE = 40;
async function judge(png: Buffer | string): Promise<{ white: boolean; deltaE: number | null; hueOff: number | null; blue: boolean }> {
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const f = findShape({ rgb: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height });
  if (!f.meanColour) return { white: f.whiteBackground, deltaE: null, hueOff: null, blue: false };
  const got = hueChroma(f.meanColour), want = hueChroma(hexLab(BLUE));
  const hueOff = hueDifference(got.hue, want.hue);
  return { white: f.whiteBackground, deltaE: deltaE(f.meanColour, hexLab(BLUE)), hueOff, blue: hueOff <= HUE_TOLERANCE && got.chroma >= 15 };
}

test("the bundled model is a klein-layout diffusers folder of at most 40 MB of bf16 weights", () => {
  const index = JSON.parse(fs.readFileSync(path.join(MODEL, "model_index.json"), "utf8"));
  assert.equal(index._class_name, "Flux2KleinPipeline");
  let bytes = 0;
  for (const part of ["transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"]) {
    const file = path.join(MODEL, part);
    bytes += fs.statSync(file).size;
    const st = SafetensorsFile.open(file);
    const dtypes = new Set([...st.tensors.values()].map((t) => t.dtype));
    st.close();
    assert.deepEqual([...dtypes], ["BF16"], `${part} holds ${[...dtypes]}`);
  }
  assert.ok(bytes <= 40e6, `${(bytes / 1e6).toFixed(1)} MB of weights`);
});

test(`the README's first command: flux2 generate with no --model writes a blue shape on white for "${PROMPT}"`, async () => {
  // Measured for the shipped model, version 8 (docs/flux2-mini.md, session 28): seeds 0–3 give a round
  // blue disc 4°, 1°, 3° and 3° of hue from #1E90FF (ΔE 6, 2, 5, 4), all on white. All four must be
  // blue. (Version 7: 1°, 5°, 3°, 1°; version 6: 4°, 3°, 0°, 6°; version 5: 11°, 12°, 8°, 15°; version 4: 32°, 37°, 29°, 38°;
  // version 3: 11°, 11°, 8°, 9°; version 2 passed two of four, 26–60° off, and this test asked for two then.)
  const readings: string[] = [];
  let blue = 0;
  for (const seed of [0, 1, 2, 3]) {
    const out = path.join(tmp, `c${seed}.png`);
    const r = spawnSync(process.execPath, [cli, "generate", "--prompt", PROMPT, "--seed", String(seed), "--out", out], { cwd: tmp, encoding: "utf8", timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr + r.stdout, /flux2-mini/, "says which model it used");
    const j = await judge(out);
    assert.ok(j.white, `seed ${seed}: the background is white`);
    readings.push(`seed ${seed}: hue ${j.hueOff?.toFixed(0)}° off, ΔE ${j.deltaE?.toFixed(1)}`);
    if (j.blue) blue++;
  }
  assert.ok(blue === 4, `blue shapes in ${blue} of 4 pictures (${readings.join("; ")})`);
});

test('the README\'s apple: flux2 generate with no --model draws "a red apple" as the apple emoji, stem and leaf included', async () => {
  // Judged with the eval's retrieval (the apple emoji must be the nearest of the 1,906 training emoji)
  // and by leaf green in the top third (leafShare: the training picture 14%). Version 8, seeds 0–3:
  // rank 1, 1, 1, 1 and 17%, 16%, 24%, 23% (docs/flux2-mini.md, session 28). Version 7 drew a red blob,
  // ranked 3rd with 0% leaf for seeds 0–3: this test failed on it.
  const all = listEmoji();
  const target = all.findIndex((e) => e.code === "1f34e");
  const gallery = await emojiGallery(all, 64);
  const readings: { seed: number; rank: number; leaf: number }[] = [];
  for (const seed of [0, 1, 2, 3]) {
    const out = path.join(tmp, `apple${seed}.png`);
    const r = spawnSync(process.execPath, [cli, "generate", "--prompt", "a red apple", "--seed", String(seed), "--out", out], { cwd: tmp, encoding: "utf8", timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    const { data, info } = await sharp(out).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const img = { rgb: new Uint8Array(data), width: info.width, height: info.height };
    readings.push({ seed, rank: rankOf(thumbnailFeature(img), gallery, target) + 1, leaf: leafShare(img) });
  }
  const shown = readings.map((r) => `seed ${r.seed}: rank ${r.rank}, leaf ${(100 * r.leaf).toFixed(0)}%`).join("; ");
  assert.ok(readings.every((r) => r.rank === 1), `the apple emoji is the nearest training emoji (${shown})`);
  assert.ok(readings.every((r) => r.leaf >= 0.05), `a green stem and leaf on top (${shown})`);
});

describe("the studio, started with no arguments, makes real pictures (Chromium)", { skip: fs.existsSync("/usr/bin/chromium") ? false : "no Chromium at /usr/bin/chromium" }, () => {
  let server: { url: string; close: () => Promise<void> };
  let context: BrowserContext;
  before(async () => {
    const cfg = serveConfig(["--port", "0", "--host", "127.0.0.1", "--data", path.join(tmp, "data")])!;
    assert.deepEqual(cfg.models.map((m) => m.id), [DEFAULT_MODEL_ID]);
    server = await startServer(cfg, () => undefined);
    context = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(tmp, "chromium-")), {
      executablePath: "/usr/bin/chromium",
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
      viewport: { width: 1280, height: 1000 },
    });
  });
  after(async () => {
    await context?.close();
    await server?.close();
  });

  test("a hex prompt gives a picture with a white background and a blue shape", { timeout: 180_000 }, async () => {
    const page = await context.newPage();
    await page.goto(`${server.url}/`);
    await page.locator("#prompt").waitFor();
    await page.fill("#prompt", PROMPT);
    await page.locator("label", { hasText: "Fixed" }).click();
    await page.fill("#seed", "0");
    await page.focus("#prompt");
    await page.keyboard.press("Enter");
    const img = page.locator("[data-testid=result-image]").first();
    await img.waitFor({ timeout: 150_000 });
    const src = await img.getAttribute("src");
    const png = Buffer.from(await (await fetch(new URL(src!, server.url))).arrayBuffer());
    const j = await judge(png);
    assert.ok(j.white, "white background");
    assert.ok(j.blue, `the shape is blue (hue ${j.hueOff?.toFixed(0)}° off, ΔE ${j.deltaE?.toFixed(1)})`);
  });
});
