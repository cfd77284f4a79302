// Counting the op types of an ONNX model file (e.g. the optimized graph ORT writes with
// `optimizedModelFilePath`), to check which fusions happened. A minimal protobuf walk:
// ModelProto.graph (7) → GraphProto.node (1) → NodeProto.op_type (4) / domain (7).

import * as fs from "node:fs";
import type { Backend } from "../backend/backend.js";
import { OrtBackend, type OrtBackendOptions } from "../backend/ort.js";
import type { Graph } from "../onnx/graph.js";

interface Field {
  no: number;
  wire: number;
  /** varint value, or the byte range of a length-delimited field */
  value: number;
  start: number;
  end: number;
}

function* fields(buf: Uint8Array, start: number, end: number): Generator<Field> {
  let p = start;
  const varint = () => {
    let v = 0, mul = 1, b: number;
    do {
      b = buf[p++];
      v += (b & 0x7f) * mul;
      mul *= 128;
    } while (b & 0x80);
    return v;
  };
  while (p < end) {
    const key = varint();
    const no = Math.floor(key / 8), wire = key % 8;
    if (wire === 0) yield { no, wire, value: varint(), start: p, end: p };
    else if (wire === 1) { p += 8; yield { no, wire, value: 0, start: p - 8, end: p }; }
    else if (wire === 5) { p += 4; yield { no, wire, value: 0, start: p - 4, end: p }; }
    else if (wire === 2) {
      const len = varint();
      yield { no, wire, value: len, start: p, end: p + len };
      p += len;
    } else throw new Error(`protobuf: unsupported wire type ${wire} at byte ${p}`);
  }
}

const text = (buf: Uint8Array, f: Field) => Buffer.from(buf.buffer, buf.byteOffset + f.start, f.end - f.start).toString("utf8");

/** Op type → count over the main graph of a serialized ModelProto ("domain:Op" for non-default domains). */
export function countOps(model: Uint8Array): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const f of fields(model, 0, model.byteLength)) {
    if (f.no !== 7 || f.wire !== 2) continue;
    for (const g of fields(model, f.start, f.end)) {
      if (g.no !== 1 || g.wire !== 2) continue;
      let op = "", domain = "";
      for (const n of fields(model, g.start, g.end)) {
        if (n.no === 4 && n.wire === 2) op = text(model, n);
        else if (n.no === 7 && n.wire === 2) domain = text(model, n);
      }
      const key = domain && domain !== "ai.onnx" ? `${domain}:${op}` : op;
      counts[key] = (counts[key] ?? 0) + 1;
    }
  }
  return counts;
}

/** The ops we expect ORT to run fused, by plain op type. */
export const FUSED_OPS = ["MultiHeadAttention", "RotaryEmbedding", "LayerNormalization", "SimplifiedLayerNormalization", "FusedMatMul", "MatMulNBits", "DynamicQuantizeMatMul", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization"];

/** Counts by plain op type (domain dropped). */
export function byOp(counts: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(counts)) {
    const op = k.includes(":") ? k.slice(k.lastIndexOf(":") + 1) : k;
    out[op] = (out[op] ?? 0) + v;
  }
  return out;
}

/**
 * Build a session for `graph` with ORT writing its optimized graph to `file`, then count the op
 * types of both: what we emitted and what ORT will run.
 */
export async function optimizedOpCounts(graph: Graph, file: string, opts: OrtBackendOptions = {}): Promise<{ emitted: Record<string, number>; optimized: Record<string, number> }> {
  const backend: Backend = new OrtBackend({ ...opts, optimizedModelPath: file });
  const session = await backend.createSession(graph);
  await session.release();
  return { emitted: graph.opCounts(), optimized: byOp(countOps(fs.readFileSync(file))) };
}
