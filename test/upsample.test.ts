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
import { openTextLlm, textLlmProblem, UPSAMPLE_SYSTEM_MESSAGE_T2I, UPSAMPLE_TEMPERATURE, upsamplePrompts } from "../src/text/upsample.js";
import { cleanUpTokenizationSpaces, MistralPromptTokenizer, renderDevChatBuiltin } from "../src/text/mistral_prompt.js";
import { TextGenerator } from "../src/text/generate.js";
import { WeightSet } from "../src/io/safetensors.js";
import { MistralWeights, readMistralConfig } from "../src/models/mistral.js";
import { makeDevFolder } from "./helpers/dev.js";
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
    // Generous limits: they only stop a hang (a loaded machine took over 60 s for this job).
    const up = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-klein-4b", { ...body, prompt_upsampling: true })).body.id, {}, 120_000);
    assert.equal(up.status, "Ready", JSON.stringify(up));
    assert.notEqual(up.result.prompt, "a lighthouse");
    const rec = JSON.parse(readPngText(Buffer.from(await (await fetch(up.result.sample)).arrayBuffer())).flux2);
    assert.deepEqual([rec.prompt, rec.upsampledFrom], [up.result.prompt, "a lighthouse"]);
    const plain = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-klein-4b", { ...body, prompt_upsampling: false })).body.id, {}, 120_000);
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

// -- FLUX.2 [dev]: Mistral ------------------------------------------------------------------------
// A tiny dev folder (test/helpers/dev.ts: random 30-layer Mistral 3 with an untied lm_head; its
// decoding logits are checked against the float64 reference in mistral.test.ts).

describe("FLUX.2 [dev] prompt upsampling (Mistral)", () => {
  let devDir: string, stripped: string;
  before(() => { devDir = makeDevFolder(); stripped = makeDevFolder({ lmHead: false }); });
  after(() => { for (const d of [devDir, stripped]) if (d) fs.rmSync(d, { recursive: true, force: true }); });

  test("the chat is diffusers' upsample_prompt: T2I system message, [IMG] removed, generation prompt; transformers' sampling defaults", async () => {
    const ck = openCheckpoint(devDir);
    assert.equal(ck.textEncoder.kind, "mistral3");
    const m = await openTextLlm(ck, UPSAMPLE_SYSTEM_MESSAGE_T2I);
    try {
      const tok = await MistralPromptTokenizer.load(ck.tokenizer, { systemMessage: UPSAMPLE_SYSTEM_MESSAGE_T2I });
      // No chat template in the tiny folder: the documented [SYSTEM_PROMPT]…[/SYSTEM_PROMPT][INST]…[/INST] form.
      const rendered = renderDevChatBuiltin("a red fox [IMG]in the snow", UPSAMPLE_SYSTEM_MESSAGE_T2I, "");
      assert.ok(rendered.includes(`[SYSTEM_PROMPT]${UPSAMPLE_SYSTEM_MESSAGE_T2I}[/SYSTEM_PROMPT][INST]a red fox in the snow[/INST]`), rendered);
      assert.deepEqual(m.render("a red fox [IMG]in the snow"), tok.tokenize(rendered));
      assert.deepEqual(m.sampling, { topK: 50, topP: 1 });
      assert.equal(m.weights.layout.lmHead, "lm_head.weight");
    } finally {
      m.weights.set.close();
    }
  });

  test("the rewrite is the seeded KV-cached decoding at temperature 0.15 / top_k 50, decoded as transformers cleans up", async () => {
    const ck = openCheckpoint(devDir);
    const backend = new OrtBackend();
    const [got] = await upsamplePrompts(ck, ["a red fox"], { backend, seed: 3, sampling: { maxNewTokens: 8 } });
    // The same steps by hand: diffusers' chat, TextGenerator at diffusers' temperature, the cleaned decode.
    const tok = await MistralPromptTokenizer.load(ck.tokenizer, { systemMessage: UPSAMPLE_SYSTEM_MESSAGE_T2I });
    const set = WeightSet.open(ck.textEncoder.weights);
    const gen = await TextGenerator.create(readMistralConfig(path.join(devDir, "text_encoder", "config.json")), new MistralWeights(set), backend);
    try {
      const ids = tok.tokenize(renderDevChatBuiltin("a red fox", UPSAMPLE_SYSTEM_MESSAGE_T2I, ""));
      const r = await gen.generate(ids, { maxNewTokens: 8, temperature: UPSAMPLE_TEMPERATURE, topK: 50, seed: 3 });
      assert.equal(r.tokens.length, 8);
      const want = cleanUpTokenizationSpaces(tok.decode(r.tokens)).trim();
      assert.equal(got, want || "a red fox");
      assert.notEqual(got, "a red fox");
      // Temperature matters: a hot draw differs from diffusers' 0.15 for some seed.
      const hot = await Promise.all([1, 2, 3, 4].map((seed) => upsamplePrompts(ck, ["a red fox"], { backend, seed, sampling: { maxNewTokens: 8, temperature: 5, topK: 0 } })));
      assert.ok(hot.some(([h]) => h !== got), "temperature 5 gave the 0.15 rewrite for every seed");
    } finally {
      await gen.release();
      set.close();
    }
  });

  test("generation_config.json (as transformers reads it) sets top_k / top_p and a stop token; bad values are refused", async () => {
    const dir = makeDevFolder();
    try {
      fs.writeFileSync(path.join(dir, "text_encoder", "generation_config.json"), JSON.stringify({ eos_token_id: 7, top_k: 5, top_p: 0.9 }));
      const m = await openTextLlm(openCheckpoint(dir), UPSAMPLE_SYSTEM_MESSAGE_T2I);
      m.weights.set.close();
      assert.deepEqual(m.sampling, { topK: 5, topP: 0.9 });
      assert.ok(m.stop.includes(7));
      fs.writeFileSync(path.join(dir, "text_encoder", "generation_config.json"), JSON.stringify({ top_p: 2 }));
      await assert.rejects(openTextLlm(openCheckpoint(dir), UPSAMPLE_SYSTEM_MESSAGE_T2I), /generation_config.json: top_p must be in \(0, 1\], got 2/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("clean_up_tokenization: transformers' replacements", () => {
    assert.equal(cleanUpTokenizationSpaces("a fox , a hen . Is n't it ? It 's ' here ' !"), "a fox, a hen. Isn't it? It's'here '!"); // as Python's str.replace chain gives
  });

  test("a dev text encoder without lm_head: a clear refusal, before any work", async () => {
    assert.match(textLlmProblem(openCheckpoint(stripped))!, /no lm_head \("lm_head.weight"\).*prompt upsampling needs the full causal LM checkpoint/);
    assert.equal(textLlmProblem(openCheckpoint(devDir)), null);
    await assert.rejects(upsamplePrompts(openCheckpoint(stripped), ["x"], { backend: new OrtBackend() }), /no lm_head/);
  });

  test("flux2 generate --upsample-prompt on dev: the rewrite is logged and recorded with the original", () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-up-dev-"));
    try {
      const r = spawnSync(process.execPath, [cli, "generate", "--model", devDir, "--prompt", "a red fox", "--width", "64", "--height", "64", "--steps", "2",
        "--upsample-prompt", "--upsample-tokens", "8", "--seed", "4", "--out", "up.png"], { cwd: out, encoding: "utf8", timeout: 180_000 });
      assert.equal(r.status, 0, r.stderr);
      const rec = JSON.parse(readPngText(fs.readFileSync(path.join(out, "up.png"))).flux2);
      assert.equal(rec.upsampledFrom, "a red fox");
      assert.notEqual(rec.prompt, "a red fox");
      assert.ok(r.stderr.includes(`upsampled prompt: ${rec.prompt}`), r.stderr);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });

  describe("flux2 serve with a dev model", () => {
    let s: Awaited<ReturnType<typeof testServer>>;
    before(async () => {
      s = await testServer({ models: [{ id: "flux-2-dev", dir: devDir }, { id: "dev-no-head", dir: stripped }], upsampleTokens: 8 });
    });
    after(async () => { await s?.close(); });

    test("prompt_upsampling: result.prompt is the rewrite, recorded in the image; the same request without it keeps the prompt", async () => {
      const body = { prompt: "a lighthouse", width: 64, height: 64, steps: 2, seed: 9 };
      const up = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-dev", { ...body, prompt_upsampling: true })).body.id, {}, 120_000);
      assert.equal(up.status, "Ready", JSON.stringify(up));
      assert.notEqual(up.result.prompt, "a lighthouse");
      const rec = JSON.parse(readPngText(Buffer.from(await (await fetch(up.result.sample)).arrayBuffer())).flux2);
      assert.deepEqual([rec.prompt, rec.upsampledFrom, rec.model], [up.result.prompt, "a lighthouse", "flux-2-dev"]);
      const plain = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-dev", { ...body, prompt_upsampling: false })).body.id, {}, 120_000);
      assert.equal(plain.result.prompt, "a lighthouse");
    });

    test("/v1/models says which models can upsample, and why not", async () => {
      const models = (await api(s.url, "GET", "/v1/models")).body.models;
      const by = (id: string) => models.find((m: { id: string }) => m.id === id);
      assert.deepEqual(by("flux-2-dev").prompt_upsampling, { available: true, reason: null });
      assert.equal(by("dev-no-head").prompt_upsampling.available, false);
      assert.match(by("dev-no-head").prompt_upsampling.reason, /no lm_head/);
    });

    test("with an input image, or on a text encoder without lm_head: 422 naming prompt_upsampling", async () => {
      let r = await api(s.url, "POST", "/v1/flux-2-dev", { prompt: "x", input_image: (await pngImage(64, 64)).toString("base64"), prompt_upsampling: true });
      assert.equal(r.status, 422);
      assert.deepEqual(r.body.detail[0].loc, ["body", "prompt_upsampling"]);
      assert.match(r.body.detail[0].msg, /vision tower/);
      r = await api(s.url, "POST", "/v1/dev-no-head", { prompt: "x", width: 64, height: 64, steps: 2, prompt_upsampling: true });
      assert.equal(r.status, 422);
      assert.deepEqual(r.body.detail[0].loc, ["body", "prompt_upsampling"]);
      assert.match(r.body.detail[0].msg, /no lm_head/);
      // Without upsampling the same model serves the request.
      r = await api(s.url, "POST", "/v1/dev-no-head", { prompt: "x", width: 64, height: 64, steps: 2 });
      assert.equal(r.status, 200, JSON.stringify(r.body));
    });
  });
});
