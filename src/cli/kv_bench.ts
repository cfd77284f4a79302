// flux2 bench-kv: the speed-up of KV-cached references over the plain path
// (docs/FLUX2-spec.md §6.4), measured on a random-weight transformer of a chosen width.

import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { OrtBackend } from "../backend/ort.js";
import { Flux2Transformer, TRANSFORMER_DEFAULTS, type TransformerConfig } from "../models/transformer.js";
import { Flux2KvTransformer } from "../models/transformer_kv.js";
import { latentIds, refIds, textIds } from "../pipeline/latents.js";
import { writeRandomTransformer } from "../bench/make_model.js";
import { randomTensor } from "../bench/rng.js";
import { medianTime } from "../bench/timer.js";
import { intOption } from "./common.js";

const HELP = `usage: flux2 bench-kv [--heads N] [--double N] [--single N] [--size PX] [--refs 1,4] [--steps N]

Times (median of 3 runs, after a warm-up) a denoising run with reference images two ways on random weights:
every step over [text ; target ; references] (the default path), and the
KV-cached path (step 0 extracts the references' keys/values, later steps
attend to the cache). The model is FLUX.2 klein-shaped (head dim 128, MLP
ratio 3, 7680-wide text features) with the given number of heads and blocks.

  --heads N      attention heads (width = 128·N; klein 9B has 32; default 8)
  --double N     double-stream blocks (default 1)
  --single N     single-stream blocks (default 2)
  --size PX      output and reference side in pixels (default 512)
  --refs LIST    reference counts to measure (default 1,4)
  --steps N      denoising steps (default 4)
  --text N       text tokens (default 512)`;

export async function runKvBenchCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      heads: { type: "string" }, double: { type: "string" }, single: { type: "string" }, size: { type: "string" },
      refs: { type: "string" }, steps: { type: "string" }, text: { type: "string" }, help: { type: "boolean", short: "h" },
    },
  });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const heads = intOption(v.heads, "heads", 1, 48) ?? 8;
  const size = intOption(v.size, "size", 64, 2048) ?? 512;
  const steps = intOption(v.steps, "steps", 2, 50) ?? 4;
  const L = intOption(v.text, "text", 1, 512) ?? 512;
  const refCounts = (v.refs ?? "1,4").split(",").map((x) => intOption(x, "refs", 1, 10)!);
  const config: TransformerConfig = {
    ...TRANSFORMER_DEFAULTS, num_attention_heads: heads, num_layers: intOption(v.double, "double", 0, 8) ?? 1,
    num_single_layers: intOption(v.single, "single", 0, 48) ?? 2, joint_attention_dim: 7680, guidance_embeds: false,
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-kvbench-"));
  try {
    writeRandomTransformer(dir, config, { seed: 1234 });
    const backend = new OrtBackend();
    const weights = path.join(dir, "diffusion_pytorch_model.safetensors");
    const plain = await Flux2Transformer.fromFiles(backend, weights, path.join(dir, "config.json"));
    const kv = Flux2KvTransformer.fromFiles(backend, weights, path.join(dir, "config.json"));
    const g = size / 16;
    const N = g * g;
    const text = randomTensor(7, [1, L, config.joint_attention_dim]);
    const x = randomTensor(8, [1, N, 128]);
    const base = { text, timestep: [1], imgIds: latentIds(1, g, g).data, txtIds: textIds(1, L).data };
    console.log(`model: ${heads} heads (width ${heads * 128}), ${config.num_layers} double + ${config.num_single_layers} single blocks; ${size}² output (${N} tokens), ${L} text tokens, ${steps} steps, references ${size}² each (${N} tokens)`);
    console.log("refs  plain s/step  kv extract s  kv cached s/step  plain total s  kv total s  speed-up");
    for (const R of refCounts) {
      const ref = randomTensor(9 + R, [1, R * N, 128]);
      const rIds = refIds(Array.from({ length: R }, () => ({ h: g, w: g }))).data;
      const allIds = new BigInt64Array([...base.imgIds, ...rIds]);
      const hidden = { data: new Float32Array([...x.data, ...ref.data]), shape: [1, N + R * N, 128] };
      await plain.forward({ ...base, hidden, imgIds: allIds }); // warm-up
      const [, tPlain] = await medianTime(() => plain.forward({ ...base, hidden, imgIds: allIds }));
      const res = await kv.extract({ ...base, hidden: x }, ref, rIds); // warm-up (builds the session)
      const [, tExtract] = await medianTime(() => kv.extract({ ...base, hidden: x }, ref, rIds));
      await kv.cached({ ...base, hidden: x }, res.cache); // warm-up
      const [, tCached] = await medianTime(() => kv.cached({ ...base, hidden: x }, res.cache));
      const plainTotal = steps * tPlain, kvTotal = tExtract + (steps - 1) * tCached;
      console.log(`${String(R).padStart(4)}  ${tPlain.toFixed(3).padStart(12)}  ${tExtract.toFixed(3).padStart(12)}  ${tCached.toFixed(3).padStart(16)}  ${plainTotal.toFixed(2).padStart(13)}  ${kvTotal.toFixed(2).padStart(10)}  ${(plainTotal / kvTotal).toFixed(2).padStart(7)}×`);
    }
    await plain.release();
    await kv.release();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return 0;
}
