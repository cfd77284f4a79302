// bf16 matrix products for training (`flux2 train --matmul bf16`): the native addon's BfMatMul
// custom op (native/), the backend that runs it (src/backend/ort_native.ts) and the rule that
// decides which of a step's products use it (src/train/bf16.ts).

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { OrtBackend } from "../src/backend/ort.js";
import { NativeOrtBackend, autoTrainingMatmul, nativeBf16Status, openTrainingBackend } from "../src/backend/ort_native.js";
import { Graph, Value } from "../src/onnx/graph.js";
import { appendGradients } from "../src/train/autodiff.js";
import { useTrainingMatmul } from "../src/train/bf16.js";
import { f32ToBf16Bits } from "../src/io/dtype.js";
import { nodeHeaderDir } from "../scripts/native-inputs.js";

const CLI = path.resolve("dist/src/cli/main.js");
const MODEL = "testdata/golden/checkpoints/klein_base";
const ROOT = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-bf16-"));

/** The float32 value of x rounded to bfloat16 (to nearest even), as the op rounds its inputs. */
function bf16(x: number): number {
  const u = new Uint32Array(1);
  u[0] = f32ToBf16Bits(x) << 16;
  return new Float32Array(u.buffer)[0];
}

function random(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
}

/** alpha · op(A) op(B) in float64, on the inputs as given or rounded to bf16. */
function reference(A: Float32Array, sa: number[], B: Float32Array, sb: number[], tA: number, tB: number, alpha: number, round: boolean): Float64Array {
  const r = round ? bf16 : (x: number) => x;
  const M = tA ? sa.at(-1)! : sa.at(-2)!, K = tA ? sa.at(-2)! : sa.at(-1)!, N = tB ? sb.at(-2)! : sb.at(-1)!;
  const batches = (sa.length > 2 ? sa : sb).slice(0, -2).reduce((a, b) => a * b, 1);
  const out = new Float64Array(batches * M * N);
  for (let b = 0; b < batches; b++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) {
          const ai = (sa.length > 2 ? b * M * K : 0) + (tA ? k * M + m : m * K + k);
          const bi = (sb.length > 2 ? b * K * N : 0) + (tB ? n * K + k : k * N + n);
          s += r(A[ai]) * r(B[bi]);
        }
        out[b * M * N + m * N + n] = s * alpha;
      }
    }
  }
  return out;
}

function bfMatMulGraph(sa: number[], sb: number[], attrs: Record<string, number>): Graph {
  const g = new Graph("bf_matmul");
  const a = g.input("a", "F32", sa);
  const b = g.input("b", "F32", sb);
  const { alpha, ...ints } = attrs;
  const y = g.op("BfMatMul", [a, b], { ...ints, ...(alpha !== undefined ? { alpha: { float: alpha } } : {}) }, { domain: "ai.flux2ts" })[0];
  g.opsets["ai.flux2ts"] = 1;
  g.output(y, "y");
  return g;
}

// What scripts/build-native.ts needs: x86-64 Linux, a C++ compiler and Node's headers. Where they
// are, the addon must be there (a build that stopped working fails here); where they are not, the
// tests that run the addon are skipped with that reason (this project's CI machines have them).
const buildable = process.platform === "linux" && process.arch === "x64" &&
  spawnSync(process.env.CXX ?? "g++", ["--version"]).status === 0 && nodeHeaderDir() !== undefined;
const needsAddon = { skip: buildable ? false : "no x86-64 Linux, C++ compiler or Node headers here: the native addon cannot be built" };

test("the native addon is built wherever it can be (npm run build makes it)", () => {
  const st = nativeBf16Status();
  if (buildable) assert.ok(st.ok, st.ok ? "" : st.reason);
  else assert.ok(!st.ok && /not built/.test(st.reason), "without a compiler or headers the addon is missing, and says how to build it");
});

test("BfMatMul: every layout and batching matches the product of the bf16-rounded inputs", needsAddon, async () => {
  const backend = new NativeOrtBackend({ threads: 2 });
  const cases: [number[], number[], Record<string, number>][] = [
    [[5, 7], [7, 3], {}],
    [[37, 45], [45, 70], {}], // ragged: 12-row blocks, 32-column panels and an odd k all have tails
    [[45, 37], [45, 70], { transA: 1 }],
    [[37, 45], [70, 45], { transB: 1 }],
    [[45, 37], [70, 45], { transA: 1, transB: 1, alpha: 0.5 }],
    [[2, 3, 33, 17], [17, 40], {}], // a weight shared by every batch: the batches fold into M
    [[6, 17, 33], [40, 17], { transA: 1, transB: 1 }], // shared weight under a transposed A: batched
    [[2, 3, 33, 17], [2, 3, 17, 40], {}],
    [[30, 64], [2, 64, 9], {}], // a shared A
  ];
  for (const [sa, sb, attrs] of cases) {
    const A = random(sa.reduce((a, b) => a * b), 1), B = random(sb.reduce((a, b) => a * b), 2);
    const s = await backend.createSession(bfMatMulGraph(sa, sb, attrs));
    const y = (await s.run({ a: { data: A, shape: sa }, b: { data: B, shape: sb } })).y;
    await s.release();
    const want = reference(A, sa, B, sb, attrs.transA ?? 0, attrs.transB ?? 0, attrs.alpha ?? 1, true);
    const exact = reference(A, sa, B, sb, attrs.transA ?? 0, attrs.transB ?? 0, attrs.alpha ?? 1, false);
    assert.equal(y.data.length, want.length, `${sa} · ${sb}`);
    let err = 0, fromExact = 0;
    for (let i = 0; i < want.length; i++) {
      err = Math.max(err, Math.abs(y.data[i] as number - want[i]));
      fromExact = Math.max(fromExact, Math.abs(y.data[i] as number - exact[i]));
    }
    const K = attrs.transA ? sa.at(-2)! : sa.at(-1)!;
    // float32 sums of K bf16 products: a few ulps of the sum, nothing like bf16's 2^-9.
    assert.ok(err < 2e-6 * K, `${sa} · ${sb} ${JSON.stringify(attrs)}: ${err} from the bf16 product`);
    // And the inputs really were rounded: the float32 product is measurably elsewhere.
    assert.ok(fromExact > 20 * err && fromExact > 1e-4, `${sa} · ${sb}: ${fromExact} from the float32 product`);
  }
});

test("BfMatMul refuses shapes it has no product for, with the reason", needsAddon, async () => {
  const backend = new NativeOrtBackend({ threads: 1 });
  const s = await backend.createSession(bfMatMulGraph([4, 5], [6, 3], {}));
  await assert.rejects(s.run({ a: { data: random(20, 1), shape: [4, 5] }, b: { data: random(18, 2), shape: [6, 3] } }), /BfMatMul: inner dims differ \(5 and 6\)/);
  await s.release();
  const t = await backend.createSession(bfMatMulGraph([2, 4, 5], [3, 5, 6], {}));
  await assert.rejects(t.run({ a: { data: random(40, 1), shape: [2, 4, 5] }, b: { data: random(90, 2), shape: [3, 5, 6] } }), /batch dims of A and B must be equal/);
  await t.release();
  await assert.rejects(s.run({ a: { data: random(20, 1), shape: [4, 5] }, b: { data: random(15, 2), shape: [5, 3] } }), /released/);
});

/** loss = mean((x Wᵀ)²) over a Linear layer, with the gradient of W (a dW product of 2-D operands). */
function linearStep(M: number, K: number, N: number): { g: Graph; shapes: Record<string, number[]> } {
  const g = new Graph("linear_step");
  const x = g.input("x", "F32", [M, K]);
  const w = g.input("w", "F32", [N, K]);
  const y = g.op("FusedMatMul", [x, w], { transB: 1 }, { domain: "com.microsoft" })[0];
  const loss = g.op("ReduceMean", [g.mul(y, y), g.constant([])], { keepdims: 0 })[0];
  g.output(loss, "loss", "F32", []);
  appendGradients(g, loss, ["w"], { x: [M, K], w: [N, K] });
  return { g, shapes: { x: [M, K], w: [N, K] } };
}

test("a training step's products: large 2-D ones become BfMatMul, the loss and gradient stay within bf16 rounding", needsAddon, async () => {
  const [M, K, N] = [256, 96, 160]; // 3.9 M multiply-adds a product: past the 1 M threshold
  const fp32 = new OrtBackend({ threads: 2 });
  const plain = linearStep(M, K, N);
  assert.equal(useTrainingMatmul(fp32, plain.g, plain.shapes), 0, "a float32 backend: nothing rewritten");
  const native = new NativeOrtBackend({ threads: 2, trainingMatmul: "bf16" });
  const step = linearStep(M, K, N);
  const rewritten = useTrainingMatmul(native, step.g, step.shapes);
  assert.ok(rewritten >= 2, `the forward and the weight gradient's products, got ${rewritten}`);
  assert.ok(step.g.nodes.every((n) => n.opType !== "MatMul" && n.opType !== "FusedMatMul"));
  const small = linearStep(16, 32, 32); // 16 K multiply-adds: stays float32
  assert.equal(useTrainingMatmul(native, small.g, small.shapes), 0);

  const feeds = { x: { data: random(M * K, 3), shape: [M, K] }, w: { data: random(N * K, 4), shape: [N, K] } };
  const a = await (await fp32.createSession(plain.g)).run(feeds);
  const b = await (await native.createSession(step.g)).run(feeds);
  const la = a.loss.data[0] as number, lb = b.loss.data[0] as number;
  assert.ok(Math.abs(la - lb) / la < 1e-2, `loss ${lb} against ${la}`);
  assert.notEqual(la, lb, "the bf16 step is a different computation");
  const ga = a["grad.w"].data as Float32Array, gb = b["grad.w"].data as Float32Array;
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < ga.length; i++) { dot += ga[i] * gb[i]; na += ga[i] ** 2; nb += gb[i] ** 2; }
  assert.ok(dot / Math.sqrt(na * nb) > 0.9999, `gradient cosine ${dot / Math.sqrt(na * nb)}`);
});

test("the same graphs without BfMatMul give the same numbers on the native backend as on onnxruntime-node", needsAddon, async () => {
  const { g } = linearStep(64, 48, 40);
  const feeds = { x: { data: random(64 * 48, 5), shape: [64, 48] }, w: { data: random(40 * 48, 6), shape: [40, 48] } };
  const a = await (await new OrtBackend({ threads: 1 }).createSession(g)).run(feeds);
  const b = await (await new NativeOrtBackend({ threads: 1 }).createSession(g)).run(feeds);
  assert.deepEqual([...(b["grad.w"].data as Float32Array)], [...(a["grad.w"].data as Float32Array)]);
  assert.equal(b.loss.data[0], a.loss.data[0]);
});

test("openTrainingBackend: fp32 is onnxruntime-node; bf16 is refused on a GPU", () => {
  assert.ok(openTrainingBackend({}) instanceof OrtBackend);
  assert.throws(() => openTrainingBackend({ device: "cuda", matmul: "bf16" }), /--matmul bf16 is for training on the CPU/);
  const st = nativeBf16Status();
  if (st.ok && st.fast) assert.equal(openTrainingBackend({ matmul: "bf16" }).trainingMatmul, "bf16");
  if (st.ok && !st.fast) assert.throws(() => openTrainingBackend({ matmul: "bf16" }), /no AVX-512 BF16/);
});

test("--matmul auto: bf16 exactly where openTrainingBackend accepts bf16, float32 elsewhere, with the reason", async () => {
  assert.deepEqual(autoTrainingMatmul("cuda"), { matmul: "fp32", reason: "--matmul bf16 is for training on the CPU; with --device cuda leave it out (the GPU providers choose their own precision)" });
  const st = nativeBf16Status();
  const auto = autoTrainingMatmul();
  assert.equal(auto.matmul, st.ok && st.fast ? "bf16" : "fp32", auto.reason);
  if (auto.matmul === "fp32") assert.throws(() => openTrainingBackend({ matmul: "bf16" }));
  else assert.equal(openTrainingBackend({ matmul: "bf16" }).trainingMatmul, "bf16");
  // In a run: says what it chose, and train.json records that (not "auto"), so --resume takes the same.
  const data = await makeData();
  const out = path.join(ROOT, "full-auto");
  const r = run(["train", "--full", "--model", MODEL, "--data", data, "--out", out, "--resolution", "64", "--steps", "2", "--batch-size", "2", "--save-every", "0", "--threads", "1", "--matmul", "auto"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`--matmul auto: ${auto.matmul} \\(`));
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, "train.json"), "utf8")).matmul, auto.matmul);
});

async function makeData(): Promise<string> {
  const dir = fs.mkdtempSync(path.join(ROOT, "data-"));
  for (const [i, caption] of ["red", "a blue square", "green"].entries()) {
    const px = Buffer.alloc(64 * 64 * 3);
    for (let k = 0; k < px.length; k++) px[k] = (k * (i + 3) + (k >> 6) * 11) & 255;
    await sharp(px, { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(path.join(dir, `img${i}.png`));
    fs.writeFileSync(path.join(dir, `img${i}.txt`), caption);
  }
  return dir;
}

function run(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("flux2 train --matmul: checked, saved with the run's settings, and a --full run trains with it", async () => {
  const data = await makeData();
  const bad = run(["train", "--full", "--model", MODEL, "--data", data, "--out", path.join(ROOT, "bad"), "--steps", "1", "--matmul", "fp16"]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--matmul must be fp32, bf16 or auto, got "fp16"/);
  const st = nativeBf16Status();
  const out = path.join(ROOT, "full-bf16");
  const r = run(["train", "--full", "--model", MODEL, "--data", data, "--out", out, "--resolution", "64", "--steps", "3", "--batch-size", "2", "--save-every", "0", "--threads", "1", "--matmul", "bf16"]);
  if (!(st.ok && st.fast)) {
    // A CPU without AVX-512 BF16 (or no addon): refused before any work, with what to do.
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--matmul bf16: /);
    return;
  }
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, "train.json"), "utf8")).matmul, "bf16");
  assert.ok(fs.existsSync(path.join(out, "model", "transformer", "diffusion_pytorch_model.safetensors")));
});

test("a native run leaves the event loop free (timers fire while a step computes)", needsAddon, async () => {
  const backend = new NativeOrtBackend({ threads: 1 });
  const n = 512;
  const s = await backend.createSession(bfMatMulGraph([8, n, n], [n, n], {})); // 2 G multiply-adds: tens of ms
  let fired = false;
  const timer = new Promise<void>((resolve) => setTimeout(() => { fired = true; resolve(); }, 0));
  const y = s.run({ a: { data: random(8 * n * n, 7), shape: [8, n, n] }, b: { data: random(n * n, 8), shape: [n, n] } });
  let firedBeforeResult = false;
  await Promise.all([timer, y.then(() => { firedBeforeResult = fired; })]);
  assert.ok(firedBeforeResult, "the timer waited for the run: the run blocked the event loop");
  await s.release();
});

test("a native session dropped without release() is freed when it is garbage-collected", needsAddon, () => {
  // In a child with --expose-gc: eight sessions that each hold a 64 MiB weight, run and then
  // dropped without release(). Without the handle's finalizer (native/flux2_native.cc) every one
  // stays until exit, about 512 MiB; with it, the resident size comes back near where it started.
  const script = `
    import { NativeOrtBackend } from ${JSON.stringify(path.resolve("dist/src/backend/ort_native.js"))};
    import { Graph } from ${JSON.stringify(path.resolve("dist/src/onnx/graph.js"))};
    const n = 4096, bytes = new Uint8Array(n * n * 4);
    const backend = new NativeOrtBackend({ threads: 1 });
    const settle = async () => { for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 20)); } };
    async function useAndDrop() {
      const g = new Graph("big");
      const x = g.input("x", "F32", [1, n]);
      g.output(g.op("MatMul", [x, g.weight("w", { kind: "data", bytes, dtype: "F32", shape: [n, n] })])[0], "y");
      const s = await backend.createSession(g);
      const y = await s.run({ x: { data: new Float32Array(n).fill(1), shape: [1, n] } });
      if (y.y.data.length !== n) throw new Error("the run gave " + y.y.data.length + " values");
    }
    await useAndDrop(); await settle();
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 8; i++) { await useAndDrop(); await settle(); }
    console.log(JSON.stringify({ grownMiB: (process.memoryUsage().rss - before) / 2 ** 20 }));`;
  const r = spawnSync(process.execPath, ["--expose-gc", "--input-type=module", "-e", script], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const { grownMiB } = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  assert.ok(grownMiB < 192, `the resident size grew ${grownMiB.toFixed(0)} MiB over eight dropped 64 MiB sessions: they were not freed`);
});
