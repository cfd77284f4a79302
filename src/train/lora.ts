// Trainable LoRA side paths for the transformer graph, as peft injects them.
//
// Every targeted Linear computes y = x Wᵀ + s · (x Aᵀ) Bᵀ with s = alpha / rank, where A
// (rank, in) and B (out, rank) are graph inputs named by their PEFT file keys
// (`transformer.<module>.lora_A.weight`), fed from JS on every step. The base weight W
// stays a frozen, file-backed initializer.

import type { HostTensor } from "../backend/backend.js";
import type { Graph, Value } from "../onnx/graph.js";
import type { LoraGraphHook } from "../models/transformer_weights.js";
import { Xoshiro128 } from "../util/random.js";

/** peft's rule: a target matches a module named exactly so, or ending in "." + target. */
export function matchesTarget(module: string, target: string): boolean {
  return module === target || module.endsWith(`.${target}`);
}

export interface LoraModule {
  module: string;
  inFeatures: number;
  outFeatures: number;
}

export const loraKeys = (module: string) => ({ A: `transformer.${module}.lora_A.weight`, B: `transformer.${module}.lora_B.weight` });

/**
 * The Linear modules (name → [out, in]) that `targets` select. A target that matches nothing
 * is refused (peft refuses too), so a typo cannot silently train nothing.
 */
export function selectModules(linears: Map<string, [number, number]>, targets: string[]): LoraModule[] {
  if (!targets.length) throw new Error("LoRA: the target module list is empty");
  const picked: LoraModule[] = [];
  for (const [module, [outFeatures, inFeatures]] of linears) {
    if (targets.some((t) => matchesTarget(module, t))) picked.push({ module, inFeatures, outFeatures });
  }
  for (const t of targets) {
    if (![...linears.keys()].some((m) => matchesTarget(m, t))) {
      throw new Error(`LoRA target "${t}" matches no Linear layer of this transformer (targets match a module name or its last dotted parts, e.g. "to_q", "attn.to_out", "ff.linear_in")`);
    }
  }
  if (picked.some((p) => p.module === "norm_out.linear")) {
    throw new Error('LoRA on "norm_out.linear" is not supported by the trainer (it is read by row blocks); leave it out of the targets');
  }
  return picked;
}

/**
 * How A starts (B always starts at zero, so the LoRA begins as the identity edit):
 * - "gaussian": A ~ N(0, (1/rank)²), peft's `init_lora_weights="gaussian"`, which is what diffusers'
 *   train_dreambooth_lora_flux2_klein.py asks for; the default here, since that script is the reference
 *   the training step follows (../shared/golden-train).
 * - "kaiming": peft's own default (`init_lora_weights=True`), A ~ kaiming_uniform(a = √5), i.e.
 *   U(−1/√in, 1/√in), as ai-toolkit and peft-based trainers get it.
 */
export type LoraInit = "gaussian" | "kaiming";
export const LORA_INITS: readonly LoraInit[] = ["gaussian", "kaiming"];

/**
 * A and B of every module, drawn from the project's seeded generator (src/util/random.ts), module
 * by module in order (gaussian draws use Box–Muller pairs, as `randn` does).
 */
export function initLora(modules: LoraModule[], rank: number, seed: number, method: LoraInit = "gaussian"): Map<string, Float32Array> {
  if (!LORA_INITS.includes(method)) throw new Error(`LoRA init must be one of ${LORA_INITS.join(", ")}, got "${method}"`);
  const rng = new Xoshiro128(seed);
  const out = new Map<string, Float32Array>();
  for (const m of modules) {
    const A = new Float32Array(rank * m.inFeatures);
    if (method === "kaiming") {
      const bound = 1 / Math.sqrt(m.inFeatures);
      for (let i = 0; i < A.length; i++) A[i] = (2 * rng.nextDouble() - 1) * bound;
    } else {
      const std = 1 / rank;
      for (let i = 0; i < A.length; i += 2) {
        const r = Math.sqrt(-2 * Math.log(1 - rng.nextDouble())) * std;
        const theta = 2 * Math.PI * rng.nextDouble();
        A[i] = r * Math.cos(theta);
        if (i + 1 < A.length) A[i + 1] = r * Math.sin(theta);
      }
    }
    const k = loraKeys(m.module);
    out.set(k.A, A);
    out.set(k.B, new Float32Array(m.outFeatures * rank));
  }
  return out;
}

/** The graph hook: adds the side path of every targeted Linear, with A and B as graph inputs. */
export class TrainableLora implements LoraGraphHook {
  private byWeight = new Map<string, LoraModule>();
  private declared = new Set<string>();

  constructor(modules: LoraModule[], readonly rank: number, readonly alpha: number) {
    for (const m of modules) this.byWeight.set(`${m.module}.weight`, m);
  }

  linear(g: Graph, x: Value, y: Value, name: string): Value {
    const m = this.byWeight.get(name);
    if (!m) return y;
    const k = loraKeys(m.module);
    if (this.declared.has(k.A)) throw new Error(`LoRA: module ${m.module} is used twice in one graph`);
    this.declared.add(k.A);
    const A = g.input(k.A, "F32", [this.rank, m.inFeatures]);
    const B = g.input(k.B, "F32", [m.outFeatures, this.rank]);
    const h = g.op("FusedMatMul", [x, A], { transB: 1 }, { domain: "com.microsoft" })[0];
    const d = g.op("FusedMatMul", [h, B], { transB: 1, alpha: { float: this.alpha / this.rank } }, { domain: "com.microsoft" })[0];
    return g.add(y, d);
  }

  rows(_g: Graph, name: string, _start: number, _count: number, base: Value): Value {
    if (this.byWeight.has(name)) throw new Error(`LoRA on ${name} (read by row blocks) is not supported by the trainer`);
    return base;
  }

  feeds(): Record<string, HostTensor> {
    return {};
  }
}
