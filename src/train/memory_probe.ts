// Peak memory of one LoRA training step on a random transformer, for docs/training.md:
//
//   node dist/src/train/memory_probe.js wide|long|heads [--checkpoint] [--keep-conversions] [--attention-mb N]
//
// Run each variant in a fresh process (maxRSS only grows). "wide": 157M parameters (2 double
// + 6 single blocks, 8 heads) at 1,088 tokens, where weights dominate; "long": 16 blocks of
// one 128-dim head at 4,160 tokens, where activations dominate; "heads": 3 blocks of 16 heads
// of 32 dims at 4,160 tokens, where the attention backward's score matrices dominate
// (--attention-mb sets their budget, GradientOptions.attentionChunkBytes). The random checkpoints
// (bf16, src/bench/make_model.ts) are written once under $FLUX2_CACHE/random/.

import * as path from "node:path";
import { OrtBackend, cacheRoot } from "../backend/ort.js";
import { MODEL_SPECS, makeRandomModel } from "../bench/make_model.js";
import { randn } from "../util/random.js";
import { DEFAULT_LORA_TARGETS, TransformerTrainer } from "./step.js";

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
  await trainer.release();
  console.log(JSON.stringify({ probe: which, checkpointActivations, reconvertWeights, attentionMB: attentionChunkBytes ? attentionChunkBytes / 2 ** 20 : 256, loss: r.loss, tokens: side * side + L,
    peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024), firstStepSeconds: +seconds.toFixed(1) }));
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
