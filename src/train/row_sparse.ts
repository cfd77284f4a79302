// Row-sparse gradients: a token-embedding table's gradient is zero outside the rows of the
// tokens in the batch. flux2-mini's Qwen3 table has 151,936 rows of 64 values (9.7 M, 88% of
// the text encoder), of which a batch of captions touches a few hundred. Summing, clipping and
// AdamW-stepping it densely cost about as much main-thread time per step as the whole encoder's
// forward and backward, and --workers posted the 39 MB table between threads on every
// micro-batch (docs/flux2-mini.md, session 29).
//
// Everything here computes what the dense code computes, bit for bit:
// - a zero row adds nothing to a sum of gradients or of squares (x + 0 = x), so those sums visit
//   the nonzero rows only, in ascending order (the dense order with the zeros left out);
// - AdamW moves a row whose gradient has always been zero only by weight decay: its moments stay
//   0, so its step, m / (sqrt(v) + eps), is exactly 0. The optimizer therefore keeps the set of
//   rows that have ever had a gradient ("live" rows) and steps those alone (src/train/optim.ts).

/** The nonzero rows of a gradient of `width`-wide rows, ascending, with their values. */
export interface RowSparseGrad {
  width: number;
  rows: Int32Array;
  values: Float32Array;
}

/** Which rows of a dense gradient may be nonzero (ascending); the others are exactly zero. */
export interface RowHint {
  width: number;
  rows: Int32Array;
}

/** Whether row r (of `width` values) of `a` holds a nonzero value (NaN counts as nonzero). */
export function rowHasNonzero(a: Float32Array, r: number, width: number): boolean {
  for (let i = r * width; i < (r + 1) * width; i++) if (a[i] !== 0) return true;
  return false;
}

/** The rows of `dense` (rows of `width` values) holding any nonzero value (NaN included). */
export function toRowSparse(dense: Float32Array, width: number): RowSparseGrad {
  if (!(Number.isInteger(width) && width >= 1 && dense.length % width === 0)) throw new Error(`toRowSparse: ${dense.length} values do not split into rows of ${width}`);
  const rows: number[] = [];
  for (let r = 0; r < dense.length / width; r++) if (rowHasNonzero(dense, r, width)) rows.push(r);
  const values = new Float32Array(rows.length * width);
  rows.forEach((r, k) => values.set(dense.subarray(r * width, (r + 1) * width), k * width));
  return { width, rows: Int32Array.from(rows), values };
}

/**
 * The row-sparse gradient of a table from the gradients of its lookups (GradientOptions.gatherRows):
 * lookup k read row `ids[k]` and received gradient row k of `lookupGrads`. Each table row sums
 * its lookups' rows in lookup order, starting from zero, one float32 rounding per addition: what
 * ONNX Runtime's ScatterND (reduction "add") into a zero table computes, so the result equals
 * toRowSparse() of the dense gradient bit for bit (rows whose sum is exactly zero are left out,
 * as there).
 */
export function sumLookupRows(lookupGrads: Float32Array, ids: ArrayLike<bigint | number>, width: number, tableRows: number): RowSparseGrad {
  if (lookupGrads.length !== ids.length * width) throw new Error(`sumLookupRows: ${ids.length} lookups of width ${width} need ${ids.length * width} values, got ${lookupGrads.length}`);
  const slot = new Map<number, number>();
  for (let k = 0; k < ids.length; k++) {
    const r = Number(ids[k]);
    if (!(Number.isInteger(r) && r >= 0 && r < tableRows)) throw new Error(`sumLookupRows: lookup ${k} reads row ${r}, outside the table's ${tableRows} rows`);
    if (!slot.has(r)) slot.set(r, 0);
  }
  const sorted = Int32Array.from(slot.keys()).sort();
  sorted.forEach((r, i) => slot.set(r, i));
  const sums = new Float32Array(sorted.length * width);
  for (let k = 0; k < ids.length; k++) {
    const at = slot.get(Number(ids[k]))! * width;
    for (let i = 0; i < width; i++) sums[at + i] += lookupGrads[k * width + i];
  }
  const keep: number[] = [];
  for (let i = 0; i < sorted.length; i++) if (rowHasNonzero(sums, i, width)) keep.push(i);
  if (keep.length === sorted.length) return { width, rows: sorted, values: sums };
  const values = new Float32Array(keep.length * width);
  keep.forEach((i, k) => values.set(sums.subarray(i * width, (i + 1) * width), k * width));
  return { width, rows: Int32Array.from(keep, (i) => sorted[i]), values };
}

/** A set of row indices of a table: a mark per row for membership, and the members in insertion order. */
export class RowSet {
  private readonly marked: Uint8Array;
  /** The members, in the order they were added. */
  rows: number[] = [];

  constructor(readonly count: number) {
    this.marked = new Uint8Array(count);
  }

  add(r: number): void {
    if (this.marked[r]) return;
    this.marked[r] = 1;
    this.rows.push(r);
  }

  has(r: number): boolean {
    return this.marked[r] === 1;
  }

  clear(): void {
    for (const r of this.rows) this.marked[r] = 0;
    this.rows = [];
  }
}

/**
 * The sum of a step's row-sparse micro-batch gradients, in a dense buffer kept from step to step
 * (only the rows written last step are cleared), as the loop's accumulate() sums dense ones.
 */
export class RowSparseSum {
  readonly dense: Float32Array;
  private readonly touched: RowSet;

  constructor(readonly length: number, readonly width: number) {
    this.dense = new Float32Array(length);
    this.touched = new RowSet(length / width);
  }

  /** Forget the last step's sum. */
  clear(): void {
    for (const r of this.touched.rows) this.dense.fill(0, r * this.width, (r + 1) * this.width);
    this.touched.clear();
  }

  /**
   * Adds micro-batch j's gradient divided by G, with accumulate()'s arithmetic: micro-batch 0
   * is multiplied by 1/G, the others divided by G; with G = 1 the values are taken as they are.
   */
  add(g: RowSparseGrad, G: number, j: number): void {
    if (g.width !== this.width) throw new Error(`RowSparseSum: rows of ${g.width}, expected ${this.width}`);
    const w = this.width, d = this.dense, inv = 1 / G;
    for (let k = 0; k < g.rows.length; k++) {
      const r = g.rows[k];
      this.touched.add(r);
      const o = r * w, src = k * w;
      if (G === 1) for (let i = 0; i < w; i++) d[o + i] += g.values[src + i];
      else if (j === 0) for (let i = 0; i < w; i++) d[o + i] += g.values[src + i] * inv;
      else for (let i = 0; i < w; i++) d[o + i] += g.values[src + i] / G;
    }
  }

  /** The rows written since clear(), ascending. */
  hint(): RowHint {
    return { width: this.width, rows: Int32Array.from(this.touched.rows).sort() };
  }
}
