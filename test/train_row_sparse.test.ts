// Row-sparse gradients (src/train/row_sparse.ts): a token-embedding table's gradient passed by its
// nonzero rows must train exactly what the dense gradient trains — the optimizer's live rows, the
// accumulation over micro-batches, the clipping norm and a resume from a checkpoint included.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { AdamW, clipGradNorm } from "../src/train/optim.js";
import { RowSparseSum, toRowSparse } from "../src/train/row_sparse.js";
import { trainLoop, type MicroBatchResult, type TrainTask, type LoopOptions } from "../src/train/loop.js";
import { Xoshiro128 } from "../src/util/random.js";

const ROWS = 50, WIDTH = 4;

/** A gradient of ROWS×WIDTH that is nonzero on a few rows picked by `rng` (one row sometimes NaN-free zero). */
function sparseGrad(rng: Xoshiro128, rowsTouched: number): Float32Array {
  const g = new Float32Array(ROWS * WIDTH);
  for (let k = 0; k < rowsTouched; k++) {
    const r = Math.floor(rng.nextDouble() * ROWS);
    for (let i = 0; i < WIDTH; i++) g[r * WIDTH + i] += (rng.nextDouble() - 0.5) * 2;
  }
  return g;
}

function initParams(seed: number): Map<string, Float32Array> {
  const rng = new Xoshiro128(seed);
  const table = Float32Array.from({ length: ROWS * WIDTH }, () => rng.nextDouble() - 0.5);
  const dense = Float32Array.from({ length: 6 }, () => rng.nextDouble() - 0.5);
  return new Map([["embed", table], ["dense", dense]]);
}

test("toRowSparse: the rows holding any nonzero value (NaN included), ascending, with their values", () => {
  const g = new Float32Array(5 * 2);
  g[2 * 2 + 1] = 3;
  g[4 * 2] = NaN;
  g[0] = -1;
  const s = toRowSparse(g, 2);
  assert.deepEqual([...s.rows], [0, 2, 4]);
  assert.deepEqual([...s.values].map(String), ["-1", "0", "0", "3", "NaN", "0"]);
  assert.throws(() => toRowSparse(new Float32Array(5), 2), /do not split into rows of 2/);
});

test("RowSparseSum: sums micro-batches with the dense accumulation's arithmetic and forgets them on clear()", () => {
  const rng = new Xoshiro128(3);
  const G = 3;
  const micro = Array.from({ length: G }, () => sparseGrad(rng, 4));
  // The loop's dense accumulation: micro-batch 0 times 1/G, the others divided by G.
  const want = micro[0].map((x) => x * (1 / G));
  for (let j = 1; j < G; j++) for (let i = 0; i < want.length; i++) want[i] += micro[j][i] / G;
  const sum = new RowSparseSum(ROWS * WIDTH, WIDTH);
  sum.add(toRowSparse(new Float32Array(ROWS * WIDTH).fill(1), WIDTH), 1, 0);
  sum.clear();
  assert.ok(sum.dense.every((x) => x === 0), "clear() zeroes what the last step wrote");
  micro.forEach((g, j) => sum.add(toRowSparse(g, WIDTH), G, j));
  assert.deepEqual(sum.dense, want);
  const rows = [...sum.hint().rows];
  assert.deepEqual(rows, [...rows].sort((a, b) => a - b), "hinted rows are ascending");
  for (let r = 0; r < ROWS; r++) {
    const nonzero = want.subarray(r * WIDTH, (r + 1) * WIDTH).some((x) => x !== 0);
    if (nonzero) assert.ok(rows.includes(r), `row ${r} is nonzero but not hinted`);
  }
});

test("AdamW with row hints steps exactly as the dense AdamW: rows touched once keep moving, untouched rows only decay, a resumed state too", () => {
  for (const weightDecay of [0, 0.1]) {
    const dense = initParams(1), hinted = initParams(1);
    const opts = { lr: 0.01, betas: [0.9, 0.999] as [number, number], eps: 1e-8, weightDecay };
    let a = new AdamW(dense, opts), b = new AdamW(hinted, opts);
    const rng = new Xoshiro128(7);
    for (let step = 0; step < 12; step++) {
      const table = sparseGrad(rng, step % 4 === 3 ? 0 : 3); // some steps touch no row at all
      const other = Float32Array.from({ length: 6 }, () => rng.nextDouble() - 0.5);
      const gA = new Map([["embed", table.slice()], ["dense", other.slice()]]);
      const gB = new Map([["embed", table.slice()], ["dense", other.slice()]]);
      const hint = new Map([["embed", { width: WIDTH, rows: toRowSparse(table, WIDTH).rows }]]);
      assert.equal(clipGradNorm(gB, 0.5, hint), clipGradNorm(gA, 0.5), `step ${step}: the clipping norm`);
      assert.deepEqual(gB, gA, `step ${step}: the clipped gradients`);
      a.step(gA, 0.01 * (1 - step / 12));
      b.step(gB, 0.01 * (1 - step / 12), hint);
      assert.deepEqual(hinted, dense, `step ${step}, weight decay ${weightDecay}`);
      if (step === 6) {
        // Resume both from a state: the hinted optimizer finds its live rows in the moments.
        const state = a.state();
        a = new AdamW(dense, opts);
        b = new AdamW(hinted, opts);
        a.load(state);
        b.load(state);
      }
    }
  }
});

test("trainLoop: a task giving the table by its rows trains the weights and logs the norms of the same task giving it dense", async () => {
  const run = async (sparse: boolean, gradAccum: number) => {
    const params = initParams(2);
    const task: TrainTask = {
      params,
      async microBatch(step: number, micro: number): Promise<MicroBatchResult> {
        const rng = new Xoshiro128(1000 * step + micro);
        // A gradient that depends on the weights, as a real one does.
        const table = sparseGrad(rng, 3).map((g, i) => (g === 0 ? 0 : g + params.get("embed")![i]));
        const other = params.get("dense")!.map((p) => p * 2 + rng.nextDouble());
        const grads = new Map([["embed", table], ["dense", other]]);
        if (!sparse) return { loss: step, grads };
        grads.delete("embed");
        return { loss: step, grads, sparse: new Map([["embed", toRowSparse(table, WIDTH)]]) };
      },
    };
    const norms: number[] = [];
    const o: LoopOptions = {
      steps: 8, gradAccum, maxGradNorm: 1, adam: { betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 },
      schedule: { scheduler: "constant", lr: 0.05, warmupSteps: 0, totalSteps: 8 },
      runDir: fs.mkdtempSync(path.join(os.tmpdir(), "flux2-row-sparse-")), saveEvery: 0, keepCheckpoints: 1, identity: {},
      onStep: (s) => { norms.push(s.gradNorm); },
    };
    const r = await trainLoop(task, o);
    assert.equal(r.status, "done");
    return { params, norms };
  };
  for (const G of [1, 3]) {
    const dense = await run(false, G), sparse = await run(true, G);
    assert.deepEqual(sparse.norms, dense.norms, `grad-accum ${G}: the logged norms`);
    assert.deepEqual(sparse.params, dense.params, `grad-accum ${G}: the weights`);
    assert.notDeepEqual(dense.params, initParams(2), "the weights moved");
  }
});
