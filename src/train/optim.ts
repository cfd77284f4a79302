// AdamW and gradient clipping with torch's exact semantics (torch.optim.AdamW,
// torch.nn.utils.clip_grad_norm_), on host Float32Arrays.
//
// The parameters live in JS (they are fed to the training graph as inputs on every
// step), so the update is a plain loop. Each element is computed in float64 and
// stored as float32: torch does the arithmetic in float32, which differs from this
// by rounding only (well inside the golden set's tolerances).

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

export class AdamW {
  private t = 0;
  private m = new Map<string, Float32Array>();
  private v = new Map<string, Float32Array>();

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
   */
  step(grads: Map<string, Float32Array>, lr = this.opts.lr): void {
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
    for (const [name, p] of this.params) {
      const g = grads.get(name)!;
      const m = this.m.get(name)!;
      const v = this.v.get(name)!;
      for (let i = 0; i < p.length; i++) {
        const gi = g[i];
        const mi = b1 * m[i] + (1 - b1) * gi;
        const vi = b2 * v[i] + (1 - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        // torch: denom = sqrt(v)/sqrt(bc2) + eps; p -= (lr/bc1) * m / denom.
        p[i] = p[i] * decay - (stepSize * mi) / (Math.sqrt(vi) / bc2Sqrt + eps);
      }
    }
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
    for (const name of this.params.keys()) {
      this.m.set(name, state.m.get(name)!.slice());
      this.v.set(name, state.v.get(name)!.slice());
    }
  }
}

/**
 * torch.nn.utils.clip_grad_norm_: returns the total L2 norm of all gradients before clipping;
 * when it exceeds maxNorm, scales every gradient in place by maxNorm / (norm + 1e-6).
 * The norm is accumulated in float64.
 */
export function clipGradNorm(grads: Map<string, Float32Array>, maxNorm: number): number {
  if (!(maxNorm > 0)) throw new Error(`clipGradNorm: maxNorm must be a positive number, got ${maxNorm}`);
  let sq = 0;
  for (const g of grads.values()) for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
  const norm = Math.sqrt(sq);
  // torch clamps the coefficient at 1 (no scaling up); a NaN norm scales by NaN, as torch does.
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1 || Number.isNaN(coef)) for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i] *= coef;
  return norm;
}
