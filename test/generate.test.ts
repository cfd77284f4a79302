// Text generation (src/text/generate.ts) on the tiny golden Qwen3 text encoder:
// the KV-cached decoding graph against the verified forward pass (the same
// decoder graph without a cache, checked against the reference fixtures in
// qwen3.test.ts), the logits against a hand computation from the final hidden
// state and the tied embedding, and the sampling rules.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import { OrtBackend } from "../src/backend/ort.js";
import { WeightSet } from "../src/io/safetensors.js";
import { Qwen3Encoder, Qwen3Weights, readQwen3Config } from "../src/models/qwen3.js";
import { TextGenerator, lmHeadProblem, sampleToken } from "../src/text/generate.js";
import { Xoshiro128 } from "../src/util/random.js";
import { goldenPath } from "./golden.js";

const dir = goldenPath("checkpoints/klein_distilled/text_encoder");
const config = readQwen3Config(path.join(dir, "config.json"));
const V = config.vocab_size;
const PROMPT = [366, 17, 250, 3, 99, 120, 45];
let gen: TextGenerator, enc: Qwen3Encoder;

before(async () => {
  const backend = new OrtBackend();
  gen = await TextGenerator.create(config, new Qwen3Weights(WeightSet.open(dir)), backend);
  enc = await Qwen3Encoder.fromFiles(backend, dir, null, { outputLayers: [], finalNorm: true, logits: true });
});
after(async () => {
  await gen?.release();
  await enc?.release();
});

/** Full-sequence logits (N, V) and final hidden states from the uncached graph. */
async function fullForward(ids: number[]) {
  const n = ids.length;
  const out = await enc.hiddenStates(BigInt64Array.from(ids, BigInt), new BigInt64Array(n).fill(1n), 1, n, [], { finalNorm: true, logits: true });
  return { logits: out.logits!.data as Float32Array, hidden: out.lastHiddenState!.data as Float32Array };
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

test("logits are the final hidden state times the tied embedding (hand computation)", async () => {
  assert.equal(config.tie_word_embeddings, true);
  const { logits, hidden } = await fullForward(PROMPT);
  const table = WeightSet.open(dir).float32("model.embed_tokens.weight");
  const D = config.hidden_size;
  for (let t = 0; t < PROMPT.length; t++) {
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += hidden[t * D + d] * table[v * D + d];
      assert.ok(Math.abs(s - logits[t * V + v]) < 1e-4, `t=${t} v=${v}: ${s} vs ${logits[t * V + v]}`);
    }
  }
});

test("KV-cached decoding gives the uncached forward's logits at every position", async () => {
  const { logits } = await fullForward(PROMPT);
  const cache = gen.newCache();
  // Prefill three tokens, then one at a time.
  let got = await gen.forward(PROMPT.slice(0, 3), cache);
  assert.ok(maxDiff(got, logits.subarray(2 * V, 3 * V)) < 1e-4);
  for (let t = 3; t < PROMPT.length; t++) {
    got = await gen.forward([PROMPT[t]], cache);
    assert.equal(cache.length, t + 1);
    const d = maxDiff(got, logits.subarray(t * V, (t + 1) * V));
    assert.ok(d < 1e-4, `position ${t}: max |Δ| ${d}`);
  }
});

test("greedy generation is the argmax chain of the uncached forward; the token limit holds", async () => {
  const out = await gen.generate(PROMPT, { maxNewTokens: 6 });
  assert.equal(out.finish, "length");
  assert.equal(out.tokens.length, 6);
  const { logits } = await fullForward([...PROMPT, ...out.tokens.slice(0, -1)]);
  for (const [i, tok] of out.tokens.entries()) {
    const row = logits.subarray((PROMPT.length - 1 + i) * V, (PROMPT.length + i) * V);
    assert.equal(tok, row.indexOf(Math.max(...row)), `token ${i}`);
  }
  // A stop token ends generation before it is emitted.
  const stopped = await gen.generate(PROMPT, { maxNewTokens: 6, stopTokens: [out.tokens[2]] });
  assert.equal(stopped.finish, "stop");
  assert.deepEqual(stopped.tokens, out.tokens.slice(0, out.tokens.indexOf(out.tokens[2])));
});

test("sampling: a seed reproduces, seeds differ, a tiny top_p is greedy", async () => {
  const opts = { maxNewTokens: 8, temperature: 1.5, topP: 0.95 };
  const a = await gen.generate(PROMPT, { ...opts, seed: 1 });
  assert.deepEqual(await gen.generate(PROMPT, { ...opts, seed: 1 }), a);
  const others = await Promise.all([2, 3, 4].map((seed) => gen.generate(PROMPT, { ...opts, seed })));
  assert.ok(others.some((o) => o.tokens.join() !== a.tokens.join()), "different seeds gave the same text every time");
  const greedy = await gen.generate(PROMPT, { maxNewTokens: 8 });
  assert.deepEqual(await gen.generate(PROMPT, { maxNewTokens: 8, temperature: 1, topP: 1e-9, seed: 5 }), greedy);
});

test("sampleToken: top_p keeps the smallest most-likely set reaching top_p", () => {
  // Probabilities ∝ e^l: with l = ln p, softmax gives back p = [0.5, 0.3, 0.15, 0.05].
  const logits = Float32Array.from([0.5, 0.3, 0.15, 0.05].map(Math.log));
  const rng = new Xoshiro128(7);
  const seen = new Set<number>();
  for (let i = 0; i < 400; i++) seen.add(sampleToken(logits, { temperature: 1, topP: 0.8 }, rng));
  assert.deepEqual([...seen].sort(), [0, 1]); // 0.5 + 0.3 reaches 0.8
  for (let i = 0; i < 400; i++) seen.add(sampleToken(logits, { temperature: 1 }, rng));
  assert.deepEqual([...seen].sort(), [0, 1, 2, 3]);
  assert.equal(sampleToken(logits, {}, rng), 0);
  assert.throws(() => sampleToken(logits, { temperature: 1, topP: 0 }, rng), /top_p must be in \(0, 1\]/);
});

test("sampleToken: top_k keeps the k most likely before top_p (transformers' order)", () => {
  const logits = Float32Array.from([0.5, 0.3, 0.15, 0.05].map(Math.log));
  const rng = new Xoshiro128(8);
  const draw = (o: { topK?: number; topP?: number }) => {
    const seen = new Set<number>();
    for (let i = 0; i < 400; i++) seen.add(sampleToken(logits, { temperature: 1, ...o }, rng));
    return [...seen].sort();
  };
  assert.deepEqual(draw({ topK: 1 }), [0]);
  assert.deepEqual(draw({ topK: 3 }), [0, 1, 2]);
  // top_p over what top_k kept, renormalised: 0.5/0.95 + 0.3/0.95 = 0.84 reaches 0.83, 0.5/0.95 does not.
  assert.deepEqual(draw({ topK: 3, topP: 0.83 }), [0, 1]);
  assert.deepEqual(draw({ topK: 0 }), [0, 1, 2, 3]);
  assert.throws(() => sampleToken(logits, { temperature: 1, topK: -1 }, rng), /top_k must be a whole number/);
});

test("a checkpoint without lm_head and without tied embeddings is refused with a clear message", () => {
  const untied = { ...config, tie_word_embeddings: false };
  assert.match(lmHeadProblem(untied, new Qwen3Weights(WeightSet.open(dir)))!, /no lm_head \("lm_head.weight"\) and does not tie it to the embeddings.*cannot generate text/);
  assert.equal(lmHeadProblem(config, new Qwen3Weights(WeightSet.open(dir))), null);
});
