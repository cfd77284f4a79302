// One request, two front doors: the same requests through `flux2 generate` /
// `flux2 edit` and through the HTTP server give byte-identical pixels, because
// both fill one GenerationRequest and hand it to the request layer
// (src/api/prepare.ts). Tiny checkpoints from testdata/golden/checkpoints.

import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { runEditCommand } from "../src/cli/edit.js";
import { runGenerateCommand } from "../src/cli/generate.js";
import { readPngText } from "../src/pipeline/image.js";
import { seededNoise } from "../src/pipeline/flux2.js";
import { latentMultiple, openCheckpoint, transformerConfig } from "../src/pipeline/checkpoint.js";
import { writeSafetensors } from "../src/io/safetensors.js";
import { InvalidRequestError } from "../src/util/errors.js";
import { api, TINY, TINY_BASE, untilDone } from "./helpers/net.js";
import { pngImage, tempDir, testServer } from "./helpers/server.js";

type Server = Awaited<ReturnType<typeof testServer>>;

/** A mask that is white (repaint) on a centred square of half the size. */
async function squareMask(width: number, height: number): Promise<Buffer> {
  const m = Buffer.alloc(width * height);
  for (let y = height / 4; y < (3 * height) / 4; y++) m.fill(255, y * width + width / 4, y * width + (3 * width) / 4);
  return sharp(m, { raw: { width, height, channels: 1 } }).png().toBuffer();
}

async function pixels(png: Buffer): Promise<{ data: Buffer; width: number; height: number }> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

describe("the same request through the CLI and the server", () => {
  let s: Server;
  let dir: string;
  const file = (name: string, bytes: Buffer) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, bytes);
    return p;
  };
  before(async () => {
    dir = tempDir("flux2-front-doors-");
    s = await testServer({ models: [{ id: "flux-2-klein-4b", dir: TINY }, { id: "flux-2-klein-base-4b", dir: TINY_BASE }] });
  });
  after(async () => {
    await s?.close();
  });

  /** Run the server job, then the CLI; return both PNGs. */
  async function both(model: string, body: Record<string, unknown>, cli: () => Promise<number>, out: string) {
    const sub = await api(s.url, "POST", `/v1/${model}`, body);
    assert.equal(sub.status, 200, JSON.stringify(sub.body));
    const done = await untilDone(s.url, sub.body.id, {}, 120_000);
    assert.equal(done.status, "Ready", JSON.stringify(done));
    const served = Buffer.from(await (await fetch(done.result.sample)).arrayBuffer());
    assert.equal(await cli(), 0);
    return { served, cli: fs.readFileSync(path.join(dir, out)) };
  }

  async function assertSamePixels(a: Buffer, b: Buffer, size: [number, number]) {
    const pa = await pixels(a), pb = await pixels(b);
    assert.deepEqual([pa.width, pa.height], size);
    assert.deepEqual([pb.width, pb.height], size);
    assert.ok(pa.data.equals(pb.data), "the CLI's and the server's pixels differ");
  }

  test("text to image (klein)", async () => {
    const r = await both("flux-2-klein-4b", { prompt: "a red fox in the snow", width: 80, height: 64, seed: 7 },
      () => runGenerateCommand(["--model", TINY, "--prompt", "a red fox in the snow", "--width", "80", "--height", "64", "--seed", "7", "--out", path.join(dir, "t2i.png"), "--quiet"]),
      "t2i.png");
    await assertSamePixels(r.served, r.cli, [80, 64]);
  });

  test("inpaint with the default strength, 12 steps, klein base: strength 1 in both", async () => {
    const image = await pngImage(64, 64), mask = await squareMask(64, 64);
    const r = await both("flux-2-klein-base-4b", {
      prompt: "a small red boat", input_image: image.toString("base64"), mask_image: mask.toString("base64"), steps: 12, seed: 3,
    }, () => runEditCommand(["--model", TINY_BASE, "-i", file("in.png", image), "--mask", file("mask.png", mask), "--steps", "12", "--seed", "3",
      "--prompt", "a small red boat", "--out", path.join(dir, "inpaint.png"), "--quiet"]), "inpaint.png");
    await assertSamePixels(r.served, r.cli, [64, 64]);
    for (const png of [r.served, r.cli]) assert.equal(JSON.parse(readPngText(png).flux2).strength, 1);
    // The image really was repainted (not handed back): the masked square changed.
    const before = await pixels(image), after = await pixels(r.cli);
    assert.ok(!before.data.equals(after.data));
  });

  test("outpaint: the canvas grows, never squashed", async () => {
    const image = await pngImage(96, 64);
    const r = await both("flux-2-klein-4b", { prompt: "a wide beach", input_image: image.toString("base64"), expand: [0, 32, 0, 32], seed: 5 },
      () => runEditCommand(["--model", TINY, "-i", file("wide.png", image), "--expand", "0,32,0,32", "--seed", "5", "--prompt", "a wide beach",
        "--out", path.join(dir, "outpaint.png"), "--quiet"]), "outpaint.png");
    await assertSamePixels(r.served, r.cli, [160, 64]);
  });

  test("multi-reference editing", async () => {
    const a = await pngImage(64, 64), b = await pngImage(80, 64);
    const r = await both("flux-2-klein-4b", { prompt: "the two side by side", input_image: a.toString("base64"), input_image_2: b.toString("base64"), seed: 11 },
      () => runEditCommand(["--model", TINY, "-i", file("a.png", a), "-i", file("b.png", b), "--seed", "11", "--prompt", "the two side by side",
        "--out", path.join(dir, "multi.png"), "--quiet"]), "multi.png");
    await assertSamePixels(r.served, r.cli, [64, 64]);
  });

  test("a width that would stretch an inpaint image is refused by both, saying why", async () => {
    const image = await pngImage(64, 64), mask = await squareMask(64, 64);
    await assert.rejects(runEditCommand(["--model", TINY, "-i", file("s.png", image), "--mask", file("smask.png", mask), "--width", "128",
      "--prompt", "x", "--out", path.join(dir, "stretch.png"), "--quiet"]), (e: Error) => e instanceof InvalidRequestError && /would stretch it/.test(e.message));
    // The server refuses it at submit, from the image's header (a 422 naming width), before any job runs.
    const sub = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "x", input_image: image.toString("base64"), mask_image: mask.toString("base64"), width: 128, height: 64 });
    assert.equal(sub.status, 422, JSON.stringify(sub.body));
    assert.deepEqual(sub.body.detail[0].loc, ["body", "width"]);
    assert.match(sub.body.detail[0].msg, /the output follows input_image: 64×64; width\/height 128×64 would stretch it/);
    // The outpaint size with its expansion is what width/height must match, if given.
    const ok = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "x", input_image: image.toString("base64"), expand: [0, 16, 0, 16], width: 96, height: 64, seed: 1 });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.deepEqual([(await untilDone(s.url, ok.body.id, {}, 60_000)).result.width], [96]);
  });

  /** One server job's PNG. */
  async function served(model: string, body: Record<string, unknown>): Promise<Buffer> {
    const sub = await api(s.url, "POST", `/v1/${model}`, body);
    assert.equal(sub.status, 200, JSON.stringify(sub.body));
    const done = await untilDone(s.url, sub.body.id, {}, 120_000);
    assert.equal(done.status, "Ready", JSON.stringify(done));
    return Buffer.from(await (await fetch(done.result.sample)).arrayBuffer());
  }

  test("several prompts in one `flux2 generate` run: image i is the server's request for prompt i with seed + i", async () => {
    const prompts = ["a red fox in the snow", "a blue boat at dawn"];
    assert.equal(await runGenerateCommand(["--model", TINY, "--prompt", prompts[0], "--prompt", prompts[1], "--width", "64", "--height", "64",
      "--seed", "21", "--batch", "1", "--out", path.join(dir, "multi-prompt.png"), "--quiet"]), 0);
    for (const i of [0, 1]) {
      const cli = fs.readFileSync(path.join(dir, `multi-prompt-${i}.png`));
      await assertSamePixels(await served("flux-2-klein-4b", { prompt: prompts[i], width: 64, height: 64, seed: 21 + i }), cli, [64, 64]);
      const record = JSON.parse(readPngText(cli).flux2);
      assert.equal(record.prompt, prompts[i]);
      assert.equal(record.seed, 21 + i);
    }
  });

  test("`flux2 generate --initial-latents` with the server's own seeded noise gives the server's pixels", async () => {
    const ck = openCheckpoint(TINY);
    const m = latentMultiple(ck), C = transformerConfig(ck).in_channels;
    const noise = seededNoise(9, 1, C, 64 / m, 96 / m); // a 96×64 image
    const file = path.join(dir, "noise.safetensors");
    writeSafetensors(file, { initial_latents: { dtype: "F32", shape: [...noise.shape], data: noise.data } });
    // The size comes from the latents (the grid times their cells); no --width/--height needed.
    assert.equal(await runGenerateCommand(["--model", TINY, "--prompt", "a lighthouse", "--initial-latents", file, "--out", path.join(dir, "latents.png"), "--quiet"]), 0);
    const cli = fs.readFileSync(path.join(dir, "latents.png"));
    await assertSamePixels(await served("flux-2-klein-4b", { prompt: "a lighthouse", width: 96, height: 64, seed: 9 }), cli, [96, 64]);
    const record = JSON.parse(readPngText(cli).flux2);
    assert.equal(record.initialLatents, "noise.safetensors");
    assert.equal(record.seed, null); // given noise, not a seed
    // Flags that disagree with the latents are refused, saying why, before anything loads.
    await assert.rejects(runGenerateCommand(["--model", TINY, "--prompt", "x", "--initial-latents", file, "--width", "64", "--out", path.join(dir, "bad.png"), "--quiet"]),
      (e: Error) => e instanceof InvalidRequestError && /--initial-latents stand for 96×64; --width\/--height 64×- disagree/.test(e.message));
    await assert.rejects(runGenerateCommand(["--model", TINY, "--prompt", "x", "--initial-latents", file, "--num-images", "2", "--out", path.join(dir, "bad.png"), "--quiet"]),
      (e: Error) => e instanceof InvalidRequestError && /2 image\(s\) per prompt asked, but the initial latents hold 1 images/.test(e.message));
    await assert.rejects(runGenerateCommand(["--model", TINY, "--prompt", "x", "--prompt", "y", "--initial-latents", file, "--out", path.join(dir, "bad.png"), "--quiet"]),
      (e: Error) => e instanceof InvalidRequestError && /hold 1 images, not a multiple of the 2 prompt/.test(e.message));
  });

  test("a --variant no card names is refused, listing the cards' variants", async () => {
    await assert.rejects(runGenerateCommand(["--model", TINY, "--variant", "schnell", "--prompt", "x", "--out", path.join(dir, "bad.png"), "--quiet"]),
      (e: Error) => e instanceof InvalidRequestError && /--variant must be one of klein, klein-kv, klein-base, dev \(the variant cards\), got "schnell"/.test(e.message));
  });

  test("text-to-image sizes off the rule are refused before any model loads (CLI)", async () => {
    // 48 is a multiple of the tiny checkpoint's grid (4 px) but below 64, the minimum the server also keeps.
    await assert.rejects(runGenerateCommand(["--model", TINY, "--prompt", "x", "--width", "48", "--height", "64", "--out", path.join(dir, "bad.png"), "--quiet"]),
      (e: Error) => e instanceof InvalidRequestError && /width 48 is below the minimum of 64/.test(e.message));
  });
});
