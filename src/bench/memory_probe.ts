// Peak memory of one LoRA training step on a random transformer, for docs/training.md:
//
//   node dist/src/bench/memory_probe.js wide|long|heads|klein [--checkpoint] [--keep-conversions] [--attention-mb N] [--ratio N]
//        [--double N --single N --side N --text N] [--no-arena] [--mem-pattern] [--opt LEVEL] [--steps N] [--trace] [--profile]
//        [--matmul bf16]
//
// Run each variant in a fresh process (maxRSS only grows). "wide": 157M parameters (2 double
// + 6 single blocks, 8 heads) at 1,088 tokens, where weights dominate; "long": 16 blocks of
// one 128-dim head at 4,160 tokens, where activations dominate; "heads": 3 blocks of 16 heads
// of 32 dims at 4,160 tokens, where the attention backward's score matrices dominate
// (--attention-mb sets their budget, GradientOptions.attentionChunkBytes). --ratio N then times N
// more steps and N inference forwards of the same shape, alternating, and prints the fastest of
// each (on a shared CPU the minimum is the least disturbed). "klein": klein-4B's real width at
// 512² with 512 text tokens, --double / --single blocks (default 2 + 2), for measuring per block
// and extrapolating to the whole model. --no-arena / --opt set ORT's session options and
// --mem-pattern turns ORT's memory pattern back on (the trainer turns it off); --steps N runs N steps in one session; --trace prints resident memory while the graph
// is built; --profile writes ORT's profile to /tmp; --matmul bf16 trains through NativeOrtBackend with
// bf16 products (`flux2 train --matmul bf16`; the inference forwards of --ratio stay float32). The random checkpoints
// (bf16, src/bench/make_model.ts) are written once under $FLUX2_CACHE/random/.

import * as fs from "node:fs";
import * as path from "node:path";
import type { Backend } from "../backend/backend.js";
import { OrtBackend, cacheRoot } from "../backend/ort.js";
import { NativeOrtBackend } from "../backend/ort_native.js";
import { MODEL_SPECS, makeRandomModel } from "./make_model.js";
import { randn } from "../util/random.js";
import { Flux2Transformer } from "../models/transformer.js";
import { latentIds, textIds } from "../pipeline/latents.js";
import { DEFAULT_LORA_TARGETS, TransformerTrainer } from "../train/step.js";

const SHAPES = {
  wide: { layers: { num_layers: 2, num_single_layers: 6, num_attention_heads: 8, joint_attention_dim: 1024 }, side: 32, text: 64 },
  long: { layers: { num_layers: 4, num_single_layers: 12, num_attention_heads: 1, joint_attention_dim: 128 }, side: 64, text: 64 },
  heads: { layers: { num_layers: 1, num_single_layers: 2, num_attention_heads: 16, attention_head_dim: 32, axes_dims_rope: [8, 8, 8, 8], joint_attention_dim: 128 }, side: 64, text: 64 },
  // A slice of klein-4B at its real width (3072, 24 heads, MLP 9216, text 7680) at 512² with 512
  // text tokens; --double N --single M set the block counts (default 2 + 2), so that memory per
  // block can be measured on slices and extrapolated to the 5 + 20 blocks of the whole model.
  klein: { layers: { ...MODEL_SPECS["klein-4b"].transformer, num_layers: 2, num_single_layers: 2 }, side: 32, text: 512 },
};

function intFlag(flags: string[], name: string): number | undefined {
  const i = flags.indexOf(name);
  if (i < 0) return undefined;
  const v = Number(flags[i + 1]);
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${name} needs a non-negative integer, got ${flags[i + 1]}`);
  return v;
}

async function main(): Promise<void> {
  const [which, ...flags] = process.argv.slice(2);
  const probe = SHAPES[which as keyof typeof SHAPES];
  if (!probe) throw new Error("usage: memory_probe wide|long|heads|klein [--checkpoint] [--keep-conversions] [--attention-mb N] [--ratio N] [--double N --single N --side N --text N] [--no-arena] [--mem-pattern] [--opt LEVEL] [--steps N] [--trace] [--profile] [--matmul bf16]");
  const mb = flags.indexOf("--attention-mb");
  const attentionChunkBytes = mb >= 0 ? Number(flags[mb + 1]) * 2 ** 20 : undefined;
  const quick = MODEL_SPECS.quick;
  const layers = { ...probe.layers, num_layers: intFlag(flags, "--double") ?? probe.layers.num_layers, num_single_layers: intFlag(flags, "--single") ?? probe.layers.num_single_layers };
  const side = intFlag(flags, "--side") ?? probe.side, L = intFlag(flags, "--text") ?? probe.text;
  const spec = { ...quick, transformer: { ...quick.transformer, ...layers } };
  const dir = path.join(cacheRoot(), "random", `train-probe-${which}-${layers.num_layers}-${layers.num_single_layers}`);
  makeRandomModel(spec, dir);
  const checkpointActivations = flags.includes("--checkpoint");
  const reconvertWeights = !flags.includes("--keep-conversions");
  const oi = flags.indexOf("--opt");
  const ort = {
    memArena: flags.includes("--no-arena") ? false : undefined, memPattern: flags.includes("--mem-pattern") ? true : undefined,
    optimization: oi >= 0 ? (flags[oi + 1] as "disabled" | "basic" | "extended" | "all") : undefined,
    profilePrefix: flags.includes("--profile") ? `/tmp/train-probe-${which}` : undefined,
  };
  // --trace: resident memory every 2 s on stderr (where in the step the memory goes).
  const t00 = performance.now();
  const trace = flags.includes("--trace") ? setInterval(() => {
    const st = fs.readFileSync("/proc/self/status", "utf8");
    const mb = (k: string) => Math.round(Number(st.match(new RegExp(`${k}:\\s+(\\d+)`))?.[1] ?? 0) / 1024);
    console.error(`t=${((performance.now() - t00) / 1000).toFixed(0)}s anon ${mb("RssAnon")} MB file ${mb("RssFile")} MB`);
  }, 2000) : undefined;
  const bf16 = flags[flags.indexOf("--matmul") + 1] === "bf16" && flags.includes("--matmul");
  const backend: Backend = bf16 ? new NativeOrtBackend({ trainingMatmul: "bf16", optimization: ort.optimization }) : new OrtBackend(ort);
  if (trace) {
    const create = backend.createSession.bind(backend);
    backend.createSession = async (g, o) => {
      console.error(`t=${((performance.now() - t00) / 1000).toFixed(0)}s creating the session (${g.nodes.length} nodes)`);
      const s = await create(g, o);
      console.error(`t=${((performance.now() - t00) / 1000).toFixed(0)}s session ready; running`);
      return s;
    };
  }
  const trainer = await TransformerTrainer.open(backend, path.join(dir, "transformer"), null,
    { kind: "lora", targets: [...DEFAULT_LORA_TARGETS], rank: 16, alpha: 16 }, { checkpointActivations, reconvertWeights, attentionChunkBytes, seed: 1, memPattern: flags.includes("--mem-pattern") });
  const C = spec.transformer.in_channels, J = spec.transformer.joint_attention_dim;
  const n = C * side * side;
  const t0 = performance.now();
  const r = await trainer.lossAndGrads({
    x0: randn(1, n), shape: [1, C, side, side], embeds: randn(2, L * J), embedShape: [1, L, J], noise: randn(3, n), sigmas: Float32Array.of(0.5),
  });
  const seconds = (performance.now() - t0) / 1000;
  const peakRssMB = Math.round(process.resourceUsage().maxRSS / 1024);
  // After the step: anonymous memory (activations, arena, copies) vs file pages (the mapped weights).
  const status = fs.readFileSync("/proc/self/status", "utf8");
  const kbOf = (k: string) => Math.round(Number(status.match(new RegExp(`${k}:\\s+(\\d+)`))?.[1] ?? 0) / 1024);
  const afterStep = { rssAnonMB: kbOf("RssAnon"), rssFileMB: kbOf("RssFile") };
  // --steps N: N − 1 more steps in the same session, with the anonymous memory after each (ORT's
  // memory pattern is made by the first run and used from the second on).
  const more: { step: number; seconds: number; rssAnonMB: number; peakRssMB: number }[] = [];
  for (let i = 1; i < (intFlag(flags, "--steps") ?? 1); i++) {
    const t = performance.now();
    await trainer.lossAndGrads({ x0: randn(1, n), shape: [1, C, side, side], embeds: randn(2, L * J), embedShape: [1, L, J], noise: randn(3, n), sigmas: Float32Array.of(0.5) });
    const st = fs.readFileSync("/proc/self/status", "utf8");
    const anon = Math.round(Number(st.match(/RssAnon:\s+(\d+)/)?.[1] ?? 0) / 1024);
    more.push({ step: i + 1, seconds: +((performance.now() - t) / 1000).toFixed(1), rssAnonMB: anon, peakRssMB: Math.round(process.resourceUsage().maxRSS / 1024) });
  }
  const ri = flags.indexOf("--ratio");
  let timing: { forwardSeconds: number; stepSeconds: number; ratio: number } | undefined;
  if (ri >= 0) {
    const runs = Number(flags[ri + 1] ?? 3);
    const fwd = await Flux2Transformer.fromFiles(new OrtBackend(ort), path.join(dir, "transformer", "diffusion_pytorch_model.safetensors"), path.join(dir, "transformer", "config.json"));
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
  if (trace) clearInterval(trace);
  console.log(JSON.stringify({ probe: which, matmul: bf16 ? "bf16" : "fp32", blocks: [layers.num_layers, layers.num_single_layers], ort, checkpointActivations, reconvertWeights, attentionMB: attentionChunkBytes ? attentionChunkBytes / 2 ** 20 : 256, loss: r.loss, tokens: side * side + L,
    peakRssMB, ...afterStep, firstStepSeconds: +seconds.toFixed(1), ...(more.length ? { moreSteps: more } : {}), ...timing }));
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
