// LoRA files for the FLUX.2 transformer: detect the naming scheme, map every
// module onto the diffusers weight it changes, and compute its scale.
//
// Accepted (docs/FLUX2-spec.md §8, diffusers `Flux2LoraLoaderMixin.lora_state_dict`, plus the
// extensions listed below):
//
// * diffusers / PEFT: `transformer.<diffusers module>.lora_A.weight` / `.lora_B.weight`
//   (older `.lora.down` / `.lora.up`, `.lora_linear_layer.down/up`). Scale from the header
//   metadata `lora_adapter_metadata` (the PEFT LoraConfig, keys `transformer.*`):
//   lora_alpha / r per module, rank_pattern / alpha_pattern matched as PEFT does
//   (`^(.*\.)?(pattern)$` on the module name), lora_alpha / sqrt(r) with use_rslora;
//   without metadata scale 1 (diffusers mirrors each module's rank into its alpha).
// * kohya / sd-scripts: `lora_unet_<BFL module, "_" for ".">.lora_down.weight` /
//   `.lora_up.weight` / `.alpha`: scale alpha / rank (alpha defaults to rank). diffusers
//   splits this scale between down and up; the product is the same.
// * BFL / ai-toolkit / fal: `diffusion_model.<BFL module>.lora_A/B.weight` (or the PEFT
//   wrapper prefix `base_model.model.`), scale 1. A fused `qkv` LoRA is split over the
//   three diffusers projections: lora_A shared, lora_B in three row chunks; when the rank
//   is a multiple of 3 and lora_B is block diagonal (each third only uses its own rank
//   third) each projection gets its block instead (kohya's check; the same delta, a third
//   of the rank).
// * DiffSynth-Studio: its FLUX.2 DiT uses the diffusers module names and it saves the
//   PEFT parameters with the wrapper prefix removed, so keys are the bare diffusers
//   names, e.g. `transformer_blocks.0.attn.to_q.lora_A.default.weight` (its trainer sets
//   lora_alpha = rank: scale 1). diffusers itself ignores such files (no `transformer.`).
// * LyCORIS LoHa (`hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`, `.alpha`):
//   delta = (w1_a w1_b) ⊙ (w2_a w2_b) · alpha / rank(w1_b); LoKr (`lokr_w1` or
//   `lokr_w1_a`·`lokr_w1_b`, `lokr_w2` or `lokr_w2_a`·`lokr_w2_b`, `.alpha`):
//   delta = kron(w1, w2) · alpha / r, r the rank of the factorised factor (w2's when both
//   are), scale 1 without alpha or without a factorised factor. Both become dense deltas.
//   The conv-only Tucker cores (`hada_t1/2`, `lokr_t2`) are refused. `.diff` (a full
//   weight difference) is a dense delta with scale 1.
//
// Module names may use either vocabulary (diffusers `transformer_blocks.N.attn.to_q`
// or BFL `double_blocks.N.img_attn.qkv`), dotted or with "_" for "." (kohya / LyCORIS /
// OneTrainer `lora_transformer_` style), under any of the prefixes above.
//
// Extensions over diffusers, all deliberate: a module's `.alpha` tensor gives
// alpha / rank in every format (diffusers refuses it outside the kohya path); the
// modulation, guidance and final-layer modules of kohya files are applied (diffusers
// drops them with a warning); `lora_down/up` keys under `transformer.` or
// `diffusion_model.` are read (diffusers' kohya branch drops them).
//
// norm_out: BFL's `final_layer.adaLN_modulation.1` stores (shift; scale) where diffusers'
// `norm_out.linear` stores (scale; shift). diffusers maps a BFL-named LoRA of that module
// onto norm_out.linear WITHOUT swapping the halves of its lora_B, so the trained shift
// delta lands on the scale rows and vice versa. We swap them: the delta changes the rows
// it was trained on, as in BFL's own code. (A diffusers-named `norm_out.linear` LoRA is
// already in diffusers order and is not swapped.) This differs from diffusers on purpose.
//
// Not applied, and listed in the report: DoRA (`dora_scale`, `lora_magnitude_vector`;
// diffusers drops dora_scale too), lora_B biases, text-encoder parts (`lora_te*`,
// `text_encoder*`).

import { SafetensorsFile, toFloat32 } from "../io/safetensors.js";

export type LoraFormat = "diffusers" | "kohya" | "ai-toolkit" | "diffsynth" | "lycoris" | "mixed" | "empty";

/** delta = scale · B @ A, A [rank, in], B [out, rank] (row-major float32). */
export interface LowRankDelta {
  kind: "lowrank";
  A: Float32Array;
  B: Float32Array;
  rank: number;
  inFeatures: number;
  outFeatures: number;
  scale: number;
  /** The LoRA keys it came from (for messages). */
  source: string;
}

/** delta = scale · W, W [out, in]: LoKr / LoHa / full differences. */
export interface DenseDelta {
  kind: "dense";
  W: Float32Array;
  inFeatures: number;
  outFeatures: number;
  scale: number;
  source: string;
}

export type LoraDelta = LowRankDelta | DenseDelta;

export interface LoraReport {
  /** Diffusers weight names the adapter changes. */
  applied: string[];
  /** Keys read but deliberately not applied (DoRA magnitudes, biases, orphan alphas...). */
  ignored: string[];
  /** Keys whose module is not a FLUX.2 transformer linear layer (or that the model lacks). */
  unknown: string[];
  /** Text-encoder keys (not supported). */
  unsupportedTextEncoder: string[];
  /** Human-readable remarks (format, swaps, merges). */
  notes: string[];
}

export interface LoraAdapter {
  name: string;
  /** File path (or "<memory>"). */
  source: string;
  format: LoraFormat;
  /** By diffusers weight name, e.g. `transformer_blocks.0.attn.to_q.weight`, in file order. */
  deltas: Map<string, LoraDelta>;
  report: LoraReport;
}

export class LoraError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LoraError";
  }
}

/** One float32 tensor of a LoRA file. */
export interface LoraTensor {
  shape: number[];
  data: Float32Array;
}

// ---------------------------------------------------------------------------
// Module names → diffusers targets

interface Target {
  /** Diffusers weight name. */
  name: string;
  /** Which of `of` equal row chunks of the source's output rows (fused qkv). */
  part?: number;
  of?: number;
  /** Swap the two row halves (BFL final_layer.adaLN_modulation.1 → diffusers norm_out). */
  swapHalves?: boolean;
}

interface Rule {
  dotted: RegExp;
  underscored: RegExp;
  vocab: "diffusers" | "bfl";
  targets: (i: string) => Target[];
}

function rule(pattern: string, vocab: "diffusers" | "bfl", targets: (i: string) => Target[]): Rule {
  const re = (sep: string) => new RegExp(`^${pattern.split(".").map((p) => p.replace("{i}", "(\\d+)")).join(sep)}$`);
  return { dotted: re("\\."), underscored: re("_"), vocab, targets };
}

const w = (name: string): Target[] => [{ name: `${name}.weight` }];
const split3 = (names: string[]): Target[] => names.map((n, part) => ({ name: `${n}.weight`, part, of: 3 }));

const RULES: Rule[] = [
  // diffusers names (docs/FLUX2-spec.md §7.1)
  ...["x_embedder", "context_embedder", "proj_out", "norm_out.linear",
    "time_guidance_embed.timestep_embedder.linear_1", "time_guidance_embed.timestep_embedder.linear_2",
    "time_guidance_embed.guidance_embedder.linear_1", "time_guidance_embed.guidance_embedder.linear_2",
    "double_stream_modulation_img.linear", "double_stream_modulation_txt.linear", "single_stream_modulation.linear",
  ].map((n) => rule(n, "diffusers", () => w(n))),
  ...["attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj",
    "attn.to_out.0", "attn.to_add_out", "ff.linear_in", "ff.linear_out", "ff_context.linear_in", "ff_context.linear_out",
  ].map((n) => rule(`transformer_blocks.{i}.${n}`, "diffusers", (i) => w(`transformer_blocks.${i}.${n}`))),
  rule("transformer_blocks.{i}.attn.to_qkv", "diffusers", (i) =>
    split3(["to_q", "to_k", "to_v"].map((p) => `transformer_blocks.${i}.attn.${p}`))),
  rule("transformer_blocks.{i}.attn.to_added_qkv", "diffusers", (i) =>
    split3(["add_q_proj", "add_k_proj", "add_v_proj"].map((p) => `transformer_blocks.${i}.attn.${p}`))),
  ...["attn.to_qkv_mlp_proj", "attn.to_out"].map((n) =>
    rule(`single_transformer_blocks.{i}.${n}`, "diffusers", (i) => w(`single_transformer_blocks.${i}.${n}`))),
  // BFL names (docs/FLUX2-spec.md §7.2–7.3)
  ...Object.entries({
    img_in: "x_embedder", txt_in: "context_embedder", "final_layer.linear": "proj_out",
    "time_in.in_layer": "time_guidance_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_guidance_embed.timestep_embedder.linear_2",
    "guidance_in.in_layer": "time_guidance_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_guidance_embed.guidance_embedder.linear_2",
    "double_stream_modulation_img.lin": "double_stream_modulation_img.linear",
    "double_stream_modulation_txt.lin": "double_stream_modulation_txt.linear",
    "single_stream_modulation.lin": "single_stream_modulation.linear",
  }).map(([b, d]) => rule(b, "bfl", () => w(d))),
  rule("final_layer.adaLN_modulation.1", "bfl", () => [{ name: "norm_out.linear.weight", swapHalves: true }]),
  rule("double_blocks.{i}.img_attn.qkv", "bfl", (i) =>
    split3(["to_q", "to_k", "to_v"].map((p) => `transformer_blocks.${i}.attn.${p}`))),
  rule("double_blocks.{i}.txt_attn.qkv", "bfl", (i) =>
    split3(["add_q_proj", "add_k_proj", "add_v_proj"].map((p) => `transformer_blocks.${i}.attn.${p}`))),
  ...Object.entries({
    "img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.linear_in", "img_mlp.2": "ff.linear_out",
    "txt_mlp.0": "ff_context.linear_in", "txt_mlp.2": "ff_context.linear_out",
  }).map(([b, d]) => rule(`double_blocks.{i}.${b}`, "bfl", (i) => w(`transformer_blocks.${i}.${d}`))),
  rule("single_blocks.{i}.linear1", "bfl", (i) => w(`single_transformer_blocks.${i}.attn.to_qkv_mlp_proj`)),
  rule("single_blocks.{i}.linear2", "bfl", (i) => w(`single_transformer_blocks.${i}.attn.to_out`)),
];

type Style = "diffusers" | "kohya" | "ai-toolkit" | "diffsynth";

/** Prefixes stripped from module paths, and the naming style each indicates. */
const PREFIXES: [string, Style][] = [
  ["base_model.model.", "ai-toolkit"],
  ["model.diffusion_model.", "ai-toolkit"],
  ["diffusion_model.", "ai-toolkit"],
  ["transformer.", "diffusers"],
  ["lora_unet_", "kohya"],
  ["lycoris_", "kohya"],
  ["lora_transformer_", "kohya"],
];

/** Resolve a module path (key without its LoRA suffix) to its diffusers targets. */
export function resolveModule(path: string): { targets: Target[]; style: Style } | null {
  let style: Style | null = null;
  for (let changed = true; changed;) {
    changed = false;
    for (const [p, s] of PREFIXES) {
      if (path.startsWith(p)) {
        path = path.slice(p.length);
        style ??= s;
        changed = true;
      }
    }
  }
  // ai-toolkit's typo prefix, accepted by diffusers.
  if (path.startsWith("sformer_blocks.")) path = "tran" + path;
  for (const r of RULES) {
    const m = path.match(r.dotted) ?? path.match(r.underscored);
    if (m) return { targets: r.targets(m[1] ?? ""), style: style ?? "diffsynth" };
  }
  return null;
}

// ---------------------------------------------------------------------------
// Key suffixes

type Role =
  | "A" | "B" | "alpha" | "diff"
  | "hada_w1_a" | "hada_w1_b" | "hada_w2_a" | "hada_w2_b" | "hada_t1" | "hada_t2"
  | "lokr_w1" | "lokr_w1_a" | "lokr_w1_b" | "lokr_w2" | "lokr_w2_a" | "lokr_w2_b" | "lokr_t2";

const ROLE_SUFFIXES: [RegExp, Role][] = [
  [/\.lora_A(?:\.[^.]+)?\.weight$/, "A"], [/\.lora_B(?:\.[^.]+)?\.weight$/, "B"],
  [/\.lora_down\.weight$/, "A"], [/\.lora_up\.weight$/, "B"],
  [/\.lora\.down\.weight$/, "A"], [/\.lora\.up\.weight$/, "B"],
  [/\.lora_linear_layer\.down\.weight$/, "A"], [/\.lora_linear_layer\.up\.weight$/, "B"],
  [/\.alpha$/, "alpha"], [/\.diff$/, "diff"],
  ...(["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2",
    "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_w1", "lokr_w2", "lokr_t2"] as Role[])
    .map((r): [RegExp, Role] => [new RegExp(`\\.${r}$`), r]),
];

/** Keys read but deliberately not applied, with the reason. */
const IGNORED: [RegExp, string][] = [
  [/(^|\.)dora_scale$/, "DoRA magnitude (dora_scale) is not supported; diffusers drops it too"],
  [/lora_magnitude_vector/, "DoRA magnitude (lora_magnitude_vector) is not supported"],
  [/\.lora_B(?:\.[^.]+)?\.bias$|\.lora_up\.bias$/, "lora_B bias is not supported (FLUX.2 linear layers have no bias)"],
  [/\.diff_b$/, "bias difference is not supported (FLUX.2 linear layers have no bias)"],
];

const TEXT_ENCODER = /^(lora_te\d*_|text_encoders?(_\d+)?\.|lora_te\d*\.|te\d?\.)/;

// ---------------------------------------------------------------------------
// PEFT metadata (diffusers `lora_adapter_metadata`)

export interface PeftScaling {
  r: number;
  loraAlpha: number;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  useRslora: boolean;
}

/** The transformer's PEFT LoraConfig from a file's header metadata, or null. */
export function peftScaling(metadata: Record<string, string>): PeftScaling | null {
  const raw = metadata["lora_adapter_metadata"];
  if (!raw) return null;
  let all: Record<string, unknown>;
  try {
    all = JSON.parse(raw);
  } catch {
    throw new LoraError(`header metadata "lora_adapter_metadata" is not JSON; the file is damaged or not a diffusers LoRA`);
  }
  const cfg: Record<string, any> = {};
  for (const [k, v] of Object.entries(all ?? {})) if (k.startsWith("transformer.")) cfg[k.slice("transformer.".length)] = v;
  // diffusers would build LoraConfig() from an empty dict (r = alpha = 8); scale 1 either way.
  if (Object.keys(cfg).length === 0) return null;
  return {
    r: Number(cfg.r ?? 8), loraAlpha: Number(cfg.lora_alpha ?? 8),
    rankPattern: cfg.rank_pattern ?? {}, alphaPattern: cfg.alpha_pattern ?? {}, useRslora: !!cfg.use_rslora,
  };
}

/** PEFT's get_pattern_key: the first pattern p with `^(.*\.)?(p)$` matching the module name. */
function patternValue(patterns: Record<string, number>, module: string): number | undefined {
  for (const [p, v] of Object.entries(patterns)) {
    let re: RegExp;
    try {
      re = new RegExp(`^(.*\\.)?(${p})$`);
    } catch {
      if (p === module) return Number(v);
      continue;
    }
    if (re.test(module)) return Number(v);
  }
  return undefined;
}

function peftScale(cfg: PeftScaling, module: string): { r: number; scale: number } {
  const r = patternValue(cfg.rankPattern, module) ?? cfg.r;
  const alpha = patternValue(cfg.alphaPattern, module) ?? cfg.loraAlpha;
  return { r, scale: cfg.useRslora ? alpha / Math.sqrt(r) : alpha / r };
}

// ---------------------------------------------------------------------------
// Parsing

/** Read and convert a LoRA .safetensors file. */
export function loadLoraFile(file: string, name?: string): LoraAdapter {
  const f = SafetensorsFile.open(file);
  try {
    const tensors = new Map<string, LoraTensor>();
    for (const [k, t] of f.tensors) tensors.set(k, { shape: t.shape, data: toFloat32(t.dtype, f.bytes(k)) });
    return parseLora(tensors, f.metadata, { name: name ?? defaultName(file), source: file });
  } catch (e) {
    if (e instanceof LoraError) e.message = `${file}: ${e.message}`;
    throw e;
  } finally {
    f.close();
  }
}

function defaultName(file: string): string {
  return file.split(/[\\/]/).pop()!.replace(/\.safetensors$/, "");
}

interface Group {
  path: string;
  keys: Map<Role, string>;
}

/** Convert LoRA tensors (already float32) into diffusers-named deltas. */
export function parseLora(
  tensors: Map<string, LoraTensor>,
  metadata: Record<string, string> = {},
  opts: { name?: string; source?: string } = {},
): LoraAdapter {
  const report: LoraReport = { applied: [], ignored: [], unknown: [], unsupportedTextEncoder: [], notes: [] };
  const groups = new Map<string, Group>();
  const ignoredWhy = new Set<string>();
  for (const key of tensors.keys()) {
    const bare = key.startsWith("base_model.model.") ? key.slice("base_model.model.".length) : key;
    if (TEXT_ENCODER.test(bare)) { report.unsupportedTextEncoder.push(key); continue; }
    const ign = IGNORED.find(([re]) => re.test(key));
    if (ign) { report.ignored.push(key); ignoredWhy.add(ign[1]); continue; }
    const suffix = ROLE_SUFFIXES.find(([re]) => re.test(key));
    if (!suffix) { report.unknown.push(key); continue; }
    const path = key.replace(suffix[0], "");
    let g = groups.get(path);
    if (!g) groups.set(path, (g = { path, keys: new Map() }));
    if (g.keys.has(suffix[1])) throw new LoraError(`keys "${g.keys.get(suffix[1])}" and "${key}" both give the ${suffix[1]} of module "${path}"`);
    g.keys.set(suffix[1], key);
  }
  for (const why of ignoredWhy) report.notes.push(why);
  if (report.unsupportedTextEncoder.length) {
    report.notes.push(`${report.unsupportedTextEncoder.length} text-encoder key(s) not applied: text-encoder LoRA is not supported`);
  }

  const peft = peftScaling(metadata);
  const deltas = new Map<string, LoraDelta>();
  const styles = new Set<string>();
  const get = (key: string | undefined) => (key === undefined ? undefined : tensors.get(key)!);

  for (const g of groups.values()) {
    const allKeys = [...g.keys.values()];
    const resolved = resolveModule(g.path);
    if (!resolved) { report.unknown.push(...allKeys); continue; }
    const alphaT = get(g.keys.get("alpha"));
    const alpha = alphaT ? alphaT.data[0] : undefined;
    const source = allKeys.join(", ");
    let made: { delta: LoraDelta; perTarget?: (t: Target) => number } | null = null;
    // Roles the chosen kind of adapter reads; any other key of the module is reported.
    let used: Role[] = [];

    if (g.keys.has("A") || g.keys.has("B")) {
      const A = get(g.keys.get("A")), B = get(g.keys.get("B"));
      if (!A || !B) {
        report.ignored.push(...allKeys);
        report.notes.push(`module "${g.path}" has ${A ? "lora_A/down" : "lora_B/up"} but no ${A ? "lora_B/up" : "lora_A/down"}: not applied (incomplete file?)`);
        continue;
      }
      const [rank, inF] = as2d(A, g.keys.get("A")!);
      const [outF, rankB] = as2d(B, g.keys.get("B")!);
      if (rank !== rankB) throw new LoraError(`module "${g.path}": lora_A is [${A.shape}] but lora_B is [${B.shape}]; their ranks differ`);
      const base = alpha !== undefined ? alpha / rank : 1;
      made = {
        delta: { kind: "lowrank", A: A.data, B: B.data, rank, inFeatures: inF, outFeatures: outF, scale: base, source },
        perTarget: peft ? (t) => {
          const module = t.name.replace(/\.weight$/, "");
          const p = peftScale(peft, module);
          if (p.r !== rank) {
            throw new LoraError(`module "${g.path}" has rank ${rank} but the file's lora_adapter_metadata says r=${p.r} for "${module}"; the metadata does not match the weights`);
          }
          return base * p.scale;
        } : undefined,
      };
      styles.add(resolved.style);
      used = ["A", "B", "alpha"];
    } else if (g.keys.has("hada_w1_a")) {
      if (g.keys.has("hada_t1") || g.keys.has("hada_t2")) throw new LoraError(`module "${g.path}": LoHa Tucker cores (hada_t1/hada_t2) are for convolutions; not supported on FLUX.2 linear layers`);
      const need = (r: Role) => {
        const t = get(g.keys.get(r));
        if (!t) throw new LoraError(`LoHa module "${g.path}" lacks ${r}`);
        return t;
      };
      const m1 = matmul(need("hada_w1_a"), need("hada_w1_b"), g.path);
      const m2 = matmul(need("hada_w2_a"), need("hada_w2_b"), g.path);
      if (m1.rows !== m2.rows || m1.cols !== m2.cols) throw new LoraError(`LoHa module "${g.path}": the two products have shapes [${m1.rows},${m1.cols}] and [${m2.rows},${m2.cols}]`);
      for (let i = 0; i < m1.data.length; i++) m1.data[i] *= m2.data[i];
      const dim = as2d(need("hada_w1_b"), g.keys.get("hada_w1_b")!)[0];
      made = { delta: { kind: "dense", W: m1.data, outFeatures: m1.rows, inFeatures: m1.cols, scale: alpha !== undefined ? alpha / dim : 1, source } };
      styles.add("lycoris");
      used = ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"];
    } else if ([...g.keys.keys()].some((r) => r.startsWith("lokr_"))) {
      if (g.keys.has("lokr_t2")) throw new LoraError(`module "${g.path}": LoKr Tucker core (lokr_t2) is for convolutions; not supported on FLUX.2 linear layers`);
      let dim: number | undefined;
      const factor = (n: 1 | 2) => {
        const full = get(g.keys.get(`lokr_w${n}`));
        if (full) {
          const [r, c] = as2d(full, g.keys.get(`lokr_w${n}`)!);
          return { rows: r, cols: c, data: full.data };
        }
        const a = get(g.keys.get(`lokr_w${n}_a`)), b = get(g.keys.get(`lokr_w${n}_b`));
        if (!a || !b) throw new LoraError(`LoKr module "${g.path}" lacks lokr_w${n} (or lokr_w${n}_a and lokr_w${n}_b)`);
        dim = as2d(b, g.keys.get(`lokr_w${n}_b`)!)[0];
        return matmul(a, b, g.path);
      };
      const w1 = factor(1), w2 = factor(2);
      const W = kron(w1, w2);
      made = { delta: { kind: "dense", W: W.data, outFeatures: W.rows, inFeatures: W.cols, scale: alpha !== undefined && dim !== undefined ? alpha / dim : 1, source } };
      styles.add("lycoris");
      used = ["lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "alpha"];
    } else if (g.keys.has("diff")) {
      const d = get(g.keys.get("diff"))!;
      const [r, c] = as2d(d, g.keys.get("diff")!);
      made = { delta: { kind: "dense", W: d.data, outFeatures: r, inFeatures: c, scale: 1, source } };
      styles.add("lycoris");
      used = ["diff"];
    } else {
      report.ignored.push(...allKeys); // an alpha without weights
      continue;
    }

    const unused = [...g.keys].filter(([r]) => !used.includes(r)).map(([, k]) => k);
    if (unused.length) {
      report.ignored.push(...unused);
      report.notes.push(`module "${g.path}" mixes adapter kinds; used ${made.delta.kind === "lowrank" ? "its LoRA up/down" : "its " + used[0].replace(/_.*/, "") + " weights"}, ignored ${unused.join(", ")}`);
    }
    for (const t of resolved.targets) {
      let d = targetDelta(made.delta, t, g.path);
      if (made.perTarget) d = { ...d, scale: made.perTarget(t) };
      if (t.swapHalves) report.notes.push(`${g.path}: BFL (shift; scale) rows swapped to diffusers norm_out.linear (scale; shift) order`);
      const prev = deltas.get(t.name);
      if (prev) report.notes.push(`${t.name}: several modules of the file change it; their deltas are summed`);
      deltas.set(t.name, prev ? mergeDeltas(prev, d) : d);
    }
  }
  report.applied = [...deltas.keys()];
  const format: LoraFormat = styles.size === 0 ? "empty" : styles.size === 1 ? ([...styles][0] as LoraFormat) : "mixed";
  return { name: opts.name ?? "lora", source: opts.source ?? "<memory>", format, deltas, report };
}

/** [rows, cols] of a matrix, accepting trailing unit dims (conv-style [r, in, 1, 1]). */
function as2d(t: LoraTensor, key: string): [number, number] {
  const s = t.shape;
  if (s.length === 2) return [s[0], s[1]];
  if (s.length > 2 && s.slice(2).every((d) => d === 1)) return [s[0], s[1]];
  throw new LoraError(`tensor "${key}" has shape [${s}]; a FLUX.2 linear-layer LoRA needs a matrix`);
}

function matmul(a: LoraTensor, b: LoraTensor, module: string) {
  const [m, k] = as2d(a, `${module} (a)`), [k2, n] = as2d(b, `${module} (b)`);
  if (k !== k2) throw new LoraError(`module "${module}": factors [${a.shape}] and [${b.shape}] cannot be multiplied`);
  const out = new Float32Array(m * n);
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    row.fill(0);
    for (let p = 0; p < k; p++) {
      const av = a.data[i * k + p];
      if (av === 0) continue;
      const bo = p * n;
      for (let j = 0; j < n; j++) row[j] += av * b.data[bo + j];
    }
    out.set(row, i * n);
  }
  return { rows: m, cols: n, data: out };
}

function kron(a: { rows: number; cols: number; data: Float32Array }, b: { rows: number; cols: number; data: Float32Array }) {
  const rows = a.rows * b.rows, cols = a.cols * b.cols;
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) {
    const av = a.data[i * a.cols + j];
    for (let k = 0; k < b.rows; k++) for (let l = 0; l < b.cols; l++) {
      out[(i * b.rows + k) * cols + j * b.cols + l] = av * b.data[k * b.cols + l];
    }
  }
  return { rows, cols, data: out };
}

/** The part of a module's delta that lands on one target (row chunk, halves swapped). */
function targetDelta(d: LoraDelta, t: Target, module: string): LoraDelta {
  let out = d;
  if (t.of) {
    if (d.outFeatures % t.of !== 0) throw new LoraError(`module "${module}" has ${d.outFeatures} output rows, not divisible into ${t.of} (q, k, v)`);
    const rows = d.outFeatures / t.of, r0 = t.part! * rows;
    if (d.kind === "dense") {
      out = { ...d, W: d.W.slice(r0 * d.inFeatures, (r0 + rows) * d.inFeatures), outFeatures: rows };
    } else if (blockDiagonal(d, t.of)) {
      const r = d.rank / t.of, c0 = t.part! * r;
      const B = new Float32Array(rows * r);
      for (let i = 0; i < rows; i++) for (let j = 0; j < r; j++) B[i * r + j] = d.B[(r0 + i) * d.rank + c0 + j];
      out = { ...d, A: d.A.slice(c0 * d.inFeatures, (c0 + r) * d.inFeatures), B, rank: r, outFeatures: rows };
    } else {
      out = { ...d, B: d.B.slice(r0 * d.rank, (r0 + rows) * d.rank), outFeatures: rows };
    }
  }
  if (t.swapHalves) {
    if (out.outFeatures % 2 !== 0) throw new LoraError(`module "${module}" has an odd number of output rows (${out.outFeatures})`);
    const cols = out.kind === "dense" ? out.inFeatures : out.rank;
    const src = out.kind === "dense" ? out.W : out.B;
    const half = (out.outFeatures / 2) * cols;
    const sw = new Float32Array(src.length);
    sw.set(src.subarray(half), 0);
    sw.set(src.subarray(0, half), half);
    out = out.kind === "dense" ? { ...out, W: sw } : { ...out, B: sw };
  }
  return out;
}

/** Each of the `parts` row chunks of B uses only its own rank chunk (kohya's sparse qkv check). */
function blockDiagonal(d: LowRankDelta, parts: number): boolean {
  if (d.rank % parts !== 0) return false;
  const rows = d.outFeatures / parts, r = d.rank / parts;
  for (let p = 0; p < parts; p++) {
    for (let i = p * rows; i < (p + 1) * rows; i++) {
      for (let j = 0; j < d.rank; j++) {
        if (Math.floor(j / r) !== p && d.B[i * d.rank + j] !== 0) return false;
      }
    }
  }
  return true;
}

/** Two deltas on one weight: concatenate the ranks (scales folded into A) or sum densely. */
export function mergeDeltas(a: LoraDelta, b: LoraDelta): LoraDelta {
  if (a.outFeatures !== b.outFeatures || a.inFeatures !== b.inFeatures) {
    throw new LoraError(`two modules change the same weight with shapes [${a.outFeatures}, ${a.inFeatures}] (${a.source}) and [${b.outFeatures}, ${b.inFeatures}] (${b.source})`);
  }
  const source = `${a.source}; ${b.source}`;
  if (a.kind === "lowrank" && b.kind === "lowrank") {
    const n = a.inFeatures, r = a.rank + b.rank;
    const A = new Float32Array(r * n);
    for (let i = 0; i < a.A.length; i++) A[i] = a.A[i] * a.scale;
    for (let i = 0; i < b.A.length; i++) A[a.A.length + i] = b.A[i] * b.scale;
    const B = new Float32Array(a.outFeatures * r);
    for (let o = 0; o < a.outFeatures; o++) {
      B.set(a.B.subarray(o * a.rank, (o + 1) * a.rank), o * r);
      B.set(b.B.subarray(o * b.rank, (o + 1) * b.rank), o * r + a.rank);
    }
    return { kind: "lowrank", A, B, rank: r, inFeatures: n, outFeatures: a.outFeatures, scale: 1, source };
  }
  const W = denseOf(a);
  const Wb = denseOf(b);
  for (let i = 0; i < W.length; i++) W[i] += Wb[i];
  return { kind: "dense", W, inFeatures: a.inFeatures, outFeatures: a.outFeatures, scale: 1, source };
}

/** scale · delta as a dense [out, in] matrix. */
export function denseOf(d: LoraDelta): Float32Array {
  const out = new Float32Array(d.outFeatures * d.inFeatures);
  if (d.kind === "dense") {
    for (let i = 0; i < out.length; i++) out[i] = d.W[i] * d.scale;
    return out;
  }
  const n = d.inFeatures, row = new Float64Array(n);
  for (let o = 0; o < d.outFeatures; o++) {
    row.fill(0);
    for (let k = 0; k < d.rank; k++) {
      const b = d.B[o * d.rank + k];
      if (b === 0) continue;
      const ao = k * n;
      for (let i = 0; i < n; i++) row[i] += b * d.A[ao + i];
    }
    for (let i = 0; i < n; i++) out[o * n + i] = row[i] * d.scale;
  }
  return out;
}

/** [out, in] of a delta. */
export function deltaShape(d: LoraDelta): [number, number] {
  return [d.outFeatures, d.inFeatures];
}

