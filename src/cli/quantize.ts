// flux2 quantize: write an int8 / int4 copy of a FLUX.2 checkpoint as a loadable diffusers folder.

import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { WeightSet } from "../io/safetensors.js";
import { Qwen3Weights, readQwen3Config } from "../models/qwen3.js";
import { TransformerWeights } from "../models/transformer_weights.js";
import { expectedTransformerShapes } from "../models/transformer_weights.js";
import { VAE_DEFAULTS } from "../models/vae.js";
import { openCheckpoint, transformerConfig } from "../pipeline/checkpoint.js";
import { VARIANT_CARDS } from "../pipeline/variants.js";
import { InvalidRequestError } from "../util/errors.js";
import { specFor, type QuantSpec } from "../models/quantized/blockwise.js";
import { decoderTargets, passthroughOf, transformerTargets, writeQuantizedFile, type Passthrough, type Progress } from "../quant/quantize.js";
import { intOption, logger } from "./common.js";

const HELP = `usage: flux2 quantize --model PATH --bits 8|4 --out DIR [options]

Writes a copy of a FLUX.2 [klein] checkpoint whose transformer and text-encoder
Linear weights are quantized (8 bits: symmetric, one scale per output channel,
for ONNX Runtime's integer GEMM (DynamicQuantizeMatMul); 8 bits with
--block-size or --asymmetric: blocks for MatMulNBits; 4 bits: asymmetric with
zero points, blocks of 32, for MatMulNBits), as
a diffusers folder that generate / edit load like any other (the VAE, tokenizer
and scheduler are linked or copied unchanged). Embedders, modulation, output
layer, norms and the token embedding stay as stored. FP8 checkpoints (BFL
*-fp8.safetensors: F8_E4M3 weights with weight_scale) are dequantized and
requantized directly. Instead of a saved copy, generate / edit also take
--quantize int8|int8-block|int4, which quantizes once into $FLUX2_CACHE/quant.

  --model PATH          diffusers folder, or a BFL single transformer file
                        (then also --vae, --text-encoder, --tokenizer)
  --transformer FILE    use this transformer file (e.g. a BFL fp8 file)
  --vae, --text-encoder, --tokenizer PATH   as for generate
  --bits 8|4            code width
  --block-size N        values per block along the input dimension (power of
                        two, 16-256; 8 bits: MatMulNBits blocks (default: one
                        scale per channel); default 32 for 4 bits)
  --symmetric / --asymmetric   override the default (8: symmetric, 4: asymmetric)
  --components LIST     transformer,text_encoder (default both)
  --out DIR             the new folder (must not exist, unless --force)
  --force               write into an existing folder
  -h, --help            this text`;

const OPTIONS = {
  model: { type: "string" }, transformer: { type: "string" }, vae: { type: "string" }, "text-encoder": { type: "string" },
  tokenizer: { type: "string" }, bits: { type: "string" }, "block-size": { type: "string" }, symmetric: { type: "boolean" },
  asymmetric: { type: "boolean" }, components: { type: "string" }, out: { type: "string" }, force: { type: "boolean" },
  quiet: { type: "boolean" }, help: { type: "boolean", short: "h" },
} as const;

function linkOrCopy(from: string, to: string): void {
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.rmSync(to, { force: true });
  try {
    fs.linkSync(fs.realpathSync(from), to);
  } catch {
    fs.copyFileSync(from, to);
  }
}

function copyTree(from: string, to: string): void {
  if (fs.statSync(from).isDirectory()) {
    for (const f of fs.readdirSync(from)) copyTree(path.join(from, f), path.join(to, f));
  } else {
    linkOrCopy(from, to);
  }
}

function progressLog(log: (s: string) => void, what: string): Progress {
  let last = -1;
  return (done, total) => {
    const pct = Math.floor((100 * done) / total);
    if (pct >= last + 10 || (done === total && pct !== last)) {
      last = pct;
      log(`${what}: ${pct}%`);
    }
  };
}

/** A non-quantized transformer weight in diffusers naming: its stored bytes, or float32 when it must be converted (FP8, BFL swapped halves). */
function transformerPassthrough(w: TransformerWeights, name: string, shape: number[]): Passthrough {
  let src: ReturnType<TransformerWeights["source"]> | null = null;
  try {
    src = w.source(name);
  } catch {
    src = null; // e.g. a BFL norm_out (halves swapped): converted below
  }
  if (src && src.kind === "file" && src.dtype !== "F8_E4M3" && src.dtype !== "F8_E5M2") {
    const s = src;
    return { name, dtype: s.dtype, shape: s.shape, read: () => readRange(s.file, s.offset, s.byteLength) };
  }
  // FP8 (dequantized with its scale) or reordered (BFL norm_out halves): float32.
  return { name, dtype: "F32", shape, read: () => new Uint8Array(w.float32(name).data.buffer) };
}

function readRange(file: string, offset: number, length: number): Uint8Array {
  const fd = fs.openSync(file, "r");
  try {
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, buf, done, Math.min(length - done, 1 << 30), offset + done);
      if (n === 0) throw new Error(`${file}: unexpected end of file`);
      done += n;
    }
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

export async function runQuantizeCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: false });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const log = logger(v.quiet);
  if (!v.model) throw new InvalidRequestError("--model is required (a FLUX.2 diffusers folder or single file); see --help");
  if (!v.out) throw new InvalidRequestError("--out DIR is required");
  if (v.bits !== "8" && v.bits !== "4") throw new InvalidRequestError(`--bits must be 8 or 4, got ${JSON.stringify(v.bits)}`);
  if (v.symmetric && v.asymmetric) throw new InvalidRequestError("--symmetric and --asymmetric exclude each other");
  const blockSize = intOption(v["block-size"], "block-size", 16, 256);
  if (blockSize !== undefined && (blockSize & (blockSize - 1)) !== 0) throw new InvalidRequestError(`--block-size must be a power of two, got ${blockSize}`);
  const kind = v.bits === "4" ? "int4" : blockSize !== undefined || v.asymmetric ? "int8-block" : "int8";
  const spec: QuantSpec = { ...specFor(kind, blockSize) };
  if (v.symmetric) spec.symmetric = true;
  if (v.asymmetric) spec.symmetric = false;
  const components = (v.components ?? "transformer,text_encoder").split(",").map((s) => s.trim());
  for (const c of components) if (c !== "transformer" && c !== "text_encoder") throw new InvalidRequestError(`--components: "${c}" is not transformer or text_encoder`);
  const out = path.resolve(v.out);
  if (fs.existsSync(out) && fs.readdirSync(out).length && !v.force) throw new InvalidRequestError(`--out ${v.out} exists and is not empty (use --force to write into it)`);

  const ck = openCheckpoint(v.model, { transformer: v.transformer, vae: v.vae, textEncoder: v["text-encoder"], tokenizer: v.tokenizer });
  if (ck.textEncoder.kind !== "qwen3" && components.includes("text_encoder")) {
    throw new InvalidRequestError("quantizing the Mistral text encoder of FLUX.2 [dev] is not supported; use --components transformer");
  }
  const t0 = performance.now();
  fs.mkdirSync(out, { recursive: true });
  const root = fs.statSync(v.model).isDirectory() ? v.model : null;
  const pc = VARIANT_CARDS[ck.variant].diffusers;
  const index = root && fs.existsSync(path.join(root, "model_index.json"))
    ? JSON.parse(fs.readFileSync(path.join(root, "model_index.json"), "utf8"))
    : {
        _class_name: pc.pipeline, ...(pc.isDistilled !== undefined ? { is_distilled: pc.isDistilled } : {}),
        scheduler: ["diffusers", "FlowMatchEulerDiscreteScheduler"], text_encoder: ["transformers", "Qwen3ForCausalLM"],
        tokenizer: ["transformers", "Qwen2TokenizerFast"], transformer: ["diffusers", "Flux2Transformer2DModel"], vae: ["diffusers", "AutoencoderKLFlux2"],
      };
  fs.writeFileSync(path.join(out, "model_index.json"), JSON.stringify(index, null, 2) + "\n");
  if (root && fs.existsSync(path.join(root, "scheduler"))) copyTree(path.join(root, "scheduler"), path.join(out, "scheduler"));
  copyTree(ck.tokenizer, path.join(out, "tokenizer"));
  // VAE unchanged (folder, or a BFL ae.safetensors placed in vae/).
  if (fs.statSync(ck.vae.weights).isDirectory()) copyTree(ck.vae.weights, path.join(out, "vae"));
  else linkOrCopy(ck.vae.weights, path.join(out, "vae", "diffusion_pytorch_model.safetensors"));
  if (!fs.existsSync(path.join(out, "vae", "config.json"))) {
    const cfg = ck.vae.config ? JSON.parse(fs.readFileSync(ck.vae.config, "utf8")) : { _class_name: "AutoencoderKLFlux2", ...VAE_DEFAULTS };
    fs.writeFileSync(path.join(out, "vae", "config.json"), JSON.stringify(cfg, null, 2) + "\n");
  }

  // Transformer: quantized block Linears + every other weight under its diffusers name.
  const tcfg = transformerConfig(ck);
  const tw = new TransformerWeights(WeightSet.open(ck.transformer.weights), ck.transformer.format);
  const tdir = path.join(out, "transformer");
  fs.mkdirSync(tdir, { recursive: true });
  fs.writeFileSync(path.join(tdir, "config.json"), JSON.stringify({ _class_name: "Flux2Transformer2DModel", ...tcfg }, null, 2) + "\n");
  const tfile = path.join(tdir, "diffusion_pytorch_model.safetensors");
  if (components.includes("transformer")) {
    if (tw.quant) throw new InvalidRequestError(`${ck.transformer.weights} is already quantized`);
    const targets = transformerTargets(tw, tcfg, spec);
    const quantized = new Set(targets.map((t) => t.name));
    const rest = expectedTransformerShapes(tcfg).filter(([n]) => !quantized.has(n)).map(([n, s]) => transformerPassthrough(tw, n, s));
    writeQuantizedFile(tfile, targets, rest, spec, { source: path.basename(ck.transformer.weights) }, progressLog(log, `transformer int${spec.bits}`));
  } else if (ck.transformer.format === "diffusers") {
    copyTree(ck.transformer.weights, tdir);
  } else {
    linkOrCopy(ck.transformer.weights, path.join(out, path.basename(ck.transformer.weights)));
  }
  tw.set.close();

  // Text encoder: quantized projections + everything else as stored.
  const teDir = path.join(out, "text_encoder");
  if (components.includes("text_encoder")) {
    const qcfg = readQwen3Config(ck.textEncoder.config!);
    const qw = new Qwen3Weights(WeightSet.open(ck.textEncoder.weights));
    if (qw.quant) throw new InvalidRequestError(`${ck.textEncoder.weights} is already quantized`);
    const targets = decoderTargets(qw, qcfg, spec);
    const quantized = new Set(targets.map((t) => t.name));
    const rest = qw.set.keys().filter((k) => !quantized.has(k)).sort().map((k) => passthroughOf(qw.set, k));
    fs.mkdirSync(teDir, { recursive: true });
    writeQuantizedFile(path.join(teDir, "model.safetensors"), targets, rest, spec, {}, progressLog(log, `text encoder int${spec.bits}`));
    qw.set.close();
    linkOrCopy(ck.textEncoder.config!, path.join(teDir, "config.json"));
  } else {
    copyTree(ck.textEncoder.weights, teDir);
  }

  const size = (p: string): number => fs.statSync(p).isDirectory() ? fs.readdirSync(p).reduce((n, f) => n + size(path.join(p, f)), 0) : fs.statSync(p).size;
  log(`wrote ${out} (${(size(out) / 1e9).toFixed(2)} GB) in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  return 0;
}
