// Tests of src/text/tokenizer.ts against the golden checkpoint / edit fixtures.
//
// Findings for the spec's [verify] items (docs/FLUX2-spec.md §2.1), settled on the fixtures:
// * Rendered chat: byte for byte `<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n`
//   in all five cases, for the template inside tokenizer_config.json (klein_distilled) and for
//   the separate chat_template.jinja (klein_base) alike. The empty negative prompt renders to
//   the same frame with nothing between `user\n` and `<|im_end|>` (69 bytes).
// * Special-token ids: the fixture tokenizer is a tiny Qwen-shaped vocabulary, so its ids are
//   not Qwen3's. Here <|endoftext|>=366, <|im_start|>=367, <|im_end|>=368, <think>=373,
//   </think>=374, each a single added token (the real Qwen3 ids 151643/151644/151645/151667/151668
//   follow the same layout but cannot be checked without the real tokenizer.json). The
//   implementation hard-codes no ids: it reads them from tokenizer.json, and the fixture ids
//   match exactly. No BOS/EOS is added (the post-processor is plain ByteLevel).
// * Padding: token <|endoftext|> (pad_token of tokenizer_config.json); side RIGHT. Neither
//   tokenizer_config.json sets padding_side, and every fixture row is 1…1 0…0 in the mask with
//   the pad id after the real tokens.
// * Truncation keeps the first L ids: klein_base__t2i prompt 1 (L=40) is cut mid-prompt, so its
//   mask is all ones and the assistant header is lost.

import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { PromptTokenizer } from "../src/text/tokenizer.js";
import { goldenPath, loadParams, loadTensors, type Loaded } from "./golden.js";

const DISTILLED = goldenPath("checkpoints/klein_distilled/tokenizer");
const BASE = goldenPath("checkpoints/klein_base/tokenizer");

const CASES = [
  "checkpoints/klein_distilled__t2i",
  "checkpoints/klein_base__t2i",
  "edit/klein_multi_ref",
  "edit/klein_kv",
  "edit/klein_inpaint",
];

function prompts(call: Record<string, any>): string[] {
  return Array.isArray(call.prompt) ? call.prompt : [call.prompt];
}

function tensor(tensors: Map<string, Loaded>, name: string): Loaded {
  const t = tensors.get(name);
  assert.ok(t, `expected tensor ${name} is missing`);
  return t;
}

function utf8(t: Loaded): string {
  return Buffer.from(t.data as Uint8Array).toString("utf8");
}

// Compares one side (prompt or negative) of a case: rendered strings, ids and mask.
function checkSide(tok: PromptTokenizer, tensors: Map<string, Loaded>, side: string, texts: string[], maxLength: number): void {
  const got = tok.encode(texts, maxLength);
  texts.forEach((_, b) => {
    const want = tensor(tensors, `${side}_rendered_${b}`).data as Uint8Array;
    assert.deepEqual(Buffer.from(got.rendered[b], "utf8"), Buffer.from(want), `${side}_rendered_${b}`);
  });
  const ids = tensor(tensors, `${side}_input_ids`);
  const mask = tensor(tensors, `${side}_attention_mask`);
  assert.deepEqual(ids.shape, [got.batch, got.length]);
  assert.deepEqual(got.inputIds, ids.data, `${side}_input_ids`);
  assert.deepEqual(got.attentionMask, mask.data, `${side}_attention_mask`);
}

for (const name of CASES) {
  test(`fixture ${name}: rendered strings, input ids and masks`, async () => {
    const params = loadParams(name);
    const tok = await PromptTokenizer.load(goldenPath(`${params.model.checkpoint}/tokenizer`));
    const tensors = loadTensors(`${name}.expected.safetensors`);
    const texts = prompts(params.call);
    const maxLength: number = params.call.max_sequence_length;
    checkSide(tok, tensors, "prompt", texts, maxLength);
    // CFG cases carry the encoding of the empty negative prompt, one per prompt.
    if (tensors.has("negative_input_ids")) {
      checkSide(tok, tensors, "negative", texts.map(() => ""), maxLength);
    }
  });
}

test("[verify] special-token ids, pad token and padding side in both folders", async () => {
  for (const dir of [DISTILLED, BASE]) {
    const tok = await PromptTokenizer.load(dir);
    assert.equal(tok.padToken, "<|endoftext|>");
    assert.equal(tok.padId, 366);
    assert.equal(tok.paddingSide, "right");
    const ids = tok.tokenize("<|im_start|><|im_end|><think></think>");
    assert.deepEqual(ids, [367, 368, 373, 374]);
  }
});

test("fixture masks are right-padded with the pad id", () => {
  for (const name of CASES) {
    const tensors = loadTensors(`${name}.expected.safetensors`);
    const ids = tensor(tensors, "prompt_input_ids").data as BigInt64Array;
    const mask = tensor(tensors, "prompt_attention_mask").data as BigInt64Array;
    const length = tensor(tensors, "prompt_input_ids").shape[1];
    for (let row = 0; row < ids.length / length; row++) {
      const m = [...mask.subarray(row * length, (row + 1) * length)];
      const real = m.filter((v) => v === 1n).length;
      assert.ok(m.every((v, i) => v === (i < real ? 1n : 0n)), `${name} row ${row}: mask is not 1…1 0…0`);
      for (let i = real; i < length; i++) assert.equal(ids[row * length + i], 366n);
    }
  }
});

test("the two template layouts render identically", async () => {
  const a = await PromptTokenizer.load(DISTILLED);
  const b = await PromptTokenizer.load(BASE);
  const prompt = "a lighthouse on a rocky coast at sunset";
  assert.equal(a.renderChat(prompt), b.renderChat(prompt));
  assert.equal(
    a.renderChat(prompt),
    `<|im_start|>user\n${prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n`,
  );
});

test("a very long prompt is truncated to L, keeping the first tokens, mask all ones", async () => {
  const tok = await PromptTokenizer.load(DISTILLED);
  const prompt = "A photo of a red fox sitting in the snow, 35mm. ".repeat(200);
  const L = 64;
  const full = tok.tokenize(tok.renderChat(prompt));
  assert.ok(full.length > 10 * L);
  assert.equal(tok.tokenCount(prompt), full.length);
  assert.equal(tok.truncated(prompt, L), true);
  assert.equal(tok.truncated("a fox", L), false);
  const got = tok.encode([prompt], L);
  assert.equal(got.length, L);
  assert.equal(got.inputIds.length, L);
  assert.deepEqual([...got.inputIds], full.slice(0, L).map(BigInt));
  assert.ok(got.attentionMask.every((v) => v === 1n));
});

test("tokenCount matches the number of real tokens of a short prompt", async () => {
  const tok = await PromptTokenizer.load(DISTILLED);
  const prompt = "a small red boat";
  const got = tok.encode([prompt], 48);
  const real = got.attentionMask.reduce((s, v) => s + v, 0n);
  assert.equal(Number(real), tok.tokenCount(prompt));
  assert.equal(tok.truncated(prompt, Number(real)), false);
  assert.equal(tok.truncated(prompt, Number(real) - 1), true);
});

test("JSON prompts, hex colours, emoji and other Unicode pass through rendering unchanged", async () => {
  const tok = await PromptTokenizer.load(BASE);
  const samples = [
    JSON.stringify({ scene: "a café at night", palette: ["#FF00AA", "#00ffcc"], "style": { "lens": "35mm" } }, null, 2),
    "logo in #FF00AA on #000000",
    "🦊 in the snow ❄️ — 雪の中の狐, Ελληνικά, עברית",
    "{{ not a template }} {% raw %} <b>html</b>",
  ];
  for (const prompt of samples) {
    const rendered = tok.renderChat(prompt);
    assert.equal(rendered, `<|im_start|>user\n${prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n`);
    assert.ok(tok.tokenCount(prompt) > 0);
  }
});

test("batch rows are independent and row-major", async () => {
  const tok = await PromptTokenizer.load(DISTILLED);
  const a = tok.encode(["first prompt"], 32);
  const b = tok.encode(["second, longer prompt with more words"], 32);
  const both = tok.encode(["first prompt", "second, longer prompt with more words"], 32);
  assert.equal(both.batch, 2);
  assert.deepEqual(both.inputIds.subarray(0, 32), a.inputIds);
  assert.deepEqual(both.inputIds.subarray(32), b.inputIds);
  assert.deepEqual(both.attentionMask.subarray(32), b.attentionMask);
});

// Scratch tokenizer folders built from the fixture files, removed after each test.
function scratchFolder(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-tok-"));
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  return dir;
}

function fixtureFile(name: string): string {
  return fs.readFileSync(path.join(DISTILLED, name), "utf8");
}

function configWith(changes: Record<string, unknown>): string {
  const config = JSON.parse(fixtureFile("tokenizer_config.json"));
  for (const [k, v] of Object.entries(changes)) {
    if (v === undefined) delete config[k];
    else config[k] = v;
  }
  return JSON.stringify(config);
}

async function rejectsWith(dir: string, pattern: RegExp): Promise<void> {
  try {
    await assert.rejects(PromptTokenizer.load(dir), (e: Error) => {
      assert.match(e.message, pattern);
      assert.ok(e.message.includes(dir), `message should name the folder: ${e.message}`);
      return true;
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test("a missing tokenizer.json gives a clear error", async () => {
  const dir = scratchFolder({ "tokenizer_config.json": fixtureFile("tokenizer_config.json") });
  await rejectsWith(dir, /has no tokenizer\.json.*tokenizer\/ folder/);
});

test("an unparsable tokenizer.json gives a clear error", async () => {
  const dir = scratchFolder({
    "tokenizer.json": fixtureFile("tokenizer.json").slice(0, 500),
    "tokenizer_config.json": fixtureFile("tokenizer_config.json"),
  });
  await rejectsWith(dir, /tokenizer\.json is not valid JSON.*download it again/);
});

test("a folder without any chat template gives a clear error", async () => {
  const dir = scratchFolder({
    "tokenizer.json": fixtureFile("tokenizer.json"),
    "tokenizer_config.json": configWith({ chat_template: undefined }),
  });
  await rejectsWith(dir, /no chat template.*chat_template\.jinja/);
});

test("chat_template.jinja takes precedence over the config's chat_template", async () => {
  const dir = scratchFolder({
    "tokenizer.json": fixtureFile("tokenizer.json"),
    "tokenizer_config.json": configWith({ chat_template: "CONFIG {{ messages[0].content }}" }),
    "chat_template.jinja": "FILE {{ messages[0].content }}{{ eos_token }}",
  });
  try {
    const tok = await PromptTokenizer.load(dir);
    assert.equal(tok.renderChat("x"), "FILE x<|im_end|>");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("padding_side left from tokenizer_config.json puts the padding first", async () => {
  const dir = scratchFolder({
    "tokenizer.json": fixtureFile("tokenizer.json"),
    "tokenizer_config.json": configWith({ padding_side: "left" }),
  });
  try {
    const tok = await PromptTokenizer.load(dir);
    const right = (await PromptTokenizer.load(DISTILLED)).encode(["a fox"], 24);
    const left = tok.encode(["a fox"], 24);
    const n = Number(right.attentionMask.reduce((s, v) => s + v, 0n));
    assert.deepEqual(left.inputIds.subarray(24 - n), right.inputIds.subarray(0, n));
    assert.ok(left.inputIds.subarray(0, 24 - n).every((v) => v === 366n));
    assert.ok(left.attentionMask.subarray(0, 24 - n).every((v) => v === 0n));
    assert.ok(left.attentionMask.subarray(24 - n).every((v) => v === 1n));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("an invalid maxLength is rejected", async () => {
  const tok = await PromptTokenizer.load(DISTILLED);
  assert.throws(() => tok.encode(["x"], 0), RangeError);
  assert.throws(() => tok.encode(["x"], 1.5), RangeError);
});
