// Peak memory of one LoRA training step on a random transformer, for docs/training.md:
//
//   node dist/src/bench/memory_probe.js wide|long|heads [--checkpoint] [--keep-conversions] [--attention-mb N] [--ratio N]
//
// Run each variant in a fresh process (maxRSS only grows). "wide": 157M parameters (2 double
// + 6 single blocks, 8 heads) at 1,088 tokens, where weights dominate; "long": 16 blocks of
// one 128-dim head at 4,160 tokens, where activations dominate; "heads": 3 blocks of 16 heads
// of 32 dims at 4,160 tokens, where the attention backward's score matrices dominate
// (--attention-mb sets their budget, GradientOptions.attentionChunkBytes). --ratio N then times N
// more steps and N inference forwards of the same shape, alternating, and prints the fastest of
// each (on a shared CPU the minimum is the least disturbed). The random checkpoints
// (bf16, src/bench/make_model.ts) are written once under $FLUX2_CACHE/random/.

import * as path from "node:path";
import { OrtBackend, cacheRoot } from "../backend/ort.js";
import { MODEL_SPECS, makeRandomModel } from "./make_model.js";
import { randn } from "../util/random.js";
import { Flux2Transformer } from "../models/transformer.js";
import { latentIds, textIds } from "../pipeline/latents.js";
import { DEFAULT_LORA_TARGETS, TransformerTrainer } from "../train/step.js";

const SHAPES = {
  wide: { layers: { num_layers: 2, num_single_layers: 6, num_attention_heads: 8, joint_attention_dim: 1024 }, side: 32, text: 64 },
  long: { layers: { num_layers: 4, num_single_layers: 12, num_attention_heads: 1, joint_attention_dim: 128 }, side: 64, text: 64 },
  heads: { layers: { num_layers: 1, num_single_layers: 2, num_attention_heads: 16, attention_head_dim: 32, axes_dims_rope: [8, 8, 8, 8], joint_attention_dim: 128 }, side: 64, text: 64 },
};

async function main(): Promise<void> {
  const [which, ...flags] = process.argv.slice(2);
  const probe = SHAPES[which as keyof typeof SHAPES];
  if (!probe) throw new Error("usage: memory_probe wide|long|heads [--checkpoint] [--keep-conversions] [--attention-mb N]");
  const mb = flags.indexOf("--attention-mb");
  const attentionChunkBytes = mb >= 0 ? Number(flags[mb + 1]) * 2 ** 20 : undefined;
  const quick = MODEL_SPECS.quick;
  const spec = { ...quick, transformer: { ...quick.transformer, ...probe.layers } };
  const dir = path.join(cacheRoot(), "random", `train-probe-${which}`);
  makeRandomModel(spec, dir);
  const checkpointActivations = flags.includes("--checkpoint");
  const reconvertWeights = !flags.includes("--keep-conversions");
  const trainer = await TransformerTrainer.open(new OrtBackend(), path.join(dir, "transformer"), null,
    { kind: "lora", targets: [...DEFAULT_LORA_TARGETS], rank: 16, alpha: 16 }, { checkpointActivations, reconvertWeights, attentionChunkBytes, seed: 1 });
  const C = spec.transformer.in_channels, side = probe.side, L = probe.text, J = spec.transformer.joint_attention_dim;
  const n = C * side * side;
  const t0 = performance.now();
  const r = await trainer.lossAndGrads({
    x0: randn(1, n), shape: [1, C, side, side], embeds: randn(2, L * J), embedShape: [1, L, J], noise: randn(3, n), sigmas: Float32Array.of(0.5),
  });
  const seconds = (performance.now() - t0) / 1000;
  const peakRssMB = Math.round(process.resourceUsage().maxRSS / 1024);
  const ri = flags.indexOf("--ratio");
  let timing: { forwardSeconds: number; stepSeconds: number; ratio: number } | undefined;
  if (ri >= 0) {
    const runs = Number(flags[ri + 1] ?? 3);
    const fwd = await Flux2Transformer.fromFiles(new OrtBackend(), path.join(dir, "transformer", "diffusion_pytorch_model.safetensors"), path.join(dir, "transformer", "config.json"));
    const input = { hidden: { data: randn(4, n), shape: [1, side * side, C] }, text: { data: randn(2, L * J), shape: [1, L, J] }, timestep: [0.5], imgIds: latentIds(1, side, side).data, txtIds: textIds(1, L).data };
    await fwd.forward(input);
    let f = Infinity, s = Infinity;
    for (let i = 0; i < runs; i++) {
      let t = performance.now();
      await fwd.forward(input);
      f = Math.min(f, (performance.now() - t) / 1000);
      t = performance.now();
      await trainer.lossAndGrads({ x0: randn(1, n), shape: [1, C, side, side], embeds: randn(2, L * J), embedShape: [1, L, J], noise: randn(3, n), sigmas: Float32Array.of(0.5) });
      s = Math.min(s, (performance.now() - t) / 1000);
    }
    await fwd.release();
    timing = { forwardSeconds: +f.toFixed(2), stepSeconds: +s.toFixed(2), ratio: +(s / f).toFixed(2) };
  }
  await trainer.release();
  console.log(JSON.stringify({ probe: which, checkpointActivations, reconvertWeights, attentionMB: attentionChunkBytes ? attentionChunkBytes / 2 ** 20 : 256, loss: r.loss, tokens: side * side + L,
    peakRssMB, firstStepSeconds: +seconds.toFixed(1), ...timing }));
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
