// Moderation (src/moderation/): the operator's file, the prompt lists, the image
// classifier with safety_tolerance thresholds, and what the server and the CLI do
// with a hit (BFL's "Request Moderated" / "Content Moderated", no image), or
// without any moderation configured (said so; stricter safety_tolerance refused).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { loadModerationConfig, parseModerationConfig, safetyToleranceProblem } from "../src/moderation/config.js";
import { promptListHit } from "../src/moderation/moderator.js";
import { DEFAULT_LLM_PROMPT, llmPromptCheck } from "../src/moderation/llm_check.js";
import { OrtBackend } from "../src/backend/ort.js";
import { Qwen3Encoder } from "../src/models/qwen3.js";
import { openCheckpoint } from "../src/pipeline/checkpoint.js";
import { PromptTokenizer } from "../src/text/tokenizer.js";
import { goldenPath, repoRoot } from "./golden.js";
import { api, serverUrl, spawnCli, stop, TINY, untilDone, waitFor } from "./helpers/net.js";
import { pngImage, testServer } from "./helpers/server.js";
import { writeTinyVit } from "./helpers/vit.js";

const cli = path.join(repoRoot, "dist", "src", "cli", "main.js");
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "flux2-mod-"));

/** A moderation file with a word list, a pattern and a tiny classifier that always says "nsfw" with p ≈ 1 − 2e-9. */
function moderationFile(opts: { image?: boolean; checkInputs?: boolean } = {}): string {
  const dir = tmp();
  const config: Record<string, unknown> = { prompt: { words: ["forbidden fruit", "zorg"], patterns: ["\\bbad-\\d+\\b"] } };
  if (opts.image !== false) {
    writeTinyVit(path.join(dir, "nsfw"), 1, [-10, 10]);
    // Tolerance 6 at 1.0: nothing is above it, so the same image passes there.
    config.image = { classifier: "nsfw", thresholds: [0.2, 0.5, 0.85, 0.9, 0.95, 0.98, 1], check_inputs: opts.checkInputs ?? true };
  }
  fs.writeFileSync(path.join(dir, "moderation.json"), JSON.stringify(config));
  return path.join(dir, "moderation.json");
}

test("the moderation file: every key checked, errors say what to fix", () => {
  const p = (raw: unknown) => parseModerationConfig(raw, "m.json", os.tmpdir());
  assert.throws(() => p({ prompt: { word: ["x"] } }), /prompt: unknown key "word" \(allowed: words, patterns\)/);
  assert.throws(() => p({ prompts: {} }), /unknown key "prompts"/);
  assert.throws(() => p({ prompt: { patterns: ["(unclosed"] } }), /prompt.patterns entry "\(unclosed" is not a valid regular expression/);
  assert.throws(() => p({}), /checks nothing/);
  assert.throws(() => p({ image: { classifier: "no-such-dir" } }), /image.classifier .*no-such-dir has no config.json/);
  const dir = tmp();
  writeTinyVit(path.join(dir, "c"));
  assert.throws(() => parseModerationConfig({ image: { classifier: "c", thresholds: [0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5] } }, "m", dir), /must not decrease/);
  assert.throws(() => parseModerationConfig({ image: { classifier: "c", thresholds: [0.5] } }, "m", dir), /7 probabilities/);
  const ok = loadModerationConfig(moderationFile());
  assert.deepEqual(ok.prompt.words, ["forbidden fruit", "zorg"]);
  assert.equal(ok.image!.label, "nsfw");
  assert.equal(ok.image!.thresholds[2], 0.85);
});

test("prompt lists: whole words and phrases, any case, compatibility forms folded; patterns as regexes", () => {
  const c = { words: ["forbidden fruit", "zorg"], patterns: ["\\bbad-\\d+\\b"] };
  assert.match(promptListHit("A ZORG in the garden", c)!, /blocked word or phrase \("zorg"\)/);
  assert.match(promptListHit("the Forbidden   Fruit", c)!, /"forbidden fruit"/);
  assert.match(promptListHit("ｚｏｒｇ", c)!, /"zorg"/); // full-width letters
  assert.equal(promptListHit("zorgon and zorgs are fine", c), null);
  assert.match(promptListHit("code bad-42 here", c)!, /blocked pattern/);
  assert.equal(promptListHit("bad-x", c), null);
});

test("safety_tolerance: stricter than 2 needs an image classifier", () => {
  assert.match(safetyToleranceProblem(1, undefined)!, /no moderation configured/);
  assert.equal(safetyToleranceProblem(2, undefined), null);
  assert.equal(safetyToleranceProblem(6, undefined), null);
  const lists = loadModerationConfig(moderationFile({ image: false }));
  assert.match(safetyToleranceProblem(0, lists)!, /no image classifier/);
  assert.equal(safetyToleranceProblem(0, loadModerationConfig(moderationFile())), null);
});

describe("flux2 serve without moderation", () => {
  let s: Awaited<ReturnType<typeof testServer>>;
  before(async () => { s = await testServer(); });
  after(async () => { await s?.close(); });

  test("/v1/models says so, and safety_tolerance below 2 is a 422 naming the field", async () => {
    const models = await api(s.url, "GET", "/v1/models");
    assert.equal(models.body.moderation.configured, false);
    assert.match(models.body.moderation.description, /no moderation configured/);
    const r = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "x", width: 64, height: 64, safety_tolerance: 0 });
    assert.equal(r.status, 422);
    assert.deepEqual(r.body.detail[0].loc, ["body", "safety_tolerance"]);
    assert.match(r.body.detail[0].msg, /no moderation configured.*--moderation CONFIG/);
    const ok = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "x", width: 64, height: 64, safety_tolerance: 5 });
    assert.equal(ok.status, 200);
    assert.equal((await untilDone(s.url, ok.body.id)).status, "Ready");
  });

  test("flux2 serve says so at start-up", { timeout: 60_000 }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-nomod-"));
    const c = spawnCli(["serve", "--port", "0", "--data", dir, "--model", `flux-2-klein-4b=${TINY}`, "--threads", "1"]);
    try {
      await serverUrl(c, 45_000);
      // Printed on stderr just after the listening line.
      const line = await waitFor("the moderation line", () => c.err.find((l) => l.includes("moderation")), 10_000);
      assert.match(line, /^flux2 serve: no moderation configured: prompts and images are not checked \(flux2 serve --moderation CONFIG/);
    } finally {
      await stop(c);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("flux2 serve --moderation", () => {
  let s: Awaited<ReturnType<typeof testServer>>;
  const outputs = () => fs.readdirSync(path.join(s.dataDir, "images"), { recursive: true }).filter((f) => String(f).endsWith(".png")).length;
  before(async () => { s = await testServer({ moderation: loadModerationConfig(moderationFile()) }); });
  after(async () => { await s?.close(); });

  test("/v1/models describes it", async () => {
    const m = (await api(s.url, "GET", "/v1/models")).body.moderation;
    assert.equal(m.configured, true);
    assert.equal(m.prompt_lists, true);
    assert.equal(m.image_classifier.label, "nsfw");
    assert.equal(m.min_safety_tolerance, 0);
  });

  test("a blocked prompt ends as Request Moderated with the reason, no image", async () => {
    const before = outputs();
    const sub = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "a zorg at dawn", width: 64, height: 64, safety_tolerance: 6 });
    const done = await untilDone(s.url, sub.body.id);
    assert.equal(done.status, "Request Moderated", JSON.stringify(done));
    assert.equal(done.result, null);
    assert.match(done.details.moderation, /blocked word or phrase \("zorg"\)/);
    assert.equal(outputs(), before);
  });

  test("an output the classifier flags ends as Content Moderated, nothing stored; safety_tolerance 6 lets it through", async () => {
    const before = outputs();
    const sub = await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "a red fox", width: 64, height: 64, seed: 1 });
    const done = await untilDone(s.url, sub.body.id);
    assert.equal(done.status, "Content Moderated", JSON.stringify(done));
    assert.equal(done.result, null);
    assert.match(done.details.moderation, /image classifier gives "nsfw" 1\.000, above 0\.85 \(safety_tolerance 2\)/);
    assert.equal(outputs(), before);
    const list = await api(s.url, "GET", `/v1/jobs/${sub.body.id}`);
    assert.equal(list.body.result ?? null, null);

    const lenient = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "a red fox", width: 64, height: 64, seed: 1, safety_tolerance: 6 })).body.id);
    assert.equal(lenient.status, "Ready", JSON.stringify(lenient));
    assert.equal(outputs(), before + 1);
  });

  test("an input image the classifier flags ends as Request Moderated", async () => {
    const img = (await pngImage(64, 64)).toString("base64");
    const done = await untilDone(s.url, (await api(s.url, "POST", "/v1/flux-2-klein-4b", { prompt: "make it blue", input_image: img, safety_tolerance: 3 })).body.id);
    assert.equal(done.status, "Request Moderated", JSON.stringify(done));
    assert.match(done.details.moderation, /^input_image: the image classifier gives "nsfw" 1\.000, above 0\.9 \(safety_tolerance 3\)/);
  });
});

test("flux2 generate --moderation: blocked prompt or flagged output stops with BFL's status and writes nothing", () => {
  const dir = tmp();
  const file = moderationFile();
  const run = (args: string[]) => spawnSync(process.execPath, [cli, "generate", "--model", goldenPath("checkpoints/klein_distilled"), "--width", "64", "--height", "64",
    "--quiet", "--moderation", file, ...args], { cwd: dir, encoding: "utf8", timeout: 120_000 });
  let r = run(["--prompt", "forbidden FRUIT", "--out", "a.png"]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Request Moderated: the prompt contains a blocked word or phrase \("forbidden fruit"\)/);
  r = run(["--prompt", "a red fox", "--out", "b.png"]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Content Moderated: the image classifier gives "nsfw"/);
  r = run(["--prompt", "a red fox", "--out", "c.png", "--safety-tolerance", "6"]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(fs.readdirSync(dir), ["c.png"]);
  r = spawnSync(process.execPath, [cli, "generate", "--model", goldenPath("checkpoints/klein_distilled"), "--prompt", "x", "--safety-tolerance", "0"], { cwd: dir, encoding: "utf8" });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /--safety-tolerance: there is no moderation configured/);
});

describe("the yes/no LLM prompt check", () => {
  const model = goldenPath("checkpoints/klein_distilled");
  const llmFile = (answers: { yes: string; no: string }) => {
    const file = path.join(tmp(), "m.json");
    fs.writeFileSync(file, JSON.stringify({ llm: { system: "You are a careful reviewer.", prompt: "Is this prompt a problem? {prompt} Answer yes or no.", ...answers } }));
    return file;
  };

  test("the file: BFL's prompts by default, {prompt} required", () => {
    const c = parseModerationConfig({ llm: {} }, "m", os.tmpdir());
    assert.equal(c.llm!.prompt, DEFAULT_LLM_PROMPT);
    assert.match(c.llm!.prompt, /^Task: Analyze a text prompt/);
    assert.throws(() => parseModerationConfig({ llm: { prompt: "no placeholder" } }, "m", os.tmpdir()), /llm.prompt must contain \{prompt\}/);
  });

  test("the verdict is the uncached forward's yes-vs-no logit, and swapping the words flips it", async () => {
    const c = loadModerationConfig(llmFile({ yes: "yes", no: "no" })).llm!;
    const ck = openCheckpoint(model);
    const v = await llmPromptCheck(ck, "a red fox", c, new OrtBackend());
    // Independently: render with the tokenizer, run the plain (verified) encoder forward, read the last row.
    const tok = await PromptTokenizer.load(goldenPath("checkpoints/klein_distilled/tokenizer"));
    const ids = tok.tokenize(tok.renderMessages([{ role: "system", content: c.system }, { role: "user", content: "Is this prompt a problem? a red fox Answer yes or no." }]));
    const enc = await Qwen3Encoder.fromFiles(new OrtBackend(), goldenPath("checkpoints/klein_distilled/text_encoder"), null, { outputLayers: [], logits: true });
    const out = await enc.hiddenStates(BigInt64Array.from(ids, BigInt), new BigInt64Array(ids.length).fill(1n), 1, ids.length, [], { logits: true });
    await enc.release();
    const V = 384, last = (out.logits!.data as Float32Array).subarray((ids.length - 1) * V, ids.length * V);
    const [yes] = tok.tokenize("yes"), [no] = tok.tokenize("no");
    assert.ok(Math.abs(v.yesLogit - last[yes]) < 1e-4 && Math.abs(v.noLogit - last[no]) < 1e-4, JSON.stringify({ v, yes: last[yes], no: last[no] }));
    assert.equal(v.flagged, last[yes] > last[no]);
    const swapped = await llmPromptCheck(ck, "a red fox", { ...c, yes: "no", no: "yes" }, new OrtBackend());
    assert.equal(swapped.flagged, !v.flagged);
  });

  test("flux2 generate: the answer that flags stops the run as Request Moderated; the other lets it through", () => {
    const dir = tmp();
    const run = (file: string, out: string) => spawnSync(process.execPath, [cli, "generate", "--model", model, "--prompt", "a red fox", "--width", "64", "--height", "64",
      "--quiet", "--moderation", file, "--out", out], { cwd: dir, encoding: "utf8", timeout: 120_000 });
    const a = run(llmFile({ yes: "yes", no: "no" }), "a.png"), b = run(llmFile({ yes: "no", no: "yes" }), "b.png");
    const [flagged, passed] = a.status === 1 ? [a, b] : [b, a];
    assert.equal(flagged.status, 1, flagged.stderr);
    assert.match(flagged.stderr, /Request Moderated: the text encoder's yes\/no check answered/);
    assert.equal(passed.status, 0, passed.stderr);
    assert.equal(fs.readdirSync(dir).length, 1);
  });
});
