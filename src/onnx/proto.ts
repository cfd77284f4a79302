// A minimal protobuf encoder for the few ONNX messages we emit.
//
// Written by hand because no well-kept npm package carries the current ONNX
// schema, and we only ever *write* models: ModelProto, GraphProto, NodeProto,
// AttributeProto, TensorProto (inline or external data), ValueInfoProto.
// Field numbers are those of onnx/onnx.proto3.

export const enum DataType {
  FLOAT = 1, UINT8 = 2, INT8 = 3, UINT16 = 4, INT16 = 5, INT32 = 6, INT64 = 7,
  BOOL = 9, FLOAT16 = 10, DOUBLE = 11, UINT32 = 12, UINT64 = 13, BFLOAT16 = 16,
  FLOAT8E4M3FN = 17, FLOAT8E5M2 = 19, UINT4 = 21, INT4 = 22,
}

/** Growable byte buffer with protobuf wire-format writers. */
class Writer {
  private buf = new Uint8Array(256);
  len = 0;

  private ensure(n: number) {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  varint(v: number | bigint) {
    let x = BigInt.asUintN(64, BigInt(v));
    this.ensure(10);
    while (x >= 0x80n) {
      this.buf[this.len++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.buf[this.len++] = Number(x);
  }

  tag(field: number, wire: number) {
    this.varint((field << 3) | wire);
  }

  bytes(field: number, data: Uint8Array) {
    this.tag(field, 2);
    this.varint(data.length);
    this.ensure(data.length);
    this.buf.set(data, this.len);
    this.len += data.length;
  }

  string(field: number, s: string) {
    this.bytes(field, new TextEncoder().encode(s));
  }

  int(field: number, v: number | bigint) {
    this.tag(field, 0);
    this.varint(v);
  }

  float(field: number, v: number) {
    this.tag(field, 5);
    this.ensure(4);
    new DataView(this.buf.buffer).setFloat32(this.len, v, true);
    this.len += 4;
  }

  message(field: number, encode: (w: Writer) => void) {
    const inner = new Writer();
    encode(inner);
    this.bytes(field, inner.finish());
  }

  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

export type AttrValue = number | string | number[] | string[] | { float: number } | { floats: number[] } | TensorProto;

export interface TensorProto {
  name: string;
  dataType: DataType;
  dims: number[];
  raw?: Uint8Array;
  external?: { location: string; offset: number; length: number };
}

export interface NodeProto {
  opType: string;
  domain?: string;
  name: string;
  inputs: string[];
  outputs: string[];
  attrs?: Record<string, AttrValue>;
}

export interface ValueInfo {
  name: string;
  dataType: DataType;
  /** A number is a fixed size, a string a symbolic dimension; omitted = unknown rank. */
  dims?: (number | string)[];
}

export interface ModelProto {
  graphName: string;
  nodes: NodeProto[];
  initializers: TensorProto[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  opsets: Record<string, number>;
  metadata?: Record<string, string>;
}

function encodeTensor(w: Writer, t: TensorProto) {
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.dataType);
  w.string(8, t.name);
  if (t.raw) w.bytes(9, t.raw);
  if (t.external) {
    const entries: [string, string][] = [
      ["location", t.external.location],
      ["offset", String(t.external.offset)],
      ["length", String(t.external.length)],
    ];
    for (const [k, v] of entries) w.message(13, (e) => { e.string(1, k); e.string(2, v); });
    w.int(14, 1);
  }
}

// AttributeProto.AttributeType
const ATTR_FLOAT = 1, ATTR_INT = 2, ATTR_STRING = 3, ATTR_TENSOR = 4, ATTR_FLOATS = 6, ATTR_INTS = 7, ATTR_STRINGS = 8;

function encodeAttr(w: Writer, name: string, v: AttrValue) {
  w.string(1, name);
  if (typeof v === "number") {
    if (!Number.isInteger(v)) throw new Error(`attribute ${name}: use {float: x} for float attributes`);
    w.int(3, v);
    w.int(20, ATTR_INT);
  } else if (typeof v === "string") {
    w.string(4, v);
    w.int(20, ATTR_STRING);
  } else if (Array.isArray(v)) {
    if (v.length > 0 && typeof v[0] === "string") {
      for (const s of v as string[]) w.string(9, s);
      w.int(20, ATTR_STRINGS);
    } else {
      for (const i of v as number[]) w.int(8, i);
      w.int(20, ATTR_INTS);
    }
  } else if ("float" in v) {
    w.float(2, v.float);
    w.int(20, ATTR_FLOAT);
  } else if ("floats" in v) {
    for (const f of v.floats) w.float(7, f);
    w.int(20, ATTR_FLOATS);
  } else {
    w.message(5, (t) => encodeTensor(t, v));
    w.int(20, ATTR_TENSOR);
  }
}

function encodeNode(w: Writer, n: NodeProto) {
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name);
  w.string(4, n.opType);
  for (const [k, v] of Object.entries(n.attrs ?? {})) w.message(5, (a) => encodeAttr(a, k, v));
  if (n.domain) w.string(7, n.domain);
}

function encodeValueInfo(w: Writer, v: ValueInfo) {
  w.string(1, v.name);
  w.message(2, (type) =>
    type.message(1, (tensor) => {
      tensor.int(1, v.dataType);
      const dims = v.dims;
      if (dims) {
        tensor.message(2, (shape) => {
          for (const d of dims) shape.message(1, (dim) => (typeof d === "number" ? dim.int(1, d) : dim.string(2, d)));
        });
      }
    }),
  );
}

export function encodeModel(m: ModelProto): Uint8Array {
  const w = new Writer();
  w.int(1, 10); // ir_version 10 (ONNX 1.16+)
  w.string(2, "flux2.ts");
  for (const [domain, version] of Object.entries(m.opsets)) {
    w.message(8, (o) => { if (domain) o.string(1, domain); o.int(2, version); });
  }
  w.message(7, (g) => {
    for (const n of m.nodes) g.message(1, (x) => encodeNode(x, n));
    g.string(2, m.graphName);
    for (const t of m.initializers) g.message(5, (x) => encodeTensor(x, t));
    for (const i of m.inputs) g.message(11, (x) => encodeValueInfo(x, i));
    for (const o of m.outputs) g.message(12, (x) => encodeValueInfo(x, o));
  });
  for (const [k, v] of Object.entries(m.metadata ?? {})) w.message(14, (e) => { e.string(1, k); e.string(2, v); });
  return w.finish();
}
