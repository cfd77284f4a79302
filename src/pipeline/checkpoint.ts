// Finding the parts of a FLUX.2 checkpoint on disk (docs/FLUX2-spec.md §1.7, §7).
//
// Accepted layouts:
//  - a diffusers folder: model_index.json + scheduler/ text_encoder/ tokenizer/
//    transformer/ vae/ (each possibly sharded);
//  - a BFL single transformer file (flux-2-*.safetensors), with the text
//    encoder, tokenizer and VAE taken from a diffusers folder or given one by one.
// The variant (klein, klein base, klein KV, dev) decides the sampling defaults.

import * as fs from "../platform/fs.js";
import * as path from "../platform/path.js";
import { WeightSet } from "../io/safetensors.js";
import { readTransformerConfig, type TransformerConfig } from "../models/transformer.js";
import { readVaeConfig, vaeScaleFactor } from "../models/vae.js";
import { validateSchedulerConfig } from "./schedule.js";
import { TransformerWeights, type TransformerFormat } from "../models/transformer_weights.js";

import { PIPELINE_CLASSES, VARIANT_CARDS, VARIANTS, variantOfPipeline, type Variant } from "./variants.js";

export type { Variant };

export interface VariantDefaults {
  steps: number;
  guidance: number;
  /** true: classifier-free guidance with an empty negative prompt (klein base). */
  cfg: boolean;
  /** true: guidance is fed to the model's guidance embedder (dev). */
  embeddedGuidance: boolean;
  /** The model ignores steps/guidance choices beyond these (distilled klein). */
  distilled: boolean;
}

/** The sampling defaults, read off the variant cards (src/pipeline/variants.ts). */
export const VARIANT_DEFAULTS: Record<Variant, VariantDefaults> = Object.fromEntries(VARIANTS.map((v) => {
  const c = VARIANT_CARDS[v];
  return [v, { steps: c.steps.default, guidance: c.guidance.default, cfg: c.guidanceMode === "cfg", embeddedGuidance: c.guidanceMode === "embedded", distilled: c.guidanceMode === "none" }];
})) as Record<Variant, VariantDefaults>;

export interface ComponentFiles {
  /** A .safetensors file, a shard index, or a folder holding either. */
  weights: string;
  config: string | null;
}

export interface Checkpoint {
  source: string;
  variant: Variant;
  defaults: VariantDefaults;
  transformer: ComponentFiles & { format: TransformerFormat };
  vae: ComponentFiles & { format: "diffusers" | "bfl" };
  textEncoder: ComponentFiles & { kind: "qwen3" | "mistral3" };
  tokenizer: string;
}

/** Pixels per side one packed latent token covers: 2 · the VAE's scale factor (16 for FLUX.2, 8 for flux2-mini, 4 for the tiny test checkpoints). */
export function latentMultiple(ck: Pick<Checkpoint, "vae">): number {
  return ck.vae.config ? 2 * vaeScaleFactor(readVaeConfig(ck.vae.config)) : 16;
}

export class CheckpointError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CheckpointError";
  }
}

const EXPECTED_CLASSES: Record<string, string[]> = {
  transformer: ["Flux2Transformer2DModel"],
  vae: ["AutoencoderKLFlux2"],
  text_encoder: ["Qwen3ForCausalLM", "Qwen3Model", "Mistral3ForConditionalGeneration"],
  scheduler: ["FlowMatchEulerDiscreteScheduler"],
  tokenizer: ["Qwen2TokenizerFast", "Qwen2Tokenizer", "PixtralProcessor", "LlamaTokenizerFast"],
};

/**
 * model_index.json: the pipeline class (checked by the caller), is_distilled, and one
 * [library, class] pair per component, each a class this engine implements.
 */
function validateModelIndex(index: unknown, file: string): asserts index is Record<string, unknown> {
  if (index === null || typeof index !== "object" || Array.isArray(index)) throw new CheckpointError(`${file}: expected a JSON object`);
  const r = index as Record<string, unknown>;
  if (r.is_distilled !== undefined && r.is_distilled !== null && typeof r.is_distilled !== "boolean") {
    throw new CheckpointError(`${file}: is_distilled must be true or false, got ${JSON.stringify(r.is_distilled)}`);
  }
  for (const [k, v] of Object.entries(r)) {
    if (k.startsWith("_") || k === "is_distilled") continue;
    // flux2.ts's own hints (default resolution, text length; src/pipeline/model_defaults.ts checks their values).
    if (k === "flux2ts") {
      if (v === null || typeof v !== "object" || Array.isArray(v)) throw new CheckpointError(`${file}: "flux2ts" must be an object of flux2.ts model hints`);
      continue;
    }
    const classes = EXPECTED_CLASSES[k];
    if (!classes) throw new CheckpointError(`${file}: unknown component "${k}" (a FLUX.2 pipeline has ${Object.keys(EXPECTED_CLASSES).join(", ")})`);
    if (v === null) continue; // a component left out of the repository (diffusers writes [null, null])
    const pair = v as unknown[];
    if (!Array.isArray(pair) || pair.length !== 2 || (pair[1] !== null && typeof pair[1] !== "string")) {
      throw new CheckpointError(`${file}: "${k}" must be a [library, class] pair, got ${JSON.stringify(v)}`);
    }
    if (pair[1] !== null && !classes.includes(pair[1] as string)) {
      throw new CheckpointError(`${file}: ${k} class "${pair[1]}" is not supported (expected ${classes.join(" or ")})`);
    }
  }
}

/** The scheduler folder, when the repository has one, must ask for the schedule this engine samples. */
function checkScheduler(root: string): void {
  const dir = path.join(root, "scheduler");
  const file = path.join(dir, "scheduler_config.json");
  if (!fs.existsSync(file)) return;
  try {
    validateSchedulerConfig(readJson(file), file);
  } catch (e) {
    throw new CheckpointError((e as Error).message);
  }
}

/** The text encoder's hidden width (Mistral 3 keeps it in text_config). */
function textHiddenSize(configPath: string): number | undefined {
  const raw = readJson(configPath);
  const h = raw?.text_config?.hidden_size ?? raw?.hidden_size;
  return Number.isSafeInteger(h) ? h : undefined;
}

/**
 * The components must fit together: the transformer reads the VAE's packed latents (latent
 * channels × the 2×2 patch) and three stacked text-encoder layers. Checked from the configs
 * alone, before any weight is touched.
 */
function checkComponentsFit(ck: Checkpoint): void {
  const t = transformerConfig(ck);
  if (ck.vae.config) {
    const v = readVaeConfig(ck.vae.config);
    const packed = v.latent_channels * v.patch_size[0] * v.patch_size[1];
    if (packed !== t.in_channels) {
      throw new CheckpointError(`${ck.source}: the transformer takes ${t.in_channels} input channels but the VAE gives ${packed} (latent_channels ${v.latent_channels} × patch ${v.patch_size.join("×")}); the VAE and transformer are from different models`);
    }
  }
  const hidden = ck.textEncoder.config ? textHiddenSize(ck.textEncoder.config) : undefined;
  if (hidden !== undefined && 3 * hidden !== t.joint_attention_dim) {
    throw new CheckpointError(`${ck.source}: the transformer's joint_attention_dim is ${t.joint_attention_dim} but the text encoder gives 3 × ${hidden} = ${3 * hidden} features; the text encoder and transformer are from different models`);
  }
}

function readJson(file: string): any {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new CheckpointError(`${file}: cannot read (${(e as Error).message})`);
  }
}

function requireDir(root: string, sub: string, what: string): string {
  const d = path.join(root, sub);
  if (!fs.existsSync(d)) {
    throw new CheckpointError(`${root}: the ${what} folder "${sub}/" is missing — download the complete repository (flux2 pull REPO_ID) or pass --${sub.replace("_", "-")} PATH`);
  }
  return d;
}

function componentConfig(dir: string, role: string): string {
  const cfg = path.join(dir, "config.json");
  if (!fs.existsSync(cfg)) throw new CheckpointError(`${dir}: no config.json for the ${role}`);
  const raw = readJson(cfg);
  const cls = raw._class_name ?? raw.architectures?.[0];
  if (cls && EXPECTED_CLASSES[role] && !EXPECTED_CLASSES[role].includes(cls)) {
    throw new CheckpointError(`${cfg}: unknown ${role} class "${cls}" (expected ${EXPECTED_CLASSES[role].join(" or ")}); is this a FLUX.2 repository?`);
  }
  return cfg;
}

function textEncoderKind(configPath: string): "qwen3" | "mistral3" {
  const raw = readJson(configPath);
  const t = raw.model_type ?? "";
  if (t.startsWith("qwen3")) return "qwen3";
  if (t.startsWith("mistral")) return "mistral3";
  throw new CheckpointError(`${configPath}: text encoder model_type "${t}" is not Qwen3 or Mistral 3`);
}

export interface OpenOptions {
  /** Replace parts of the checkpoint (e.g. a BFL transformer file, an ae.safetensors). */
  transformer?: string;
  vae?: string;
  textEncoder?: string;
  tokenizer?: string;
  variant?: Variant;
}

/** Open a diffusers folder, or a BFL single file plus separately given parts. */
export function openCheckpoint(source: string, opts: OpenOptions = {}): Checkpoint {
  const st = fs.statSync(source, { throwIfNoEntry: false });
  if (!st) throw new CheckpointError(`${source}: no such file or folder`);
  if (st.isFile()) return openSingleFile(source, opts);
  const indexPath = path.join(source, "model_index.json");
  if (!fs.existsSync(indexPath)) {
    throw new CheckpointError(`${source}: no model_index.json — this is not a diffusers FLUX.2 folder (for a BFL single file, pass the .safetensors file itself)`);
  }
  const index = readJson(indexPath);
  validateModelIndex(index, indexPath);
  // The pipeline class and is_distilled name the variant (the variant cards' diffusers names).
  const known = variantOfPipeline(String(index._class_name), index.is_distilled === true);
  if (!known) {
    throw new CheckpointError(`${indexPath}: unknown pipeline class "${index._class_name}" (expected one of ${PIPELINE_CLASSES.join(", ")})`);
  }
  const variant = opts.variant ?? known;
  const transformer = opts.transformer ? singleTransformer(opts.transformer) : diffusersTransformer(source);
  const vae = opts.vae ? vaeFromPath(opts.vae, source) : diffusersVae(source);
  const teDir = opts.textEncoder ?? requireDir(source, "text_encoder", "text encoder");
  const teConfig = componentConfig(teDir, "text_encoder");
  const tokenizer = opts.tokenizer ?? requireDir(source, "tokenizer", "tokenizer");
  checkScheduler(source);
  const ck: Checkpoint = {
    source, variant, defaults: VARIANT_DEFAULTS[variant], transformer, vae,
    textEncoder: { weights: teDir, config: teConfig, kind: textEncoderKind(teConfig) }, tokenizer,
  };
  checkComponentsFit(ck);
  return ck;
}

function diffusersTransformer(root: string) {
  const dir = requireDir(root, "transformer", "transformer");
  return { weights: dir, config: componentConfig(dir, "transformer"), format: "diffusers" as const };
}

function diffusersVae(root: string) {
  const dir = requireDir(root, "vae", "VAE");
  return { weights: dir, config: componentConfig(dir, "vae"), format: "diffusers" as const };
}

/**
 * A transformer given on its own (--transformer): a BFL file, or diffusers weights (a file, an
 * index or a transformer/ folder). Diffusers weights use the config.json beside them when there
 * is one; otherwise, like BFL files, their config is inferred from the tensor shapes.
 */
function singleTransformer(file: string) {
  const set = WeightSet.open(file);
  let format: TransformerFormat;
  try {
    format = TransformerWeights.detectFormat(set);
  } finally {
    set.close();
  }
  if (format === "bfl") return { weights: file, config: null, format };
  const dir = fs.statSync(file).isDirectory() ? file : path.dirname(file);
  const cfg = path.join(dir, "config.json");
  return { weights: file, config: fs.existsSync(cfg) ? componentConfig(dir, "transformer") : null, format };
}

/** A VAE given as a diffusers vae/ folder or a BFL ae.safetensors (config from the checkpoint's vae/). */
function vaeFromPath(p: string, root: string | null) {
  if (fs.statSync(p).isDirectory()) return { weights: p, config: componentConfig(p, "vae"), format: "diffusers" as const };
  const set = WeightSet.open(p);
  const bfl = set.keys().some((k) => k.startsWith("encoder.down.") || k.startsWith("decoder.up."));
  set.close();
  const cfgDir = root ? path.join(root, "vae") : null;
  const config = cfgDir && fs.existsSync(path.join(cfgDir, "config.json")) ? path.join(cfgDir, "config.json") : null;
  return { weights: p, config, format: bfl ? ("bfl" as const) : ("diffusers" as const) };
}

/**
 * A BFL single transformer file. The text encoder, tokenizer and VAE must be
 * given (or found in a diffusers folder next to the file, as in the Hub repos).
 */
function openSingleFile(file: string, opts: OpenOptions): Checkpoint {
  const transformer = singleTransformer(file);
  const root = path.dirname(file);
  const hasFolder = fs.existsSync(path.join(root, "model_index.json"));
  if (hasFolder) return openCheckpoint(root, { ...opts, transformer: file });
  const need = (v: string | undefined, flag: string) => {
    if (!v) throw new CheckpointError(`${file} is a single transformer file: also pass --${flag} PATH (or put it inside its diffusers repository folder)`);
    return v;
  };
  const teDir = need(opts.textEncoder, "text-encoder");
  const teConfig = componentConfig(teDir, "text_encoder");
  const cfg = inferConfig(file);
  const variant = opts.variant ?? (cfg.guidance_embeds ? "dev" : /base/i.test(path.basename(file)) ? "klein-base" : /kv/i.test(path.basename(file)) ? "klein-kv" : "klein");
  const ck: Checkpoint = {
    source: file, variant, defaults: VARIANT_DEFAULTS[variant], transformer,
    vae: vaeFromPath(need(opts.vae, "vae"), null),
    textEncoder: { weights: teDir, config: teConfig, kind: textEncoderKind(teConfig) },
    tokenizer: need(opts.tokenizer, "tokenizer"),
  };
  checkComponentsFit(ck);
  return ck;
}

function inferConfig(file: string): TransformerConfig {
  const set = WeightSet.open(file);
  try {
    return new TransformerWeights(set, TransformerWeights.detectFormat(set)).inferConfig();
  } finally {
    set.close();
  }
}

/** The transformer config of a checkpoint (from config.json or inferred from a BFL file). */
export function transformerConfig(ck: Checkpoint): TransformerConfig {
  return ck.transformer.config ? readTransformerConfig(ck.transformer.config) : inferConfig(ck.transformer.weights);
}
