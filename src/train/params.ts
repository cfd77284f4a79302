// Turning a model's stored weights into trainable graph inputs (full training).
//
// The model files build their graphs with weights as initializers (file references).
// For full training every weight must instead be fed on each step (the optimizer
// updates it in JS), so this pass removes those initializers and declares inputs of
// the same names. Two shapes of use need a node in between: row blocks of a weight
// (`norm_out.linear.weight[0:D]`, read by rows) become a Slice of the whole input, and
// a weight viewed with another shape (a VAE norm's [C] as [C, 1, 1]) a Reshape.

import type { Graph } from "../onnx/graph.js";

export interface Promoted {
  /** Weight name → its shape as stored (the shape fed and saved). */
  shapes: Map<string, number[]>;
}

const ROWS = /^(.*)\[(\d+):(\d+)\]$/;

/**
 * Replace every file-backed initializer by a float32 graph input. `storedShape(name)` gives a
 * weight's whole shape (the graph may hold only rows of it, or a view). Throws for weights the
 * graph dequantizes (fp8 / int4 storage cannot be trained in place). `trainable(name)`, when
 * given, leaves the weights it rejects as they are: frozen, memory-mapped from the file in their
 * stored dtype, with no float32 copy fed at every step.
 */
export function promoteWeights(g: Graph, storedShape: (name: string) => number[], trainable?: (name: string) => boolean): Promoted {
  const shapes = new Map<string, number[]>();
  const rename = new Map<string, string>();
  const front: typeof g.nodes = [];
  const keep: typeof g.initializers = [];
  for (const init of g.initializers) {
    if (init.source.kind !== "file") {
      keep.push(init);
      continue;
    }
    const m = init.name.match(ROWS);
    const name = m ? m[1] : init.name;
    if (trainable && !trainable(name)) {
      keep.push(init);
      continue;
    }
    if (init.source.dtype !== "F32" && init.source.dtype !== "BF16" && init.source.dtype !== "F16") {
      throw new Error(`full training needs float weights, but "${name}" is stored as ${init.source.dtype}; convert the checkpoint to bf16/f32 first`);
    }
    const shape = storedShape(name);
    if (!shapes.has(name)) {
      shapes.set(name, shape);
      g.inputs.push({ name, dataType: 1, dims: shape });
    }
    const same = !m && shape.length === init.source.shape.length && shape.every((d, i) => d === init.source.shape[i]);
    if (same) continue;
    const out = `${init.name}:view`;
    if (m) {
      const rows = [Number(m[2]), Number(m[3])];
      const c = (v: number[]) => g.constant(v);
      front.push({ opType: "Slice", name: `train_rows_${front.length}`, inputs: [name, c([rows[0]]).name, c([rows[1]]).name, c([0]).name], outputs: [out] });
    } else {
      front.push({ opType: "Reshape", name: `train_view_${front.length}`, inputs: [name, g.constant(init.source.shape).name], outputs: [out] });
    }
    rename.set(init.name, out);
  }
  g.initializers.splice(0, g.initializers.length, ...keep);
  for (const n of g.nodes) n.inputs = n.inputs.map((i) => rename.get(i) ?? i);
  g.nodes.unshift(...front);
  return { shapes };
}
