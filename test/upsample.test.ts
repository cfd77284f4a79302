// Prompt upsampling (src/text/upsample.ts) with the tiny klein checkpoint's
// Qwen3: the system message is diffusers' byte for byte, the rewrite is seeded,
// and `prompt_upsampling` / `--upsample-prompt` change what is generated and
// recorded; image-conditioned upsampling is refused. The tiny model has random
// weights, so its rewrite is gibberish: the tests check plumbing, not prose.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { OrtBackend } from "../src/backend/ort.js";
import { openCheckpoint } from "../src/pipeline/checkpoint.js";
import { readPngText } from "../src/pipeline/image.js";
import { PromptTokenizer } from "../src/text/tokenizer.js";
import { UPSAMPLE_SYSTEM_MESSAGE_T2I, upsamplePrompts } from "../src/text/upsample.js";
import { goldenPath, repoRoot } from "./golden.js";
import { api, TINY, untilDone } from "./helpers/net.js";
import { pngImage, testServer } from "./helpers/server.js";

const cli = path.join(repoRoot, "dist", "src", "cli", "main.js");

test("the system message is diffusers' SYSTEM_MESSAGE_UPSAMPLING_T2I, byte for byte", () => {
  // sha256 of the Python string in diffusers/pipelines/flux2/system_messages.py (770 characters).
  assert.equal(UPSAMPLE_SYSTEM_MESSAGE_T2I.length, 770);
  assert.equal(createHash("sha256").update(UPSAMPLE_SYSTEM_MESSAGE_T2I).digest("hex"), "0ad9a42c565716b0a8eb82a442dd4f6cc82d583eb3474f82ccb610c1a29233c7");
});

test("klein: a system turn with the message, then the user's prompt, ready for the answer", async () => {
  const tok = await PromptTokenizer.load(goldenPath("checkpoints/klein_distilled/tokenizer"));
  const s = tok.renderMessages([{ role: "system", content: UPSAMPLE_SYSTEM_MESSAGE_T2I }, { role: "user", content: "a fox" }]);
  assert.ok(s.startsWith(`<|im_start|>system\n${UPSAMPLE_SYSTEM_MESSAGE_T2I}<|im_end|>\n<|im_start|>user\na fox<|im_end|>\n<|im_start|>assistant\n`), s);
});

test("upsamplePrompts: seeded, and the seed matters", async () => {
  const ck = openCheckpoint(goldenPath("checkpoints/klein_distilled"));
  // At diffusers' temperature 0.15 this tiny model is all but greedy; at 1.5 seeds differ.
  const run = (seed: number, temperature = 1.5) => upsamplePrompts(ck, ["a red fox"], { backend: new OrtBackend(), seed, sampling: { maxNewTokens: 10, temperature } });
  const [a] = await run(1);
  assert.notEqual(a, "a red fox");
  assert.equal((await run(1))[0], a);
  assert.notEqual((await run(1, 0.15))[0], "a red fox");
  const others = [(await run(2))[0], (await run(3))[0]];
  assert.ok(others.some((o) => o !== a), "different seeds gave the same rewrite");
});

test("flux2 generate --upsample-prompt records the rewrite and the original; flux2 edit refuses it", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-up-"));
  const model = goldenPath("checkpoints/klein_distilled");
  let r = spawnSync(process.execPath, [cli, "generate", "--model", model, "--prompt", "a red fox", "--width", "64", "--height", "64",
    "--upsample-prompt", "--upsample-tokens", "8", "--seed", "4", "--out", "up.png"], { cwd: dir, encoding: "utf8", timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const rec = JSON.parse(readPngText(fs.readFileSync(path.join(dir, "up.png"))).flux2);
  assert.equal(rec.upsampledFrom, "a red fox");
  assert.notEqual(rec.prompt, "a red fox");
  assert.ok(r.stderr.includes(`upsampled prompt: ${rec.prompt}`), r.stderr);
  r = spawnSync(process.execPath, [cli, "edit", "--model", model, "-i", goldenPath("edit/klein_kv__ref0.png"), "--prompt", "x", "--upsample-prompt"], { cwd: dir, encoding: "utf8" });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--upsample-prompt: prompt upsampling with input images needs FLUX.2 \[dev\]'s vision tower/);
});

describe("flux2 serve: prompt_upsampling", () => {
  let s: Awaited<ReturnType<typeof testServer>>;
  before(async () => { s = await testServer({ upsampleTokens: 8 }); });
  after(async () => { await s?.close(); });

  test("true: result.prompt is the rewrite, recorded in the image with the original; false changes nothing", async () => {
    const body = { prompt: "a lighthouse", width: 64, height: 64, seed: 9 };
    const up = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-klein-4b", { ...body, prompt_upsampling: true })).body.id, {}, 60_000);
    assert.equal(up.status, "Ready", JSON.stringify(up));
    assert.notEqual(up.result.prompt, "a lighthouse");
    const rec = JSON.parse(readPngText(Buffer.from(await (await fetch(up.result.sample)).arrayBuffer())).flux2);
    assert.deepEqual([rec.prompt, rec.upsampledFrom], [up.result.prompt, "a lighthouse"]);
    const plain = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-klein-4b", { ...body, prompt_upsampling: false })).body.id);
    assert.equal(plain.result.prompt, "a lighthouse");
    assert.notEqual(plain.result.sample, up.result.sample);
  });

  test("with an input image: 422 naming prompt_upsampling", async () => {
    const r = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "x", input_image: (await pngImage(64, 64)).toString("base64"), prompt_upsampling: true });
    assert.equal(r.status, 422);
    assert.deepEqual(r.body.detail[0].loc, ["body", "prompt_upsampling"]);
    assert.match(r.body.detail[0].msg, /vision tower/);
  });
});
