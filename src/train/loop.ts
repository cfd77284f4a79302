// The training loop: gradient accumulation, clipping, AdamW with a learning-rate
// schedule, resumable checkpoints, NaN/Inf stop and Ctrl-C.
//
// The loop knows nothing of models: a TrainTask gives the trainable tensors and,
// for (optimizer step k, micro-batch j), a loss and its gradients. Everything
// random in a task is seeded by (seed, k, j) (src/train/schedule.ts
// streamSeed), so the loop's whole state is the trainable tensors, the AdamW
// moments and the step: resuming from a checkpoint replays exactly what the
// uninterrupted run would have done (bit for bit on the same machine).
//
// Accumulation follows accelerate: the loss of each of the G micro-batches is
// divided by G before backward, so the gradients summed over them are the mean;
// clip_grad_norm_ then AdamW run once per optimizer step; the logged loss is the
// mean over the micro-batches.
//
// EMA (`emaDecay`): an exponential moving average of the trainable tensors, updated after
// every optimizer step as diffusers' EMAModel does without warm-up power: the decay of
// optimizer step k (0-based) is min(emaDecay, (1 + k) / (10 + k)), and 0 at k = 0, so the
// average starts as a copy of the first updated weights and does not drag in the
// initialisation for long. It is what the run exports (LoopResult.ema), because a short,
// noisy run's last weights are one point of a wandering path while the average sits nearer
// its centre. Checkpoints hold it as `ema.<name>`, so a resumed run continues the same average.
//
// Checkpoints: RUN_DIR/checkpoints/step-NNNNNN.safetensors holds `param.<name>`,
// `adam_m.<name>`, `adam_v.<name>` (and `ema.<name>`), and in its metadata the step, the optimizer
// step count and the run's identity (base model, mode, rank, alpha, targets, seed,
// data); written atomically (temporary file + rename), the oldest beyond
// `keepCheckpoints` removed after a newer one is complete.

import * as fs from "node:fs";
import * as path from "node:path";
import { readAll, SafetensorsFile, writeSafetensors, type TensorToWrite } from "../io/safetensors.js";
import { AdamW, clipGradNorm, gradNorm, type AdamWOptions } from "./optim.js";
import { RowSparseSum, type RowHint, type RowSparseGrad } from "./row_sparse.js";
import { learningRate, type LrSchedule } from "./schedule.js";

export interface MicroBatchResult {
  loss: number;
  grads: Map<string, Float32Array>;
  /** Gradients given by their nonzero rows (a token-embedding table's): not also in `grads`. */
  sparse?: Map<string, RowSparseGrad>;
}

export interface TrainTask {
  /** The trainable tensors, updated in place by the optimizer. */
  readonly params: Map<string, Float32Array>;
  /** Loss and gradients of micro-batch j of optimizer step k (0-based), before any update of step k. */
  microBatch(step: number, micro: number): Promise<MicroBatchResult>;
}

/** What makes a checkpoint belong to a run: resuming with any of these different is refused. */
export type RunIdentity = Record<string, string | number | boolean | string[]>;

export interface LoopOptions {
  steps: number;
  gradAccum: number;
  /** clip_grad_norm_ max norm; 0 disables clipping. */
  maxGradNorm: number;
  adam: Omit<AdamWOptions, "lr">;
  schedule: LrSchedule;
  runDir: string;
  /** Save a checkpoint every N optimizer steps (0: only at the end and on Ctrl-C). */
  saveEvery: number;
  keepCheckpoints: number;
  identity: RunIdentity;
  /**
   * What the data order depends on (the samples, their repeats and buckets): saved with each
   * checkpoint; resuming over different data is allowed, with a warning that the order changed.
   */
  dataFingerprint?: string;
  /** A checkpoint file (or run folder: its latest) to resume from. */
  resume?: string;
  /** Keep an exponential moving average of the trainable tensors with this decay (0 < d < 1); absent: none. */
  emaDecay?: number;
  /** Given the moving average once it exists (updated in place after each step), e.g. to sample with it. */
  onEma?: (ema: Map<string, Float32Array>) => void;
  /**
   * Ask for this many micro-batches of a step at once (default 1: one after another): a task that
   * computes them side by side (src/train/parallel.ts) then keeps every worker busy. The gradients
   * are still summed in micro-batch order, so the result does not depend on it.
   */
  parallel?: number;
  /** Called after every optimizer step. */
  onStep?: (info: StepLog) => void | Promise<void>;
  /** Set to make the loop stop after the current step and save (Ctrl-C). */
  stopSignal?: { stop: boolean };
  log?: (s: string) => void;
}

export interface StepLog {
  /** 1-based count of optimizer steps done. */
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
  /** Every step's loss so far (including those before a resume). */
  losses: readonly number[];
}

export interface LoopResult {
  status: "done" | "interrupted" | "nan";
  step: number;
  lastCheckpoint: string | null;
  message?: string;
  losses: number[];
  /** The moving average of the trainable tensors (with emaDecay), what the run exports. */
  ema?: Map<string, Float32Array>;
}

/** The EMA decay of optimizer step k (0-based): diffusers' EMAModel.get_decay without warm-up power. */
export function emaDecayAt(decay: number, k: number): number {
  return k <= 0 ? 0 : Math.min(decay, (1 + k) / (10 + k));
}

/** ema ← d·ema + (1 − d)·param for every tensor. */
function updateEma(ema: Map<string, Float32Array>, params: Map<string, Float32Array>, d: number): void {
  const c = 1 - d;
  for (const [name, p] of params) {
    const e = ema.get(name)!;
    for (let i = 0; i < p.length; i++) e[i] = d * e[i] + c * p[i];
  }
}

export class ResumeError extends Error {}

export async function trainLoop(task: TrainTask, o: LoopOptions): Promise<LoopResult> {
  const log = o.log ?? (() => {});
  if (!(Number.isInteger(o.steps) && o.steps >= 1)) throw new Error(`--steps must be a positive integer, got ${o.steps}`);
  if (!(Number.isInteger(o.gradAccum) && o.gradAccum >= 1)) throw new Error(`--grad-accum must be a positive integer, got ${o.gradAccum}`);
  if (o.emaDecay !== undefined && !(o.emaDecay > 0 && o.emaDecay < 1)) throw new Error(`--ema-decay must be between 0 and 1 (e.g. 0.999), got ${o.emaDecay}`);
  const ckDir = path.join(o.runDir, "checkpoints");
  const opt = new AdamW(task.params, { ...o.adam, lr: o.schedule.lr });
  const ema = o.emaDecay !== undefined ? new Map([...task.params].map(([k, p]) => [k, p.slice()] as [string, Float32Array])) : undefined;
  let step = 0;
  let losses: number[] = [];
  let lastCheckpoint: string | null = null;
  if (ema) o.onEma?.(ema);
  if (o.resume) {
    const file = resolveCheckpoint(o.resume);
    const ck = loadCheckpoint(file, task.params, o.identity, ema);
    if (o.dataFingerprint && ck.data && ck.data !== o.dataFingerprint) {
      log(`warning: the data changed since ${file} was saved; the batches from here differ from those of an uninterrupted run`);
    }
    opt.load(ck.adam);
    step = ck.step;
    losses = ck.losses;
    lastCheckpoint = file;
    log(`resumed from ${file} at step ${step}`);
    if (step >= o.steps) log(`the checkpoint is already at step ${step} of ${o.steps}: nothing to train (raise --steps to continue)`);
  }

  const save = () => {
    lastCheckpoint = saveCheckpoint(ckDir, step, task.params, opt, o.identity, losses, o.dataFingerprint, ema);
    pruneCheckpoints(ckDir, o.keepCheckpoints);
    return lastCheckpoint;
  };

  // Row-sparse gradients are summed in buffers kept from step to step (src/train/row_sparse.ts).
  const sparseSums = new Map<string, RowSparseSum>();
  while (step < o.steps) {
    const k = step;
    const lr = learningRate(o.schedule, k);
    let sum: Map<string, Float32Array> | null = null;
    let lossSum = 0;
    for (const s of sparseSums.values()) s.clear();
    const wave = Math.max(1, o.parallel ?? 1);
    for (let j0 = 0; j0 < o.gradAccum; j0 += wave) {
      const count = Math.min(wave, o.gradAccum - j0);
      const results = await Promise.all(Array.from({ length: count }, (_, i) => task.microBatch(k, j0 + i)));
      for (const [i, r] of results.entries()) {
        lossSum += r.loss;
        sum = accumulate(sum, r.grads, o.gradAccum, j0 + i);
        for (const [name, g] of r.sparse ?? []) {
          if (r.grads.has(name)) throw new Error(`micro-batch ${j0 + i} gives "${name}" both dense and by rows`);
          let s = sparseSums.get(name);
          if (!s) {
            const p = task.params.get(name);
            if (!p) throw new Error(`micro-batch ${j0 + i} has a gradient by rows for "${name}", which is not a trainable tensor`);
            sparseSums.set(name, (s = new RowSparseSum(p.length, g.width)));
          }
          s.add(g, o.gradAccum, j0 + i);
        }
      }
    }
    const loss = lossSum / o.gradAccum;
    let hints: Map<string, RowHint> | undefined;
    if (sparseSums.size) {
      // The gradients in the parameters' order, as a dense run has them (the norm's summation order).
      const dense = sum!;
      sum = new Map([...task.params.keys()].flatMap((name) => {
        const g = sparseSums.get(name)?.dense ?? dense.get(name);
        return g ? [[name, g] as [string, Float32Array]] : [];
      }));
      hints = new Map([...sparseSums].map(([name, s]) => [name, s.hint()] as [string, RowHint]));
    }
    const gradNormValue = o.maxGradNorm > 0 ? clipGradNorm(sum!, o.maxGradNorm, hints) : gradNorm(sum!, hints);
    if (!Number.isFinite(loss) || !Number.isFinite(gradNormValue)) {
      const what = !Number.isFinite(loss) ? `the loss is ${loss}` : `the gradient norm is ${gradNormValue}`;
      // A checkpoint of this very state produces the NaN: set it aside (renamed, not deleted) so that
      // --resume RUN_DIR picks the last good one.
      let aside = "";
      if (lastCheckpoint && path.basename(lastCheckpoint) === checkpointName(step)) {
        const bad = lastCheckpoint.replace(/\.safetensors$/, ".nan.safetensors");
        fs.renameSync(lastCheckpoint, bad);
        aside = ` (the checkpoint of the state that gave it is set aside as ${bad})`;
        const list = listCheckpoints(ckDir);
        lastCheckpoint = list.length ? list[list.length - 1] : null;
      }
      const kept = (lastCheckpoint ? `the last good checkpoint ${lastCheckpoint} is kept (resume from it with a lower --lr)` : "no good checkpoint had been saved") + aside;
      const message = `training stopped at step ${k + 1}: ${what} (lr ${lr.toExponential(2)}); ${kept}. Lower --lr, keep gradient clipping on, or check the data`;
      return { status: "nan", step, lastCheckpoint, message, losses, ema };
    }
    opt.step(sum!, lr, hints);
    if (ema) updateEma(ema, task.params, emaDecayAt(o.emaDecay!, k));
    step = k + 1;
    losses.push(loss);
    await o.onStep?.({ step, loss, lr, gradNorm: gradNormValue, losses });
    if (o.stopSignal?.stop) {
      const file = save();
      return { status: "interrupted", step, lastCheckpoint: file, losses, ema, message: `interrupted at step ${step}: resumable checkpoint ${file}` };
    }
    if (o.saveEvery > 0 && step % o.saveEvery === 0 && step < o.steps) save();
  }
  if (!lastCheckpoint || !lastCheckpoint.endsWith(checkpointName(step))) save();
  return { status: "done", step, lastCheckpoint, losses, ema };
}

/** Adds micro-batch j's gradients, divided by G, to the running sum (accelerate's accumulation). */
function accumulate(sum: Map<string, Float32Array> | null, grads: Map<string, Float32Array>, G: number, j: number): Map<string, Float32Array> {
  // One micro-batch: its gradients are the sum; clipping scales them in place (no copy).
  if (G === 1) return grads;
  if (!sum) return new Map([...grads].map(([name, g]) => [name, scaled(g, 1 / G)] as [string, Float32Array]));
  for (const [name, g] of grads) {
    const s = sum.get(name);
    if (!s) throw new Error(`micro-batch ${j} has a gradient for "${name}" that micro-batch 0 lacks`);
    for (let i = 0; i < s.length; i++) s[i] += g[i] / G;
  }
  return sum;
}

function scaled(g: Float32Array, s: number): Float32Array {
  const out = new Float32Array(g.length);
  for (let i = 0; i < g.length; i++) out[i] = g[i] * s;
  return out;
}

// ---------------------------------------------------------------------------
// Checkpoints

export function checkpointName(step: number): string {
  return `step-${String(step).padStart(6, "0")}.safetensors`;
}

/** Checkpoint files of a folder, oldest first. */
export function listCheckpoints(ckDir: string): string[] {
  if (!fs.existsSync(ckDir)) return [];
  return fs.readdirSync(ckDir).filter((n) => /^step-\d+\.safetensors$/.test(n)).sort().map((n) => path.join(ckDir, n));
}

/** A checkpoint file, or the latest checkpoint of a run folder (or of its checkpoints/ folder). */
export function resolveCheckpoint(p: string): string {
  if (!fs.existsSync(p)) throw new ResumeError(`--resume ${p}: no such file or folder`);
  if (fs.statSync(p).isFile()) return p;
  const dirs = [path.join(p, "checkpoints"), p];
  for (const d of dirs) {
    const list = listCheckpoints(d);
    if (list.length) return list[list.length - 1];
  }
  throw new ResumeError(`--resume ${p}: no checkpoint there (looked for checkpoints/step-NNNNNN.safetensors); start without --resume`);
}

function saveCheckpoint(ckDir: string, step: number, params: Map<string, Float32Array>, opt: AdamW, identity: RunIdentity, losses: number[], data?: string,
                        ema?: Map<string, Float32Array>): string {
  const st = opt.state();
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, p] of params) {
    tensors[`param.${name}`] = { dtype: "F32", shape: [p.length], data: p };
    tensors[`adam_m.${name}`] = { dtype: "F32", shape: [p.length], data: st.m.get(name)! };
    tensors[`adam_v.${name}`] = { dtype: "F32", shape: [p.length], data: st.v.get(name)! };
    if (ema) tensors[`ema.${name}`] = { dtype: "F32", shape: [p.length], data: ema.get(name)! };
  }
  tensors["losses"] = { dtype: "F64", shape: [losses.length], data: Float64Array.from(losses) };
  const file = path.join(ckDir, checkpointName(step));
  writeSafetensors(file, tensors, { flux2_train: JSON.stringify({ step, adam_step: st.step, identity, data }) });
  return file;
}

function pruneCheckpoints(ckDir: string, keep: number): void {
  if (keep <= 0) return;
  const list = listCheckpoints(ckDir);
  for (const f of list.slice(0, Math.max(0, list.length - keep))) fs.rmSync(f, { force: true });
}

/**
 * Read a checkpoint into `params` (in place), refusing one of another run, naming the mismatch;
 * with `ema`, its moving average too (the identity's ema_decay keeps runs with and without apart).
 */
export function loadCheckpoint(file: string, params: Map<string, Float32Array>, identity: RunIdentity, ema?: Map<string, Float32Array>) {
  const all = readAll(file);
  const meta = readMeta(file);
  const mismatches: string[] = [];
  for (const [k, want] of Object.entries(identity)) {
    const have = meta.identity[k];
    if (JSON.stringify(have) !== JSON.stringify(want)) mismatches.push(`${k}: the checkpoint has ${JSON.stringify(have)}, this run ${JSON.stringify(want)}`);
  }
  if (mismatches.length) {
    throw new ResumeError(`--resume ${file} was made for another run (${mismatches.join("; ")}); resume with the same settings, or start a new run without --resume`);
  }
  const m = new Map<string, Float32Array>(), v = new Map<string, Float32Array>();
  for (const [name, p] of params) {
    const src = all.get(`param.${name}`);
    if (!src || src.data.length !== p.length) throw new ResumeError(`--resume ${file}: ${src ? "wrong size for" : "no"} trainable "${name}"; the checkpoint belongs to another model or target list`);
    p.set(src.data as Float32Array);
    m.set(name, all.get(`adam_m.${name}`)!.data as Float32Array);
    v.set(name, all.get(`adam_v.${name}`)!.data as Float32Array);
    if (ema) {
      const e = all.get(`ema.${name}`);
      if (!e || e.data.length !== p.length) throw new ResumeError(`--resume ${file}: no moving average for "${name}" (a checkpoint saved without --ema-decay); resume without --ema-decay or start a new run`);
      ema.get(name)!.set(e.data as Float32Array);
    }
  }
  const losses = Array.from((all.get("losses")?.data as Float64Array | undefined) ?? []);
  return { step: meta.step as number, adam: { step: meta.adam_step as number, m, v }, losses, data: meta.data };
}

function readMeta(file: string): { step: number; adam_step: number; identity: RunIdentity; data?: string } {
  const f = SafetensorsFile.open(file);
  const raw = f.metadata["flux2_train"];
  f.close();
  if (!raw) throw new ResumeError(`--resume ${file}: not a flux2 training checkpoint (no flux2_train metadata)`);
  return JSON.parse(raw);
}
