// Packs a trained flux2-mini folder for shipping: every float tensor in bf16 (flux2 train writes
// the trained component in float32), the other files copied, and the 40 MB weight budget checked.

import * as fs from "node:fs";
import * as path from "node:path";
import { SafetensorsFile, toFloat32 } from "../io/safetensors.js";
import { SafetensorsStreamWriter } from "../quant/writer.js";
import { f32ArrayToBf16 } from "../io/dtype.js";

export const MINI_BUDGET_BYTES = 40e6;

/** Copy `src` to `dst` (a new or empty folder) with every .safetensors tensor in bf16; returns the weight bytes. */
export function packMiniModel(src: string, dst: string, budget = MINI_BUDGET_BYTES): number {
  if (!fs.existsSync(path.join(src, "model_index.json"))) throw new Error(`${src}: no model_index.json — not a model folder`);
  if (fs.existsSync(dst) && fs.readdirSync(dst).length > 0) throw new Error(`${dst} is not empty: give a new or empty folder`);
  let weights = 0;
  const walk = (rel: string) => {
    const from = path.join(src, rel), to = path.join(dst, rel);
    // flux2 train links unchanged parts into its output folder; follow the links and copy.
    if (fs.statSync(from).isDirectory()) {
      fs.mkdirSync(to, { recursive: true });
      for (const name of fs.readdirSync(from).sort()) walk(path.join(rel, name));
      return;
    }
    if (!from.endsWith(".safetensors")) {
      fs.copyFileSync(from, to);
      return;
    }
    const f = SafetensorsFile.open(from);
    try {
      const names = [...f.tensors.keys()];
      // Float weights become bf16; an integer buffer (a batch-norm's num_batches_tracked, which
      // diffusers checkpoints may carry) is kept as it is: it is a counter, not a weight.
      const isFloat = (dtype: string) => ["F32", "F16", "BF16"].includes(dtype);
      const w = new SafetensorsStreamWriter(to, names.map((name) => {
        const info = f.tensors.get(name)!;
        return { name, dtype: isFloat(info.dtype) ? "BF16" as const : info.dtype, shape: info.shape };
      }), { format: "pt" });
      try {
        for (const name of names) {
          const info = f.tensors.get(name)!;
          if (!isFloat(info.dtype)) {
            w.write(name, f.bytes(name));
            continue;
          }
          const h = f32ArrayToBf16(toFloat32(info.dtype, f.bytes(name)));
          w.write(name, new Uint8Array(h.buffer, h.byteOffset, h.byteLength));
        }
        w.close();
      } catch (e) {
        w.abort();
        throw e;
      }
    } finally {
      f.close();
    }
    weights += fs.statSync(to).size;
  };
  walk("");
  if (weights > budget) {
    throw new Error(`${dst}: the weights are ${(weights / 1e6).toFixed(1)} MB in bf16, over the ${(budget / 1e6).toFixed(0)} MB budget — shrink the model (src/mini/model.ts), not the dtype`);
  }
  return weights;
}
