// AdamW and gradient clipping with torch's exact semantics (torch.optim.AdamW,
// torch.nn.utils.clip_grad_norm_), on host Float32Arrays.
//
// The parameters live in JS (they are fed to the training graph as inputs on every
// step), so the update is a plain loop. Each element is computed in float64 and
// stored as float32: torch does the arithmetic in float32, which differs from this
// by rounding only (well inside the golden set's tolerances).
//
// A gradient may come with a row hint (src/train/row_sparse.ts: a token-embedding table's
// gradient is zero outside the batch's tokens). The optimizer then steps only the rows that have
// ever had a gradient, and the clipping sums only the hinted rows: the same numbers as the dense
// loops, without their cost.

import { RowSet, rowHasNonzero, type RowHint } from "./row_sparse.js";

export interface AdamWOptions {
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
}

export interface AdamWState {
  step: number;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

/** The rows of a row-hinted parameter that have ever had a gradient: only these have moments. */
interface LiveRows {
  width: number;
  rows: RowSet;
}

export class AdamW {
  private t = 0;
  private m = new Map<string, Float32Array>();
  private v = new Map<string, Float32Array>();
  private live = new Map<string, LiveRows>();

  /** Updates `params` in place on every step(). */
  constructor(private params: Map<string, Float32Array>, private opts: AdamWOptions) {
    const [b1, b2] = opts.betas;
    if (!(opts.lr >= 0)) throw new Error(`AdamW: lr must be a non-negative number, got ${opts.lr}`);
    if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1)) throw new Error(`AdamW: betas must be in [0, 1), got [${opts.betas}]`);
    if (!(opts.eps >= 0)) throw new Error(`AdamW: eps must be a non-negative number, got ${opts.eps}`);
    if (!(opts.weightDecay >= 0)) throw new Error(`AdamW: weightDecay must be a non-negative number, got ${opts.weightDecay}`);
    for (const [name, p] of params) {
      this.m.set(name, new Float32Array(p.length));
      this.v.set(name, new Float32Array(p.length));
    }
  }

  /**
   * One step: p ← p − lr·wd·p (decoupled decay), m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g²,
   * p ← p − lr · (m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + eps). `lr` overrides opts.lr (schedules).
   * Every parameter needs a gradient of its own size; a missing one is an error, not a skip.
   * `hints`: for some parameters, the rows outside which the gradient is exactly zero. Such a
   * parameter must be hinted on every step once it has been (the optimizer tracks its live rows).
   */
  step(grads: Map<string, Float32Array>, lr = this.opts.lr, hints?: Map<string, RowHint>): void {
    for (const [name, p] of this.params) {
      const g = grads.get(name);
      if (!g) throw new Error(`AdamW.step: no gradient for parameter "${name}"`);
      if (g.length !== p.length) throw new Error(`AdamW.step: gradient of "${name}" has ${g.length} values, the parameter ${p.length}`);
    }
    this.t++;
    const [b1, b2] = this.opts.betas;
    const { eps, weightDecay } = this.opts;
    const bc1 = 1 - b1 ** this.t;
    const bc2 = 1 - b2 ** this.t;
    const stepSize = lr / bc1;
    const bc2Sqrt = Math.sqrt(bc2);
    const decay = 1 - lr * weightDecay;
    const update = (p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, from: number, to: number) => {
      for (let i = from; i < to; i++) {
        const gi = g[i];
        const mi = b1 * m[i] + (1 - b1) * gi;
        const vi = b2 * v[i] + (1 - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        // torch: denom = sqrt(v)/sqrt(bc2) + eps; p -= (lr/bc1) * m / denom.
        p[i] = p[i] * decay - (stepSize * mi) / (Math.sqrt(vi) / bc2Sqrt + eps);
      }
    };
    for (const [name, p] of this.params) {
      const g = grads.get(name)!;
      const m = this.m.get(name)!;
      const v = this.v.get(name)!;
      const hint = hints?.get(name);
      let live = this.live.get(name);
      if (!hint && !live) {
        update(p, g, m, v, 0, p.length);
        continue;
      }
      if (!hint) throw new Error(`AdamW.step: parameter "${name}" had a row hint before and has none now`);
      live ??= this.startLive(name, hint.width);
      if (hint.width !== live.width) throw new Error(`AdamW.step: rows of "${name}" hinted ${hint.width} wide, before ${live.width}`);
      for (const r of hint.rows) live.rows.add(r);
      const w = live.width;
      for (const r of live.rows.rows) update(p, g, m, v, r * w, (r + 1) * w);
      // A row that never had a gradient has m = v = 0: its step is exactly 0, leaving the decay.
      if (decay !== 1) {
        for (let r = 0; r < live.rows.count; r++) {
          if (live.rows.has(r)) continue;
          for (let i = r * w; i < (r + 1) * w; i++) p[i] = p[i] * decay;
        }
      }
    }
  }

  /** Live rows of a newly hinted parameter: those whose moments are not all zero (a resumed state). */
  private startLive(name: string, width: number): LiveRows {
    const p = this.params.get(name)!;
    if (!(Number.isInteger(width) && width >= 1 && p.length % width === 0)) throw new Error(`AdamW.step: "${name}" (${p.length} values) does not split into rows of ${width}`);
    const m = this.m.get(name)!, v = this.v.get(name)!;
    const live: LiveRows = { width, rows: new RowSet(p.length / width) };
    for (let r = 0; r < live.rows.count; r++) if (rowHasNonzero(m, r, width) || rowHasNonzero(v, r, width)) live.rows.add(r);
    this.live.set(name, live);
    return live;
  }

  /** The step count and copies of the moments (for checkpoints). */
  state(): AdamWState {
    const copy = (src: Map<string, Float32Array>) => new Map([...src].map(([k, a]) => [k, a.slice()] as [string, Float32Array]));
    return { step: this.t, m: copy(this.m), v: copy(this.v) };
  }

  /** Restore a state(): it must cover exactly this optimizer's parameters, with their sizes. */
  load(state: AdamWState): void {
    if (!Number.isSafeInteger(state.step) || state.step < 0) throw new Error(`AdamW.load: step must be a non-negative integer, got ${state.step}`);
    for (const [name, p] of this.params) {
      for (const [what, src] of [["m", state.m], ["v", state.v]] as const) {
        const a = src.get(name);
        if (!a) throw new Error(`AdamW.load: the state has no ${what} for parameter "${name}" (a checkpoint of another model or target list?)`);
        if (a.length !== p.length) throw new Error(`AdamW.load: ${what} of "${name}" has ${a.length} values, the parameter ${p.length}`);
      }
    }
    for (const k of state.m.keys()) if (!this.params.has(k)) throw new Error(`AdamW.load: the state has moments for "${k}", which is not a parameter here`);
    this.t = state.step;
    this.live.clear();
    for (const name of this.params.keys()) {
      this.m.set(name, state.m.get(name)!.slice());
      this.v.set(name, state.v.get(name)!.slice());
    }
  }
}

/**
 * torch.nn.utils.clip_grad_norm_: returns the total L2 norm of all gradients before clipping;
 * when it exceeds maxNorm, scales every gradient in place by maxNorm / (norm + 1e-6).
 * The norm is accumulated in float64. `hints`: rows outside which a gradient is zero (skipped).
 */
export function clipGradNorm(grads: Map<string, Float32Array>, maxNorm: number, hints?: Map<string, RowHint>): number {
  if (!(maxNorm > 0)) throw new Error(`clipGradNorm: maxNorm must be a positive number, got ${maxNorm}`);
  const norm = gradNorm(grads, hints);
  // torch clamps the coefficient at 1 (no scaling up); a NaN norm scales by NaN, as torch does.
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1 || Number.isNaN(coef)) {
    forEachRange(grads, hints, (g, from, to) => {
      for (let i = from; i < to; i++) g[i] *= coef;
    });
  }
  return norm;
}

/** The total L2 norm of all gradients (float64), visiting only the hinted rows of hinted ones. */
export function gradNorm(grads: Map<string, Float32Array>, hints?: Map<string, RowHint>): number {
  // The running sum is passed through addSquares() rather than captured by a forEachRange()
  // callback: a captured float is boxed anew on every addition, and those boxes (about 700 MB a
  // second of flux2-mini's text-encoder training) made V8 collect garbage once a step (session 36).
  // A fold over forEachRange's ranges with addSquares as its callback boxed as much again (800 MB
  // in ten seconds, the sampling heap profiler), so the ranges are walked here, beside their twin.
  let sq = 0;
  for (const [name, g] of grads) {
    const hint = hints?.get(name);
    if (!hint) sq = addSquares(sq, g, 0, g.length);
    else for (const r of hint.rows) sq = addSquares(sq, g, r * hint.width, (r + 1) * hint.width);
  }
  return Math.sqrt(sq);
}

/** sum + g[from]² + … + g[to − 1]², added in that order (float64). */
function addSquares(sum: number, g: Float32Array, from: number, to: number): number {
  for (let i = from; i < to; i++) sum += g[i] * g[i];
  return sum;
}

/** Calls `f` on each gradient's whole range, or on each hinted row's range in ascending order. */
function forEachRange(grads: Map<string, Float32Array>, hints: Map<string, RowHint> | undefined, f: (g: Float32Array, from: number, to: number) => void): void {
  for (const [name, g] of grads) {
    const hint = hints?.get(name);
    if (!hint) f(g, 0, g.length);
    else for (const r of hint.rows) f(g, r * hint.width, (r + 1) * hint.width);
  }
}
