// A token table's gradient by lookup (GradientOptions.gatherRows, sumLookupRows): the graph
// returns one gradient row per looked-up token instead of scattering them into a dense table, and
// the row sums must be what the dense ScatterND gradient holds, bit for bit, so that
// `flux2 train --text-encoder` trains exactly what it trained with the dense gradient.

import { test } from "node:test";
import assert from "node:assert/strict";
import { OrtBackend } from "../src/backend/ort.js";
import { Graph } from "../src/onnx/graph.js";
import { appendGradients } from "../src/train/autodiff.js";
import { sumLookupRows, toRowSparse } from "../src/train/row_sparse.js";
import { Xoshiro128 } from "../src/util/random.js";

const backend = new OrtBackend({ threads: 1 });
const ROWS = 40, WIDTH = 8, B = 3, L = 7;

/** loss = Σ (table[ids] · coeff) + Σ table[ids]² · 0.5 + Σ w · w, with the table and w trainable. */
function lossGraph(gatherRows: boolean): { graph: Graph; rows?: string; dense?: string } {
  const g = new Graph("gather_rows");
  const table = g.input("table", "F32", [ROWS, WIDTH]);
  const ids = g.input("ids", "I64", [B, L]);
  const coeff = g.input("coeff", "F32", [B, L, WIDTH]);
  const w = g.input("w", "F32", [WIDTH]);
  const looked = g.op("Gather", [table, ids], { axis: 0 })[0];
  const mixed = g.add(g.mul(looked, coeff), g.mul(g.mul(looked, looked), g.scalar(0.5)));
  const loss = g.add(g.op("ReduceSum", [g.mul(mixed, w)], { keepdims: 0 })[0], g.op("ReduceSum", [g.mul(w, w)], { keepdims: 0 })[0]);
  g.output(loss, "loss", "F32", []);
  const r = appendGradients(g, loss, ["table", "w"], { table: [ROWS, WIDTH], ids: [B, L], coeff: [B, L, WIDTH], w: [WIDTH] }, gatherRows ? { gatherRows: new Set(["table"]) } : {});
  if (gatherRows) {
    assert.ok(!r.outputs.has("table"), "the dense gradient is not an output");
    assert.equal(r.rowOutputs.get("table")?.indices, "ids");
    return { graph: g, rows: r.rowOutputs.get("table")!.rows };
  }
  return { graph: g, dense: r.outputs.get("table") };
}

test("gatherRows: the rows of a table's lookups, summed by sumLookupRows, are toRowSparse of the dense gradient bit for bit", async () => {
  const rng = new Xoshiro128(5);
  const rand = (n: number) => Float32Array.from({ length: n }, () => rng.nextDouble() * 2 - 1);
  // Repeated ids (as padding and common words are), some rows never read.
  const ids = BigInt64Array.from({ length: B * L }, (_, i) => BigInt(i % 5 === 4 ? 3 : Math.floor(rng.nextDouble() * 12) * 3));
  const feeds = {
    table: { data: rand(ROWS * WIDTH), shape: [ROWS, WIDTH] },
    ids: { data: ids, shape: [B, L] },
    coeff: { data: rand(B * L * WIDTH), shape: [B, L, WIDTH] },
    w: { data: rand(WIDTH), shape: [WIDTH] },
  };
  const dense = lossGraph(false), byRows = lossGraph(true);
  const s1 = await backend.createSession(dense.graph), s2 = await backend.createSession(byRows.graph);
  const o1 = await s1.run(feeds), o2 = await s2.run(feeds);
  assert.deepEqual(o2["grad.w"].data, o1["grad.w"].data, "the other gradients are unchanged");
  assert.deepEqual([...o2[byRows.rows!].shape ?? []], [B, L, WIDTH]);
  const want = toRowSparse(o1[dense.dense!].data as Float32Array, WIDTH);
  const got = sumLookupRows(o2[byRows.rows!].data as Float32Array, ids, WIDTH, ROWS);
  assert.ok(want.rows.length > 3 && want.rows.length < ROWS, `a few rows are read: ${want.rows.length}`);
  assert.deepEqual(got, want);
  await s1.release();
  await s2.release();
});

test("sumLookupRows: rows summed in lookup order, ascending, a row summing to exactly zero left out; a bad id is refused", () => {
  const grads = Float32Array.of(1, 2, /* row 5 */ 0.1, 0.2, /* row 2 */ -1, -2, /* row 5 */ 3, 4 /* row 7 */);
  const s = sumLookupRows(grads, [5, 2, 5, 7], 2, 8);
  assert.deepEqual([...s.rows], [2, 7], "row 5's two lookups cancel");
  assert.deepEqual([...s.values], [Math.fround(0.1), Math.fround(0.2), 3, 4]);
  assert.throws(() => sumLookupRows(grads, [5, 2, 5, 8], 2, 8), /reads row 8, outside the table's 8 rows/);
  assert.throws(() => sumLookupRows(grads, [5, 2, 5], 2, 8), /3 lookups of width 2 need 6 values, got 8/);
});

test("gatherRows refuses a table it cannot return by rows: read twice, or not trainable", () => {
  const g = new Graph("gather_twice");
  const table = g.input("table", "F32", [ROWS, WIDTH]);
  const ids = g.input("ids", "I64", [B, L]);
  const a = g.op("Gather", [table, ids], { axis: 0 })[0];
  const loss = g.op("ReduceSum", [g.add(a, g.op("ReduceSum", [table], { keepdims: 0 })[0])], { keepdims: 0 })[0];
  const shapes = { table: [ROWS, WIDTH], ids: [B, L] };
  assert.throws(() => appendGradients(g, loss, ["table"], shapes, { gatherRows: new Set(["table"]) }), /must be read by exactly one Gather on axis 0 \(found Gather, ReduceSum\)/);
  const h = new Graph("not_trainable");
  const t2 = h.input("table", "F32", [ROWS, WIDTH]), w = h.input("w", "F32", [WIDTH]), i2 = h.input("ids", "I64", [B, L]);
  const l2 = h.op("ReduceSum", [h.mul(h.op("Gather", [t2, i2], { axis: 0 })[0], w)], { keepdims: 0 })[0];
  assert.throws(() => appendGradients(h, l2, ["w"], { table: [ROWS, WIDTH], w: [WIDTH], ids: [B, L] }, { gatherRows: new Set(["table"]) }), /not among the trainable inputs/);
});
