// Text-encoder alignment: training a Qwen3 text encoder on (caption, picture) pairs so that its
// prompt embeddings say what the picture looks like, before the transformer is trained on them.
//
// Why: a randomly initialised encoder gives every token a distinct but meaningless code, and a
// small transformer trained on a CPU for an hour does not learn to decode a hex colour from
// such codes (docs/flux2-mini.md, sessions 7–8). A real checkpoint's encoder arrives pretrained
// on text; flux2-mini's cannot, so it is taught here, from the training set itself, what its
// captions mean in pixels.
//
// The objective reads the prompt embeddings the transformer will read (the klein hidden states
// 9, 18, 27 stacked per token, (B, L, J)). A small head pools them, maps the pooled vector
// through a two-layer MLP to a picture descriptor (the image box-averaged to g × g pixels in
// scaled CIELAB, see pictureDescriptor), and the loss is the mean squared error. The head is
// thrown away; only the encoder's weights are kept. Two poolings:
//   "attention"  Q learned attention queries over the caption's tokens (padding masked), batches
//                padded only to their length bucket. The head learns where to look, so the
//                picture may be readable from a few tokens only.
//   "mean"       the plain mean over every one of the max_sequence_length positions, padding
//                included, exactly the sequence the transformer attends to. A transformer whose
//                attention is still near uniform (early in training) averages its text tokens,
//                so this puts the picture where an untrained transformer already reads: in the
//                average embedding, carried mostly by the padding positions (which attend to the
//                whole caption). Session 10 (docs/flux2-mini.md) measured why this matters.

import type { Backend, HostTensor, Session } from "../backend/backend.js";
import { Value, type Graph } from "../onnx/graph.js";
import { WeightSet } from "../io/safetensors.js";
import { buildQwen3Graph, readQwen3Config, Qwen3Weights, type Qwen3Config } from "../models/qwen3.js";
import { decoderFeeds } from "../models/decoder.js";
import { rgbToLab } from "../util/colour.js";
import { Xoshiro128 } from "../util/random.js";
import { appendGradients } from "./autodiff.js";
import { useTrainingMatmul } from "./bf16.js";
import { promoteWeights } from "./params.js";
import { sumLookupRows, type RowSparseGrad } from "./row_sparse.js";

export type AlignPooling = "attention" | "mean";
export const ALIGN_POOLINGS: AlignPooling[] = ["attention", "mean"];

export interface AlignHeadShape {
  pooling: AlignPooling;
  /** Pooling queries ("attention"; 1 for "mean", which has no query weights). */
  queries: number;
  /** Width of the MLP's hidden layer. */
  hidden: number;
  /** Descriptor length (3·g²). */
  outputs: number;
}

export interface TextAlignBatch {
  /** (B, L) token ids and their 0/1 attention mask (right padding). */
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  B: number;
  L: number;
  /** (B, outputs) picture descriptors. */
  targets: Float32Array;
}

export interface TextAlignResult {
  loss: number;
  /** (B, outputs) the head's predictions. */
  predictions: Float32Array;
  /** Dense gradients of the trained tensors, the token table excepted. */
  grads: Map<string, Float32Array>;
  /** The token table's gradient by its nonzero rows (src/train/row_sparse.ts). */
  sparse: Map<string, RowSparseGrad>;
}

/** The thumbnail's side in cells (8 × 8 × 3 numbers) and the head that reads it: what `flux2 train --text-encoder` uses. */
export const ALIGN_GRID = 8;
export function alignHead(grid: number, pooling: AlignPooling = "attention"): AlignHeadShape {
  return { pooling, queries: pooling === "mean" ? 1 : 4, hidden: 256, outputs: 3 * grid * grid };
}

/** The head's parameter names: prefixed so they can never collide with a Qwen3 tensor name. */
export const HEAD_PREFIX = "align_head.";

/**
 * The picture descriptor: the RGB picture (H, W, 3 bytes) box-averaged to g × g cells, each cell's
 * mean colour in CIELAB scaled to about unit range ((L − 50) / 50, a / 50, b / 50), row-major.
 * Averaging in RGB first (as the eye blends small areas) and converting the cell's mean keeps a
 * flat shape's colour exact.
 */
export function pictureDescriptor(rgb: Uint8Array, width: number, height: number, g: number): Float32Array {
  if (rgb.length !== width * height * 3) throw new Error(`picture descriptor: ${rgb.length} bytes is not ${width}×${height} RGB`);
  if (width % g || height % g) throw new Error(`picture descriptor: ${width}×${height} does not divide into ${g}×${g} cells`);
  const out = new Float32Array(g * g * 3);
  const cw = width / g, ch = height / g;
  for (let cy = 0; cy < g; cy++) {
    for (let cx = 0; cx < g; cx++) {
      const s = [0, 0, 0];
      for (let y = cy * ch; y < (cy + 1) * ch; y++) {
        for (let x = cx * cw; x < (cx + 1) * cw; x++) for (let c = 0; c < 3; c++) s[c] += rgb[(y * width + x) * 3 + c];
      }
      const [L, a, b] = rgbToLab(s[0] / (cw * ch), s[1] / (cw * ch), s[2] / (cw * ch));
      out.set([(L - 50) / 50, a / 50, b / 50], (cy * g + cx) * 3);
    }
  }
  return out;
}

/** The head's tensors and shapes (PyTorch [out, in] Linear layout), in one place for the init, the feeds and the graph. */
export function alignHeadShapes(shape: AlignHeadShape, embedWidth: number): Map<string, number[]> {
  const { queries: Q, hidden: Hd, outputs: K } = shape;
  return new Map([
    ...(shape.pooling === "attention" ? [[`${HEAD_PREFIX}score.weight`, [Q, embedWidth]] as [string, number[]]] : []),
    [`${HEAD_PREFIX}fc1.weight`, [Hd, Q * embedWidth]],
    [`${HEAD_PREFIX}fc1.bias`, [Hd]],
    [`${HEAD_PREFIX}fc2.weight`, [K, Hd]],
    [`${HEAD_PREFIX}fc2.bias`, [K]],
  ]);
}

/** A seeded uniform(±1/√fan_in) init for the head's weights (PyTorch's Linear default), zero biases. */
export function initAlignHead(shape: AlignHeadShape, embedWidth: number, seed: number): Map<string, Float32Array> {
  const rng = new Xoshiro128(seed);
  const init = new Map<string, Float32Array>();
  for (const [name, dims] of alignHeadShapes(shape, embedWidth)) {
    const n = dims.reduce((a, d) => a * d, 1);
    init.set(name, dims.length === 1 ? new Float32Array(n) : Float32Array.from({ length: n }, () => (2 * rng.nextDouble() - 1) / Math.sqrt(dims[1])));
  }
  return init;
}

export class TextEncoderAligner {
  readonly params: Map<string, Float32Array>;
  private shapes = new Map<string, number[]>();
  private sessions = new Map<string, Promise<{ session: Session; grads: Map<string, string> }>>();
  readonly embedWidth: number;
  /** The token-embedding table (name → row width): its gradient is zero outside the batch's tokens (src/train/row_sparse.ts). */
  readonly rowSparse = new Map<string, number>();

  private constructor(private backend: Backend, readonly config: Qwen3Config, private weights: Qwen3Weights,
                      readonly layers: number[], readonly head: AlignHeadShape, headParams: Map<string, Float32Array>) {
    this.embedWidth = layers.length * config.hidden_size;
    // Every encoder tensor the prompt embeddings depend on is trained (layers past the deepest
    // output layer are not in the graph and stay as they are).
    this.params = new Map();
    const probe = this.graphFor(1, 1, false);
    for (const name of probe.trainable) {
      this.params.set(name, weights.set.float32(name));
      const shape = weights.set.info(name).shape;
      this.shapes.set(name, shape);
      if (name === weights.key("embed_tokens.weight")) this.rowSparse.set(name, shape[1]);
    }
    for (const [k, v] of headParams) this.params.set(k, v);
    for (const [k, dims] of alignHeadShapes(head, this.embedWidth)) this.shapes.set(k, dims);
  }

  /** `weights`: a Qwen3 text_encoder folder or file; `configPath`: its config.json (default: in the folder). */
  static open(backend: Backend, weights: string, configPath: string | null, layers: number[], head: AlignHeadShape, seed = 0): TextEncoderAligner {
    const config = readQwen3Config(configPath ?? `${weights}/config.json`);
    const set = new Qwen3Weights(WeightSet.open(weights));
    for (const k of layers) {
      if (!Number.isInteger(k) || k < 1 || k >= config.num_hidden_layers) throw new Error(`text alignment: layer ${k} is not a hidden state of this ${config.num_hidden_layers}-layer encoder`);
    }
    const headParams = initAlignHead(head, layers.length * config.hidden_size, seed);
    return new TextEncoderAligner(backend, config, set, layers, head, headParams);
  }

  paramShape(name: string): number[] {
    const s = this.shapes.get(name);
    if (!s) throw new Error(`"${name}" is not a parameter of this aligner`);
    return s;
  }

  /** The encoder's trained tensors (the head left out), by checkpoint name: what is saved. */
  encoderParams(from: Map<string, Float32Array> = this.params): Map<string, Float32Array> {
    return new Map([...from].filter(([k]) => !k.startsWith(HEAD_PREFIX)));
  }

  private graphFor(B: number, L: number, withGrads: boolean): { graph: Graph; trainable: string[] } {
    const c = this.config, J = this.embedWidth, { queries: Q, outputs: K } = this.head;
    const g = buildQwen3Graph(c, this.weights, { outputLayers: this.layers });
    const promoted = promoteWeights(g, (name) => this.weights.set.info(name).shape);
    const trainable = [...promoted.shapes.keys()];
    if (!withGrads) return { graph: g, trainable };

    const feats = g.concat(this.layers.map((k) => new Value(`hidden_state_${k}`)), 2); // (B, L, J)
    const w = (name: string) => g.input(`${HEAD_PREFIX}${name}`, "F32", this.paramShape(`${HEAD_PREFIX}${name}`));
    const fc1W = w("fc1.weight"), fc1B = w("fc1.bias"), fc2W = w("fc2.weight"), fc2B = w("fc2.bias");
    let pooled: Value; // (B, Q, J)
    if (this.head.pooling === "attention") {
      const tokenBias = g.input("token_bias", "F32", [B, L, 1]); // 0 for caption tokens, −1e9 for padding
      const scores = g.add(g.linear(feats, w("score.weight")), tokenBias); // (B, L, Q)
      const weightsOverTokens = g.op("Softmax", [scores], { axis: 1 })[0];
      pooled = g.matmul(g.transpose(weightsOverTokens, [0, 2, 1]), feats);
    } else {
      pooled = g.op("ReduceMean", [feats, g.constant([1], "I64")], { keepdims: 1 })[0];
    }
    const hidden = g.silu(g.linear(g.reshape(pooled, [B, Q * J]), fc1W, fc1B));
    const pred = g.linear(hidden, fc2W, fc2B); // (B, K)
    const target = g.input("target", "F32", [B, K]);
    const d = g.sub(pred, target);
    const loss = g.op("ReduceMean", [g.mul(d, d), g.constant([])], { keepdims: 0 })[0];
    g.output(loss, "loss", "F32", []);
    g.output(pred, "prediction", "F32", [B, K]);
    const half = c.head_dim / 2;
    const shapes: Record<string, number[]> = {
      input_ids: [B, L], position_ids: [B, L], rope_cos: [L, half], rope_sin: [L, half], attention_bias: [B, 1, L, L],
      ...(this.head.pooling === "attention" ? { token_bias: [B, L, 1] } : {}), target: [B, K],
    };
    // The token table's gradient leaves the graph by lookup (a few thousand rows), not as a 39 MB
    // dense table (GradientOptions.gatherRows); the lookup indices are the caption's token ids.
    const grads = appendGradients(g, loss, [...trainable, ...this.params.keys()].filter((v, i, a) => a.indexOf(v) === i), shapes, { gatherRows: new Set(this.rowSparse.keys()) });
    for (const [table, o] of grads.rowOutputs) {
      if (o.indices !== "input_ids") throw new Error(`text alignment: the token table ${table} is read by ${o.indices}, not by input_ids`);
    }
    useTrainingMatmul(this.backend, g, shapes);
    return { graph: g, trainable };
  }

  async lossAndGrads(b: TextAlignBatch): Promise<TextAlignResult> {
    const { B, L } = b, K = this.head.outputs;
    if (b.inputIds.length !== B * L || b.attentionMask.length !== B * L) throw new Error(`text alignment: ids and mask need B·L = ${B * L} values`);
    if (b.targets.length !== B * K) throw new Error(`text alignment: targets need B·${K} = ${B * K} values, got ${b.targets.length}`);
    const key = `${B}x${L}`;
    let p = this.sessions.get(key);
    if (!p) {
      p = (async () => {
        const { graph } = this.graphFor(B, L, true);
        const grads = new Map([...this.params.keys()].filter((k) => !this.rowSparse.has(k)).map((k) => [k, `grad.${k}`] as [string, string]));
        return { session: await this.backend.createSession(graph, { memPattern: false }), grads };
      })();
      this.sessions.set(key, p);
    }
    const step = await p;
    const feeds: Record<string, HostTensor> = {
      ...decoderFeeds(this.config, b.inputIds, b.attentionMask, B, L),
      target: { data: b.targets, shape: [B, K] },
    };
    if (this.head.pooling === "attention") {
      const tokenBias = new Float32Array(B * L);
      for (let i = 0; i < B * L; i++) tokenBias[i] = b.attentionMask[i] === 1n ? 0 : -1e9;
      feeds.token_bias = { data: tokenBias, shape: [B, L, 1] };
    }
    for (const [k, v] of this.params) feeds[k] = { data: v, shape: this.paramShape(k) };
    const out = await step.session.run(feeds);
    const grads = new Map<string, Float32Array>();
    for (const [k, o] of step.grads) grads.set(k, out[o].data as Float32Array);
    const sparse = new Map<string, RowSparseGrad>();
    for (const [k, width] of this.rowSparse) {
      sparse.set(k, sumLookupRows(out[`grad_rows.${k}`].data as Float32Array, b.inputIds, width, this.paramShape(k)[0]));
    }
    return { loss: Number(out.loss.data[0]), predictions: out.prediction.data as Float32Array, grads, sparse };
  }

  async release(): Promise<void> {
    for (const p of this.sessions.values()) await (await p.catch(() => null))?.session.release();
    this.sessions.clear();
    this.weights.set.close();
  }
}
