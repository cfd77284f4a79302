// The training steps (../shared/golden-train/README.md): FLUX.2's flow-matching step for
// the transformer (LoRA or full) and the VAE's autoencoder step.
//
// Each step is one ONNX graph: the model's forward (built by src/models/), the loss, and
// the gradients of the trainable tensors (src/train/autodiff.ts). Trainable tensors are
// graph inputs fed from `params` on every call, so the optimizer's in-place updates take
// effect without rebuilding; frozen weights stay file-backed initializers. Graphs have
// static shapes and are cached per input shape.

import * as fs from "node:fs";
import * as path from "node:path";
import type { Backend, HostTensor, Session } from "../backend/backend.js";
import { Graph, Value } from "../onnx/graph.js";
import { WeightSet } from "../io/safetensors.js";
import { buildTransformerGraph, hostFeeds, joinIds, readTransformerConfig, type TransformerConfig } from "../models/transformer.js";
import { TransformerWeights, expectedTransformerShapes } from "../models/transformer_weights.js";
import { decoder, encoder, readVaeConfig, vaeScaleFactor, type VaeConfig } from "../models/vae.js";
import { VaeWeights, expectedVaeShapes } from "../models/vae_weights.js";
import { latentIds, pack, textIds, unpack } from "../pipeline/latents.js";
import { tensor } from "../util/tensor.js";
import { appendGradients } from "./autodiff.js";
import { useTrainingMatmul } from "./bf16.js";
import { TrainableLora, initLora, loraKeys, selectModules, type LoraInit } from "./lora.js";
import { promoteWeights } from "./params.js";

export type TrainMode =
  | { kind: "lora"; targets: string[]; rank: number; alpha: number; init?: Map<string, Float32Array>; initMethod?: LoraInit }
  | { kind: "full" };

/**
 * diffusers' train_dreambooth_lora_flux2_klein.py targets: to_k, to_q, to_v, to_out.0,
 * to_qkv_mlp_proj and every single block's attn.to_out. Matching is peft's suffix rule over
 * the transformer's Linear layers only, so "attn.to_out" selects exactly the single blocks'
 * output projections (the double blocks' attn.to_out is a ModuleList, not a Linear).
 */
export const DEFAULT_LORA_TARGETS: readonly string[] = ["to_k", "to_q", "to_v", "to_out.0", "to_qkv_mlp_proj", "attn.to_out"];

export interface TransformerBatch {
  /** (B, C, h, w) patchified + batch-norm-normalized latents. */
  x0: Float32Array;
  shape: [number, number, number, number];
  /** (B, L, J) prompt embeddings. */
  embeds: Float32Array;
  embedShape: [number, number, number];
  /** Like x0. */
  noise: Float32Array;
  /** (B) flow-matching sigmas in [0, 1]. */
  sigmas: Float32Array;
  /** (B) guidance scales: required by transformers with a guidance embedder (FLUX.2 dev), refused otherwise. */
  guidance?: Float32Array;
}

export interface TransformerStepResult {
  loss: number;
  /** (B, C, h, w). */
  modelPred: Float32Array;
  grads: Map<string, Float32Array>;
}

export interface VaeBatch {
  /** (B, 3, H, W) in [-1, 1]. */
  images: Float32Array;
  shape: [number, number, number, number];
  /** (B, latent_channels, H/f, W/f) standard normal. */
  eps: Float32Array;
  klWeight: number;
  /** Weight of the colour term (see VaeTrainer.build); 0 or absent: plain MSE + KL. */
  colorWeight?: number;
  /** Weight of the chroma term: the squared error of each pixel's colour apart from its brightness. */
  chromaWeight?: number;
}

export interface VaeStepResult {
  loss: number;
  reconLoss: number;
  kl: number;
  colorLoss: number;
  chromaLoss: number;
  reconstruction: Float32Array;
  grads: Map<string, Float32Array>;
}

const f = Math.fround;
const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function checkArray(what: string, a: unknown, shape: readonly number[]): void {
  if (!(a instanceof Float32Array)) throw new Error(`${what} must be a Float32Array`);
  if (!shape.every((d) => Number.isSafeInteger(d) && d > 0)) throw new Error(`${what}: shape [${shape}] must be positive integers`);
  if (a.length !== numel(shape)) throw new Error(`${what}: shape [${shape}] needs ${numel(shape)} values, got ${a.length}`);
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) throw new Error(`${what} holds a non-finite value at index ${i}`);
}

/** A graph with the loss and gradients appended, compiled into a session. */
interface StepGraph {
  session: Session;
  grads: Map<string, string>;
}

/** Scalar mean over every element: ReduceMean with no axes. */
function meanAll(g: Graph, x: Value): Value {
  return g.op("ReduceMean", [x, g.constant([])], { keepdims: 0 })[0];
}

function squaredError(g: Graph, a: Value, b: Value): Value {
  const d = g.sub(a, b);
  return g.mul(d, d);
}

async function releaseAll(cache: Map<string, Promise<StepGraph>>): Promise<void> {
  const all = [...cache.values()];
  cache.clear();
  for (const p of all) {
    const s = await p.catch(() => null);
    if (s) await s.session.release();
  }
}

function cached(cache: Map<string, Promise<StepGraph>>, key: string, build: () => Promise<StepGraph>): Promise<StepGraph> {
  let p = cache.get(key);
  if (!p) {
    p = build();
    p.catch(() => { if (cache.get(key) === p) cache.delete(key); });
    cache.set(key, p);
  }
  return p;
}

function collectGrads(out: Record<string, HostTensor>, names: Map<string, string>): Map<string, Float32Array> {
  const grads = new Map<string, Float32Array>();
  for (const [param, output] of names) grads.set(param, out[output].data as Float32Array);
  return grads;
}

// ---------------------------------------------------------------------------
// Transformer

function transformerConfigPath(weights: string, config: string | null): string | null {
  if (config) return fs.statSync(config, { throwIfNoEntry: false })?.isDirectory() ? path.join(config, "config.json") : config;
  const beside = path.join(weights, "config.json");
  return fs.statSync(weights, { throwIfNoEntry: false })?.isDirectory() && fs.existsSync(beside) ? beside : null;
}

export class TransformerTrainer {
  readonly params: Map<string, Float32Array>;
  readonly loraConfig?: { rank: number; alpha: number; targets: string[]; modules: string[] };
  private graphs = new Map<string, Promise<StepGraph>>();

  private constructor(
    private backend: Backend,
    readonly config: TransformerConfig,
    private weights: TransformerWeights,
    private mode: TrainMode,
    params: Map<string, Float32Array>,
    private opts: { checkpointActivations?: boolean; reconvertWeights?: boolean; attentionChunkBytes?: number; memPattern?: boolean },
    loraConfig?: { rank: number; alpha: number; targets: string[]; modules: string[] },
  ) {
    this.params = params;
    this.loraConfig = loraConfig;
  }

  /**
   * Open a transformer for training. opts.checkpointActivations recomputes each block's forward
   * in the backward (less memory, about one more forward of compute); opts.reconvertWeights
   * (default true) is for measurements only; opts.attentionChunkBytes bounds the attention
   * backward's score matrices (default 256 MiB; src/train/autodiff.ts). opts.memPattern (default
   * false) is ORT's memory pattern, for measurements only: with it, every step after the first took
   * about twice the first step's memory (docs/training.md). `weights`: a .safetensors file or a diffusers transformer
   * folder; `config`: its config.json (or null: beside the weights, else inferred from a BFL file).
   */
  static async open(backend: Backend, weights: string, config: string | null, mode: TrainMode,
                    opts: { checkpointActivations?: boolean; seed?: number; reconvertWeights?: boolean; attentionChunkBytes?: number; memPattern?: boolean } = {}): Promise<TransformerTrainer> {
    const set = WeightSet.open(weights);
    try {
      const w = new TransformerWeights(set, TransformerWeights.detectFormat(set));
      const cfgPath = transformerConfigPath(weights, config);
      if (!cfgPath && w.format === "diffusers") {
        throw new Error(`${weights}: a diffusers transformer needs its config.json: pass it, or point at the transformer folder that holds it`);
      }
      const cfg = cfgPath ? readTransformerConfig(cfgPath) : w.inferConfig();
      w.check(cfg);
      const shapes = expectedTransformerShapes(cfg);
      if (mode.kind === "full") {
        if (w.quant) throw new Error(`${weights}: full training needs float weights, but this checkpoint is block-quantized (int8/int4); train a LoRA on it, or use the unquantized checkpoint`);
        const params = new Map(shapes.map(([name]) => [name, w.float32(name).data] as [string, Float32Array]));
        return new TransformerTrainer(backend, cfg, w, mode, params, opts);
      }
      if (!Number.isSafeInteger(mode.rank) || mode.rank <= 0) throw new Error(`LoRA rank must be a positive integer, got ${mode.rank}`);
      if (!(mode.alpha > 0)) throw new Error(`LoRA alpha must be a positive number, got ${mode.alpha}`);
      const linears = new Map(shapes.filter(([, s]) => s.length === 2).map(([n, s]) => [n.replace(/\.weight$/, ""), [s[0], s[1]] as [number, number]]));
      const modules = selectModules(linears, mode.targets);
      const params = mode.init ? checkLoraInit(mode.init, modules, mode.rank) : initLora(modules, mode.rank, opts.seed ?? 0, mode.initMethod);
      const loraConfig = { rank: mode.rank, alpha: mode.alpha, targets: [...mode.targets], modules: modules.map((m) => m.module) };
      const trainer = new TransformerTrainer(backend, cfg, w, mode, params, opts, loraConfig);
      w.lora = new TrainableLora(modules, mode.rank, mode.alpha);
      return trainer;
    } catch (e) {
      set.close();
      throw e;
    }
  }

  private build(B: number, C: number, hw: number, L: number): Graph {
    const c = this.config;
    if (this.mode.kind === "lora") {
      const modules = this.loraConfig!.modules.map((m) => {
        const [out, inF] = this.weights.shape(`${m}.weight`);
        return { module: m, inFeatures: inF, outFeatures: out };
      });
      this.weights.lora = new TrainableLora(modules, this.mode.rank, this.mode.alpha); // fresh: inputs are declared per graph
    }
    const g = buildTransformerGraph(c, this.weights);
    if (this.mode.kind === "full") promoteWeights(g, (name) => this.weights.shape(name));
    const target = g.input("target", "F32", [B, hw, C]);
    const loss = meanAll(g, squaredError(g, new Value("output"), target));
    g.output(loss, "loss", "F32", []);
    const seq = L + hw;
    const T = c.timestep_guidance_channels;
    const shapes: Record<string, number[]> = {
      hidden_states: [B, hw, c.in_channels], encoder_hidden_states: [B, L, c.joint_attention_dim], timestep_features: [B, T],
      rope_positions: [B, seq], rope_cos: [seq, c.attention_head_dim / 2], rope_sin: [seq, c.attention_head_dim / 2], target: [B, hw, C],
    };
    if (c.guidance_embeds) shapes.guidance_features = [B, T];
    const checkpoint = this.opts.checkpointActivations ? (n: { name: string }) => n.name.match(/^(double|single)\.\d+(?=\/)/)?.[0] ?? null : undefined;
    appendGradients(g, loss, [...this.params.keys()], shapes, { checkpoint, reconvertWeights: this.opts.reconvertWeights, attentionChunkBytes: this.opts.attentionChunkBytes });
    useTrainingMatmul(this.backend, g, shapes);
    return g;
  }

  /** Loss (before any update), the model's prediction (B, C, h, w) and the gradient of every parameter. */
  async lossAndGrads(b: TransformerBatch): Promise<TransformerStepResult> {
    const c = this.config;
    const [B, C, h, w] = b.shape;
    const [Be, L, J] = b.embedShape;
    checkArray("x0", b.x0, b.shape);
    checkArray("noise", b.noise, b.shape);
    checkArray("embeds", b.embeds, b.embedShape);
    checkArray("sigmas", b.sigmas, [B]);
    if (C !== c.in_channels) throw new Error(`x0 has ${C} channels; this transformer takes ${c.in_channels} (patchified latents)`);
    if ((c.out_channels ?? c.in_channels) !== C) throw new Error("the flow-matching step needs out_channels = in_channels");
    if (Be !== B) throw new Error(`embeds batch ${Be} differs from the latents' batch ${B}`);
    if (J !== c.joint_attention_dim) throw new Error(`embeds have ${J} features; this transformer takes ${c.joint_attention_dim}`);
    for (const s of b.sigmas) if (!(s >= 0 && s <= 1)) throw new Error(`sigmas must lie in [0, 1], got ${s}`);
    if (c.guidance_embeds && !b.guidance) throw new Error("this transformer has a guidance embedder (FLUX.2 dev): pass `guidance` (one scale per sample, e.g. diffusers' --guidance_scale)");
    if (!c.guidance_embeds && b.guidance) throw new Error("this transformer has no guidance embedder (klein): leave `guidance` out");
    if (b.guidance) checkArray("guidance", b.guidance, [B]);
    const hw = h * w;
    const step = await cached(this.graphs, `${B}x${C}x${h}x${w}:${L}`, async () => {
      const g = this.build(B, C, hw, L);
      const grads = new Map([...this.params.keys()].map((k) => [k, `grad.${k}`] as [string, string]));
      return { session: await this.backend.createSession(g, { memPattern: this.opts.memPattern ?? false }), grads };
    });

    // x_t = (1 − σ) x0 + σ ε and target ε − x0, in float32 as torch computes them.
    const per = C * hw;
    const xt = new Float32Array(B * per), tgt = new Float32Array(B * per);
    for (let i = 0; i < B; i++) {
      const s = f(b.sigmas[i]), keep = f(1 - s);
      for (let j = i * per; j < (i + 1) * per; j++) {
        xt[j] = f(f(keep * b.x0[j]) + f(s * b.noise[j]));
        tgt[j] = f(b.noise[j] - b.x0[j]);
      }
    }
    const ids = joinIds([textIds(1, L).data, latentIds(1, h, w).data]);
    const feeds: Record<string, HostTensor> = {
      ...hostFeeds(c, B, ids, L + hw, b.sigmas, b.guidance),
      hidden_states: pack(tensor(xt, b.shape)),
      encoder_hidden_states: { data: b.embeds, shape: [...b.embedShape] },
      target: pack(tensor(tgt, b.shape)),
    };
    for (const [k, v] of this.params) feeds[k] = { data: v, shape: this.paramShape(k) };
    const out = await step.session.run(feeds);
    const pred = unpack(tensor(out.output.data as Float32Array, [B, hw, C]), h, w);
    return { loss: Number(out.loss.data[0]), modelPred: pred.data, grads: collectGrads(out, step.grads) };
  }

  /** The shape of a parameter (as saved: PEFT shapes for LoRA, the weights file's for full). */
  paramShape(key: string): number[] {
    if (!this.params.has(key)) throw new Error(`"${key}" is not a parameter of this trainer`);
    if (this.mode.kind === "full") return this.weights.shape(key);
    const m = key.match(/^transformer\.(.+)\.lora_([AB])\.weight$/)!;
    const [out, inF] = this.weights.shape(`${m[1]}.weight`);
    return m[2] === "A" ? [this.mode.rank, inF] : [out, this.mode.rank];
  }

  async release(): Promise<void> {
    await releaseAll(this.graphs);
    this.weights.set.close();
  }
}

/** A given LoRA init must hold exactly A and B of every selected module, with their shapes. */
function checkLoraInit(init: Map<string, Float32Array>, modules: { module: string; inFeatures: number; outFeatures: number }[], rank: number): Map<string, Float32Array> {
  const params = new Map<string, Float32Array>();
  for (const m of modules) {
    const k = loraKeys(m.module);
    for (const [key, n] of [[k.A, rank * m.inFeatures], [k.B, m.outFeatures * rank]] as const) {
      const a = init.get(key);
      if (!a) throw new Error(`LoRA init: no tensor "${key}" for targeted module ${m.module}`);
      if (a.length !== n) throw new Error(`LoRA init: "${key}" has ${a.length} values; rank ${rank} needs ${n}`);
      params.set(key, a.slice());
    }
  }
  const extra = [...init.keys()].filter((k) => !params.has(k));
  if (extra.length) throw new Error(`LoRA init: "${extra[0]}" is not a module the targets select (${extra.length} such tensors); the init was made for another target list`);
  return params;
}

// ---------------------------------------------------------------------------
// VAE

/** The colour term's block side in pixels (the whole step falls back to the VAE's factor when an image side is not a multiple). */
export const COLOR_BLOCK = 8;

export class VaeTrainer {
  readonly params: Map<string, Float32Array>;
  private graphs = new Map<string, Promise<StepGraph>>();

  /** Whether the encoder side (encoder.*, quant_conv.*) is trained, i.e. whether the latent space moves. */
  readonly trainsEncoder: boolean;

  private constructor(private backend: Backend, readonly config: VaeConfig, private weights: VaeWeights, params: Map<string, Float32Array>,
                      private opts: { checkpointActivations?: boolean; memPattern?: boolean; frozen: boolean }) {
    this.params = params;
    this.trainsEncoder = [...params.keys()].some((k) => k.startsWith("encoder.") || k.startsWith("quant_conv."));
  }

  /**
   * Open a VAE (diffusers folder / file or BFL ae file) with its config for full autoencoder
   * training. opts.checkpointActivations recomputes each encoder / decoder block (and the mid
   * blocks) in the backward. opts.freeze: parameter-name prefixes (diffusers names) kept frozen,
   * e.g. ["encoder.", "quant_conv."] trains the decoder alone, so that the latent space (and a
   * transformer trained on it) stays valid.
   */
  static async open(backend: Backend, weights: string, config: string, opts: { checkpointActivations?: boolean; freeze?: string[] } = {}): Promise<VaeTrainer> {
    const cfg = readVaeConfig(config);
    const set = WeightSet.open(weights);
    try {
      const w = new VaeWeights(set, VaeWeights.detectFormat(set));
      w.check(cfg);
      // The latent batch-norm (bn.running_mean / running_var) holds buffers, not parameters: its
      // statistics are computed over the data after training (golden-train README).
      const all = expectedVaeShapes(cfg).map(([name]) => name).filter((name) => !name.startsWith("bn."));
      const freeze = opts.freeze ?? [];
      for (const p of freeze) if (!all.some((n) => n.startsWith(p))) throw new Error(`freeze prefix "${p}" matches no VAE parameter (they start with ${[...new Set(all.map((n) => n.split(".")[0] + "."))].join(", ")})`);
      const names = all.filter((name) => !freeze.some((p) => name.startsWith(p)));
      if (!names.length) throw new Error(`freezing ${freeze.join(", ")} leaves no VAE parameter to train`);
      if (freeze.length && w.format !== "diffusers") throw new Error("freezing part of the VAE needs a diffusers-format VAE (its tensor names are the parameter names)");
      const params = new Map(names.map((name) => [name, w.set.float32(w.storedName(name))] as [string, Float32Array]));
      return new VaeTrainer(backend, cfg, w, params, { ...opts, frozen: freeze.length > 0 });
    } catch (e) {
      set.close();
      throw e;
    }
  }

  private build(B: number, H: number, W: number): Graph {
    const c = this.config;
    const g = new Graph("flux2_vae_train");
    const ctx = { g, w: this.weights, c };
    const Cl = c.latent_channels;
    const fct = vaeScaleFactor(c);
    const image = g.input("images", "F32", [B, c.in_channels, H, W]);
    const eps = g.input("eps", "F32", [B, Cl, H / fct, W / fct]);
    const klWeight = g.input("kl_weight", "F32", []);
    const colorWeight = g.input("color_weight", "F32", []);
    const chromaWeight = g.input("chroma_weight", "F32", []);
    const moments = g.scope("encoder", () => encoder(ctx, image));
    const [mean, rawLogvar] = g.split(moments, 1, [Cl, Cl]);
    // diffusers' DiagonalGaussianDistribution: logvar clamped to [-30, 20], std = exp(logvar / 2), var = exp(logvar).
    const logvar = g.clip(rawLogvar, -30, 20);
    const std = g.exp(g.mul(logvar, g.scalar(0.5)));
    const z = g.add(mean, g.mul(std, eps));
    const rec = g.scope("decoder", () => decoder(ctx, z));
    const diff = g.sub(rec, image); // shared by the pixel MSE and the colour term below
    const recon = meanAll(g, g.mul(diff, diff));
    const terms = g.sub(g.sub(g.add(g.mul(mean, mean), g.exp(logvar)), g.scalar(1)), logvar);
    const perSample = g.mul(g.op("ReduceSum", [terms, g.constant([1, 2, 3])], { keepdims: 0 })[0], g.scalar(0.5));
    const kl = meanAll(g, perSample);
    // The colour term: squared error of the mean colour of every COLOR_BLOCK² block. Pixel MSE is
    // dominated by edges, so an MSE-trained VAE can keep shapes while shifting flat colours by
    // more than a user would accept for a hex prompt (docs/flux2-mini.md); this term weighs the
    // flat colours on their own. Block means are a reshape and a ReduceMean (both differentiable
    // by src/train/grad_rules.ts) rather than an AveragePool, which has no gradient rule.
    const k = H % COLOR_BLOCK === 0 && W % COLOR_BLOCK === 0 ? COLOR_BLOCK : fct;
    const blocks = g.reshape(diff, [B, c.out_channels, H / k, k, W / k, k]);
    const blockMean = g.op("ReduceMean", [blocks, g.constant([3, 5])], { keepdims: 0 })[0];
    const color = meanAll(g, g.mul(blockMean, blockMean));
    // The chroma term: the squared error of each pixel's colour with its brightness (the mean over
    // R, G, B) taken out. Pixel MSE learns colour directions in the order of their variance in the
    // data, and in flux2-mini's data the green–magenta direction carries a twelfth of the
    // brightness variance: a VAE trained on MSE alone maps purples to grey and greens to teal
    // (docs/flux2-mini.md, session 15). This term weighs every hue's error on its own.
    const chromaErr = g.sub(diff, g.op("ReduceMean", [diff, g.constant([1])], { keepdims: 1 })[0]);
    const chroma = meanAll(g, g.mul(chromaErr, chromaErr));
    const loss = g.add(g.add(g.add(recon, g.mul(klWeight, kl)), g.mul(colorWeight, color)), g.mul(chromaWeight, chroma));
    g.output(loss, "loss", "F32", []);
    g.output(recon, "recon_loss", "F32", []);
    g.output(kl, "kl", "F32", []);
    g.output(color, "color_loss", "F32", []);
    g.output(chroma, "chroma_loss", "F32", []);
    g.output(rec, "reconstruction", "F32", [B, c.out_channels, H, W]);
    promoteWeights(g, (name) => this.weights.shape(name), this.opts.frozen ? (name) => this.params.has(name) : undefined);
    // Segments: the blocks vae.ts scopes as down.N / mid / up.N, inside our encoder / decoder scopes.
    const checkpoint = this.opts.checkpointActivations ? (n: { name: string }) => n.name.match(/^(encoder|decoder)\/(down\.\d+|mid|up\.\d+)(?=\/)/)?.[0] ?? null : undefined;
    appendGradients(g, loss, [...this.params.keys()], {}, { checkpoint });
    useTrainingMatmul(this.backend, g, {});
    return g;
  }

  /** The shape of a parameter, as named in the weights file (diffusers names). */
  paramShape(key: string): number[] {
    if (!this.params.has(key)) throw new Error(`"${key}" is not a parameter of this trainer`);
    return this.weights.shape(key);
  }

  async lossAndGrads(b: VaeBatch): Promise<VaeStepResult> {
    const c = this.config;
    const [B, Cin, H, W] = b.shape;
    const fct = vaeScaleFactor(c);
    checkArray("images", b.images, b.shape);
    if (Cin !== c.in_channels) throw new Error(`images have ${Cin} channels; this VAE takes ${c.in_channels}`);
    if (H % fct || W % fct) throw new Error(`image sides must be multiples of ${fct}, got ${H}x${W}`);
    const epsShape = [B, c.latent_channels, H / fct, W / fct];
    checkArray("eps", b.eps, epsShape);
    if (!(b.klWeight >= 0)) throw new Error(`klWeight must be a non-negative number, got ${b.klWeight}`);
    const colorWeight = b.colorWeight ?? 0;
    if (!(colorWeight >= 0)) throw new Error(`colorWeight must be a non-negative number, got ${b.colorWeight}`);
    const chromaWeight = b.chromaWeight ?? 0;
    if (!(chromaWeight >= 0)) throw new Error(`chromaWeight must be a non-negative number, got ${b.chromaWeight}`);
    const step = await cached(this.graphs, `${B}x${H}x${W}`, async () => {
      const g = this.build(B, H, W);
      const grads = new Map([...this.params.keys()].map((k) => [k, `grad.${k}`] as [string, string]));
      return { session: await this.backend.createSession(g, { memPattern: this.opts.memPattern ?? false }), grads };
    });
    const feeds: Record<string, HostTensor> = {
      images: { data: b.images, shape: [...b.shape] },
      eps: { data: b.eps, shape: epsShape },
      kl_weight: { data: Float32Array.of(b.klWeight), shape: [] },
      color_weight: { data: Float32Array.of(colorWeight), shape: [] },
      chroma_weight: { data: Float32Array.of(chromaWeight), shape: [] },
    };
    for (const [k, v] of this.params) feeds[k] = { data: v, shape: this.paramShape(k) };
    const out = await step.session.run(feeds);
    return {
      loss: Number(out.loss.data[0]), reconLoss: Number(out.recon_loss.data[0]), kl: Number(out.kl.data[0]), colorLoss: Number(out.color_loss.data[0]), chromaLoss: Number(out.chroma_loss.data[0]),
      reconstruction: out.reconstruction.data as Float32Array, grads: collectGrads(out, step.grads),
    };
  }

  async release(): Promise<void> {
    await releaseAll(this.graphs);
    this.weights.set.close();
  }
}
