// Cost of LoRA on session building and on the forward pass, fused vs runtime.
//
//   node dist/src/bench/lora.js [--big] [--reps N]
//
// Always measures the golden tiny klein transformer with the golden LoRAs (diffusers +
// BFL stacked). With --big it also writes a synthetic ~0.5B-parameter FLUX.2-shaped
// checkpoint (random bf16, diffusers names) and a rank-16 ai-toolkit LoRA on every
// attention / MLP projection into a temporary folder, and measures that (fused weights
// spilled to a file, since in memory they would exceed the protobuf limit).

import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { OrtBackend } from "../backend/ort.js";
import type { Backend } from "../backend/backend.js";
import { WeightSet } from "../io/safetensors.js";
import { writeRandomTransformer } from "./make_model.js";
import { randomTensor, seedFor } from "./rng.js";
import { median, timed } from "./timer.js";
import { Flux2Transformer, innerDim, mlpDim, readTransformerConfig, type TransformerConfig, type TransformerInputs, TRANSFORMER_DEFAULTS } from "../models/transformer.js";
import { TransformerWeights } from "../models/transformer_weights.js";
import { loadLoraFile, parseLora, type LoraAdapter, type LoraTensor } from "../lora/formats.js";
import { attachRuntimeLoras, fuseLoras, fuseLorasWith, type AdapterUse } from "../lora/apply.js";

export const BIG_CONFIG: TransformerConfig = {
  ...TRANSFORMER_DEFAULTS, in_channels: 64, num_layers: 4, num_single_layers: 8, num_attention_heads: 12,
  attention_head_dim: 128, joint_attention_dim: 1536, guidance_embeds: false,
};

const args = process.argv.slice(2);
const reps = Number(args[args.indexOf("--reps") + 1]) || 5;
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** `fn`'s result and wall time in milliseconds (the shared stopwatch, src/bench/timer.ts). */
async function time<T>(fn: () => Promise<T> | T): Promise<[T, number]> {
  const [r, seconds] = await timed(fn);
  return [r, seconds * 1000];
}

type Mode = "no LoRA" | "fused" | "runtime";

/**
 * Build times and forward times per mode. Modes are interleaved round by round (builds),
 * and forward passes of the three live sessions alternate, so that load from other
 * processes on the machine affects every mode alike.
 */
async function measure(
  backend: Backend, label: string, weightsPath: string, config: TransformerConfig, inputs: TransformerInputs,
  uses: AdapterUse[], spillDir: string | null, n: number,
): Promise<void> {
  const set = WeightSet.open(weightsPath);
  const modes: Mode[] = ["no LoRA", "fused", "runtime"];
  const prep = new Map<Mode, number[]>(modes.map((m) => [m, []]));
  const build = new Map<Mode, number[]>(modes.map((m) => [m, []]));
  const fwd = new Map<Mode, number[]>(modes.map((m) => [m, []]));
  let spills = 0;
  const make = async (mode: Mode) => {
    const weights = new TransformerWeights(set, "diffusers");
    const [runtime, prepSeconds] = await timed(async () => {
      if (mode === "runtime") return attachRuntimeLoras(weights, uses);
      if (mode === "fused") {
        const spillFile = spillDir ? path.join(spillDir, `fused-${spills++}.safetensors`) : undefined;
        await fuseLorasWith(backend, weights, uses, 1, { spillFile });
      }
      return null;
    });
    const [model, buildSeconds] = await timed(() => Flux2Transformer.load(backend, config, weights));
    prep.get(mode)!.push(prepSeconds * 1000);
    build.get(mode)!.push(buildSeconds * 1000);
    return { model, runtime };
  };
  let jsFuse = 0, switchCost = 0;
  try {
    for (let r = 0; r < n; r++) {
      for (const mode of modes) await (await make(mode)).model.release();
    }
    {
      const w = new TransformerWeights(set, "diffusers");
      const spillFile = spillDir ? path.join(spillDir, "fused-js.safetensors") : undefined;
      jsFuse = (await time(() => fuseLoras(w, uses, 1, { spillFile })))[1];
    }
    const live = new Map<Mode, Awaited<ReturnType<typeof make>>>();
    for (const mode of modes) live.set(mode, await make(mode));
    try {
      for (const mode of modes) await live.get(mode)!.model.forward(inputs); // warm-up
      for (let r = 0; r < n; r++) {
        for (const mode of modes) fwd.get(mode)!.push((await time(() => live.get(mode)!.model.forward(inputs)))[1]);
      }
      // Changing a runtime strength (here: disabling the first adapter) costs only the next run.
      const rt = live.get("runtime")!;
      switchCost = (await time(async () => {
        rt.runtime!.setWeight(uses[0].adapter.name, 0);
        await rt.model.forward(inputs);
      }))[1];
    } finally {
      for (const l of live.values()) await l.model.release();
    }
  } finally {
    set.close();
  }
  console.log(`\n${label}`);
  console.log("mode        prepare (ms)  build session (ms)  forward (ms)");
  for (const mode of modes) {
    const what = mode === "fused" ? `fused${spillDir ? "*" : ""}` : mode;
    console.log(`${what.padEnd(10)} ${median(prep.get(mode)!).toFixed(1).padStart(13)}  ${median(build.get(mode)!).toFixed(1).padStart(18)}  ${median(fwd.get(mode)!).toFixed(1).padStart(12)}`);
  }
  console.log(`fused: prepare = fuseLorasWith (backend MatMul)${spillDir ? ", fused weights spilled to a float32 file" : ""}; the same fuse in JS (fuseLoras): ${jsFuse.toFixed(1)} ms`);
  console.log(`runtime: changing a strength (disable "${uses[0].adapter.name}") + next forward: ${switchCost.toFixed(1)} ms, no rebuild`);
}

function tinyInputs(): TransformerInputs {
  const dir = path.join(root, "testdata/golden/lora");
  const set = WeightSet.open(path.join(dir, "base.inputs.safetensors"));
  const f = (n: string) => set.float32(n);
  const ids = (n: string) => new BigInt64Array(set.bytes(n).buffer.slice(0, set.info(n).byteLength));
  const inp: TransformerInputs = {
    hidden: { data: f("hidden_states"), shape: set.info("hidden_states").shape },
    text: { data: f("encoder_hidden_states"), shape: set.info("encoder_hidden_states").shape },
    timestep: f("timestep"), imgIds: ids("img_ids"), txtIds: ids("txt_ids"),
  };
  set.close();
  return inp;
}

/** A rank-r ai-toolkit (BFL names) LoRA on every attention / MLP projection. */
export function syntheticLora(c: TransformerConfig, rank: number): LoraAdapter {
  const D = innerDim(c), M = mlpDim(c);
  const t = new Map<string, LoraTensor>();
  const add = (m: string, out: number, inF: number) => {
    t.set(`diffusion_model.${m}.lora_A.weight`, randomTensor(seedFor(`${m}.A`, 2), [rank, inF], 0.3 / Math.sqrt(inF)));
    t.set(`diffusion_model.${m}.lora_B.weight`, randomTensor(seedFor(`${m}.B`, 2), [out, rank], 0.03));
  };
  for (let i = 0; i < c.num_layers; i++) {
    for (const s of ["img", "txt"]) {
      add(`double_blocks.${i}.${s}_attn.qkv`, 3 * D, D);
      add(`double_blocks.${i}.${s}_attn.proj`, D, D);
      add(`double_blocks.${i}.${s}_mlp.0`, 2 * M, D);
      add(`double_blocks.${i}.${s}_mlp.2`, D, M);
    }
  }
  for (let i = 0; i < c.num_single_layers; i++) {
    add(`single_blocks.${i}.linear1`, 3 * D + 2 * M, D);
    add(`single_blocks.${i}.linear2`, D, D + M);
  }
  return parseLora(t, {}, { name: "synthetic" });
}

export function syntheticInputs(c: TransformerConfig, sImg: number, sTxt: number): TransformerInputs {
  const imgIds = new BigInt64Array(sImg * 4), txtIds = new BigInt64Array(sTxt * 4);
  const side = Math.ceil(Math.sqrt(sImg));
  for (let i = 0; i < sImg; i++) { imgIds[i * 4 + 1] = BigInt(Math.floor(i / side)); imgIds[i * 4 + 2] = BigInt(i % side); }
  for (let i = 0; i < sTxt; i++) txtIds[i * 4 + 3] = BigInt(i);
  return {
    hidden: randomTensor(3, [1, sImg, c.in_channels], 0.3),
    text: randomTensor(4, [1, sTxt, c.joint_attention_dim], 0.3),
    timestep: Float32Array.of(0.7), imgIds, txtIds,
  };
}

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-lora-bench-"));
  process.env.FLUX2_CACHE ??= path.join(work, "cache");
  const backend = new OrtBackend();
  console.log(`ONNX Runtime CPU, ${os.cpus().length} cores (${os.cpus()[0]?.model}); median of ${reps}; build = TransformerWeights + graph + session`);
  try {
    const g = (p: string) => path.join(root, "testdata/golden", p);
    const [lora, tParse] = await time(() => [loadLoraFile(g("lora/lora_diffusers.safetensors"), "style"), loadLoraFile(g("lora/lora_bfl.safetensors"), "detail")]);
    console.log(`parsing the two golden LoRA files: ${tParse.toFixed(1)} ms`);
    await measure(backend, "golden tiny klein (D=48, 2+2 blocks) + diffusers LoRA (0.5) + BFL LoRA (1.0)",
      g("checkpoints/klein_distilled/transformer/diffusion_pytorch_model.safetensors"),
      readTransformerConfig(g("checkpoints/klein_distilled/transformer/config.json")), tinyInputs(),
      [{ adapter: lora[0], weight: 0.5 }, { adapter: lora[1], weight: 1 }], null, reps);
    if (args.includes("--big")) {
      const c = BIG_CONFIG;
      const dir = path.join(work, "big");
      fs.mkdirSync(dir);
      const [file, tw] = await time(() => writeRandomTransformer(dir, c, { seed: 1 }));
      const [adapter, tl] = await time(() => syntheticLora(c, 16));
      const params = (fs.statSync(file).size / 2 / 1e6).toFixed(0);
      console.log(`\nsynthetic checkpoint: ${params}M params bf16 (${(fs.statSync(file).size / 2 ** 30).toFixed(2)} GiB), written in ${(tw / 1000).toFixed(1)} s; rank-16 LoRA on ${adapter.deltas.size} weights built in ${tl.toFixed(0)} ms`);
      await measure(backend, `synthetic D=${innerDim(c)}, ${c.num_layers}+${c.num_single_layers} blocks, 128 image + 32 text tokens, rank-16 LoRA on all attention/MLP`,
        file, c, syntheticInputs(c, 128, 32), [{ adapter }], work, Math.min(reps, 3));
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) await main();
