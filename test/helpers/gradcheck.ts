// Finite-difference checks of the gradients appendGradients() builds.
//
// A test builds a small forward graph f(inputs) with any output shape; the check
// reduces it to a scalar loss = Σ f · R with a fixed random R (so every output
// element's gradient matters), appends the gradients, and compares each trainable
// input's gradient with central differences of the same ORT forward.

import assert from "node:assert/strict";
import type { Backend, HostTensor } from "../../src/backend/backend.js";
import { Graph, Value } from "../../src/onnx/graph.js";
import { appendGradients, type GradientOptions } from "../../src/train/autodiff.js";
import { inferShapes } from "../../src/train/shapes.js";
import { randn } from "../../src/util/random.js";

export interface GradInput {
  name: string;
  shape: number[];
  /** Values; default standard normal from `seed`. */
  data?: number[] | Float64Array | Float32Array;
  /** Not differentiated (e.g. indices or positions): fed as given. */
  frozen?: HostTensor;
}

export interface GradCheck {
  elem: "F32" | "F64";
  inputs: GradInput[];
  build: (g: Graph, x: Record<string, Value>) => Value;
  /** Relative tolerance against the largest gradient magnitude. */
  tol?: number;
  step?: number;
  seed?: number;
  gradOptions?: GradientOptions;
}

export async function gradcheck(backend: Backend, spec: GradCheck): Promise<{ maxErr: number; maxGrad: number }> {
  const { elem } = spec;
  const g = new Graph("gradcheck");
  const vals: Record<string, Value> = {};
  const feeds: Record<string, HostTensor> = {};
  const Arr = elem === "F64" ? Float64Array : Float32Array;
  let seed = spec.seed ?? 7;
  const wrt: string[] = [];
  for (const inp of spec.inputs) {
    if (inp.frozen) {
      const d = inp.frozen.data;
      const dt = d instanceof BigInt64Array ? "I64" : d instanceof Float64Array ? "F64" : d instanceof Uint8Array ? "U8" : "F32";
      vals[inp.name] = g.input(inp.name, dt, inp.frozen.shape);
      feeds[inp.name] = inp.frozen;
      continue;
    }
    vals[inp.name] = g.input(inp.name, elem, inp.shape);
    const n = inp.shape.reduce((a, b) => a * b, 1);
    feeds[inp.name] = { data: Arr.from(inp.data ?? randn(seed++, n)), shape: inp.shape };
    wrt.push(inp.name);
  }
  const y = spec.build(g, vals);
  const shapes = Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, v.shape]));
  const yShape = inferShapes(g, shapes).get(y.name)!.shape;
  const r = g.input("probe", elem, yShape);
  feeds.probe = { data: Arr.from(randn(999, yShape.reduce((a, b) => a * b, 1))), shape: yShape };
  const loss = g.op("ReduceSum", [g.mul(y, r), g.constant([])], { keepdims: 0 })[0];
  g.output(loss, "loss", elem, []);
  appendGradients(g, loss, wrt, { ...shapes, probe: yShape }, spec.gradOptions);
  const session = await backend.createSession(g);
  try {
    const out = await session.run(feeds);
    const lossAt = async () => Number((await session.run(feeds, ["loss"])).loss.data[0]);
    const h = spec.step ?? (elem === "F64" ? 1e-6 : 1e-2);
    let maxErr = 0, maxGrad = 0;
    for (const name of wrt) {
      const grad = out[`grad.${name}`].data as Float32Array | Float64Array;
      const x = feeds[name].data as Float32Array | Float64Array;
      assert.equal(grad.length, x.length, `grad.${name} size`);
      for (let i = 0; i < x.length; i++) {
        const x0 = x[i];
        x[i] = x0 + h;
        const up = await lossAt();
        x[i] = x0 - h;
        const down = await lossAt();
        x[i] = x0;
        const fd = (up - down) / (2 * h);
        maxErr = Math.max(maxErr, Math.abs(fd - grad[i]));
        maxGrad = Math.max(maxGrad, Math.abs(fd));
      }
    }
    const tol = spec.tol ?? (elem === "F64" ? 1e-6 : 1e-2);
    assert.ok(maxGrad > 0, "every gradient is zero: the check would prove nothing");
    assert.ok(maxErr <= tol * Math.max(1, maxGrad), `gradient differs from finite differences by ${maxErr.toExponential(2)} (largest gradient ${maxGrad.toExponential(2)}, tolerance ${tol})`);
    return { maxErr, maxGrad };
  } finally {
    await session.release();
  }
}
