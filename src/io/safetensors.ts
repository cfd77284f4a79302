// safetensors reading and writing.
//
// A .safetensors file is: u64 little-endian header length N, N bytes of JSON
// header, then the raw little-endian data section. We parse only the header on
// open and read tensor bytes on demand (positioned reads), so opening a 16 GB
// checkpoint costs a few kilobytes of memory. ONNX Runtime maps the same files
// itself through external-data references (see src/onnx/), which is why every
// tensor carries its absolute file offset.

import * as fs from "../platform/fs.js";
import * as path from "../platform/path.js";
import { f16ToF32, f8e4m3ToF32, f8e5m2ToF32 } from "./dtype.js";

export type DType =
  | "F64" | "F32" | "F16" | "BF16" | "F8_E4M3" | "F8_E5M2"
  | "I64" | "I32" | "I16" | "I8" | "U64" | "U32" | "U16" | "U8" | "BOOL";

export const DTYPE_BYTES: Record<DType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1,
  I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
};

export class SafetensorsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SafetensorsError";
  }
}

/** Where one tensor lives: enough to read it, or to point ONNX Runtime at it. */
export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Absolute path of the file holding the tensor. */
  file: string;
  /** Absolute byte offset of the tensor's first byte in `file`. */
  offset: number;
  byteLength: number;
}

export type TypedArray =
  | Float64Array | Float32Array | Uint16Array | BigInt64Array | BigUint64Array
  | Int32Array | Uint32Array | Int16Array | Int8Array | Uint8Array;

// Same limit as the reference Rust implementation: a larger header is corruption.
const MAX_HEADER_BYTES = 100_000_000;

const REDOWNLOAD = "the file is corrupt or incomplete; download it again";

/** Own-property check: `"toString" in DTYPE_BYTES` is true, which must not pass as a dtype. */
export function isDType(s: unknown): s is DType {
  return typeof s === "string" && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

/** Number of elements of a shape (1 for a scalar `[]`). */
export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function isShape(s: unknown): s is number[] {
  return Array.isArray(s) && s.every((d) => Number.isSafeInteger(d) && d >= 0);
}

/** One open .safetensors file. Only the header is held in memory. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  readonly tensors: Map<string, TensorInfo>;
  private fd: number | null;

  private constructor(file: string, fd: number, metadata: Record<string, string>, tensors: Map<string, TensorInfo>) {
    this.path = file;
    this.fd = fd;
    this.metadata = metadata;
    this.tensors = tensors;
  }

  static open(file: string): SafetensorsFile {
    let abs: string;
    let fd: number;
    try {
      abs = fs.realpathSync(path.resolve(file));
      fd = fs.openSync(abs, "r");
    } catch (e) {
      throw new SafetensorsError(`${file}: cannot open (${(e as Error).message})`);
    }
    try {
      const { metadata, tensors } = parseHeader(fd, abs, file);
      return new SafetensorsFile(abs, fd, metadata, tensors);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  keys(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError(`${this.path}: no tensor named "${name}"; check that this is the right checkpoint for the model`);
    return t;
  }

  /** The raw bytes of one tensor, read from disk now. */
  bytes(name: string): Uint8Array {
    const t = this.info(name);
    if (this.fd === null) throw new SafetensorsError(`${this.path}: file is closed (reading tensor "${name}")`);
    return readRange(this.fd, t);
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}

/** Fill `buf` from `position` (readSync may return less than asked), or throw the message `what` gives. */
function readExactly(fd: number, buf: Uint8Array, position: number, what: () => string): void {
  let done = 0;
  while (done < buf.byteLength) {
    const n = fs.readSync(fd, buf, done, Math.min(buf.byteLength - done, 1 << 30), position + done);
    if (n === 0) throw new SafetensorsError(what());
    done += n;
  }
}

function parseHeader(fd: number, abs: string, shown: string) {
  const size = fs.fstatSync(fd).size;
  if (size < 8) throw new SafetensorsError(`${shown}: truncated safetensors file (${size} bytes, no header); ${REDOWNLOAD}`);
  const lenBuf = Buffer.alloc(8);
  readExactly(fd, lenBuf, 0, () => `${shown}: unexpected end of file reading the header length; ${REDOWNLOAD}`);
  // DataView, not Buffer.readBigUInt64LE: the browser bundle's Buffer (buffer@5) has no BigInt reads.
  const headerLen = Number(new DataView(lenBuf.buffer, lenBuf.byteOffset, 8).getBigUint64(0, true));
  if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > size) {
    throw new SafetensorsError(
      `${shown}: corrupt or truncated safetensors file (header says ${headerLen} bytes, file has ${size}); ${REDOWNLOAD}`,
    );
  }
  const headerBuf = Buffer.alloc(headerLen);
  readExactly(fd, headerBuf, 8, () => `${shown}: unexpected end of file reading the header; ${REDOWNLOAD}`);
  const header = parseHeaderJson(headerBuf, shown);
  const dataStart = 8 + headerLen;
  const metadata = parseMetadata(header["__metadata__"], shown);
  const tensors = new Map<string, TensorInfo>();
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, begin, end } = parseEntry(name, raw, shown);
    tensors.set(name, { name, dtype, shape, file: abs, offset: dataStart + begin, byteLength: end - begin });
  }
  checkLayout([...tensors.values()], dataStart, size, shown);
  return { metadata, tensors };
}

function parseHeaderJson(buf: Buffer, shown: string): Record<string, unknown> {
  let header: unknown;
  try {
    header = JSON.parse(buf.toString("utf8"));
  } catch {
    throw new SafetensorsError(`${shown}: corrupt safetensors header (not JSON); is this really a .safetensors file? ${REDOWNLOAD}`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw new SafetensorsError(`${shown}: corrupt safetensors header (JSON ${describe(header)}, expected an object); ${REDOWNLOAD}`);
  }
  return header as Record<string, unknown>;
}

function describe(v: unknown): string {
  return v === null ? "null" : Array.isArray(v) ? "array" : typeof v;
}

function parseMetadata(raw: unknown, shown: string): Record<string, string> {
  if (raw === undefined) return {};
  const ok = raw !== null && typeof raw === "object" && !Array.isArray(raw)
    && Object.values(raw).every((v) => typeof v === "string");
  if (!ok) throw new SafetensorsError(`${shown}: "__metadata__" must map names to strings; ${REDOWNLOAD}`);
  return { ...(raw as Record<string, string>) };
}

function parseEntry(name: string, raw: unknown, shown: string) {
  const where = `${shown}: tensor "${name}"`;
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new SafetensorsError(`${where}: header entry is ${describe(raw)}, expected {dtype, shape, data_offsets}; ${REDOWNLOAD}`);
  }
  const entry = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (!isDType(entry.dtype)) {
    throw new SafetensorsError(
      `${where} has unknown dtype ${JSON.stringify(entry.dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(", ")}); ` +
        `convert the checkpoint to one of these, e.g. save it again in bfloat16 or float32`,
    );
  }
  const dtype = entry.dtype;
  if (!isShape(entry.shape)) {
    throw new SafetensorsError(`${where} has invalid shape ${JSON.stringify(entry.shape)} (need non-negative integers); ${REDOWNLOAD}`);
  }
  const shape = entry.shape;
  const offs = entry.data_offsets;
  if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0) || offs[0] > offs[1]) {
    throw new SafetensorsError(`${where} has invalid data_offsets ${JSON.stringify(offs)} (need [begin, end] with 0 <= begin <= end); ${REDOWNLOAD}`);
  }
  const [begin, end] = offs as [number, number];
  const need = numel(shape) * DTYPE_BYTES[dtype];
  if (end - begin !== need) {
    throw new SafetensorsError(`${where} has ${end - begin} bytes but ${dtype}${JSON.stringify(shape)} needs ${need}; ${REDOWNLOAD}`);
  }
  return { dtype, shape, begin, end };
}

/**
 * Tensors must tile the data section without overlaps or holes (the format's
 * rule, which keeps one byte from meaning two things), and must all lie inside
 * the file. Trailing bytes after the last tensor are tolerated: they cannot be
 * read through any tensor.
 */
function checkLayout(list: TensorInfo[], dataStart: number, size: number, shown: string): void {
  const sorted = [...list].sort((a, b) => a.offset - b.offset || a.byteLength - b.byteLength);
  let pos = dataStart;
  let prev: TensorInfo | null = null;
  for (const t of sorted) {
    if (t.offset < pos) {
      throw new SafetensorsError(
        `${shown}: tensor "${t.name}" (data_offsets [${t.offset - dataStart}, ${t.offset - dataStart + t.byteLength}]) overlaps tensor "${prev?.name}"; ${REDOWNLOAD}`,
      );
    }
    if (t.offset > pos) {
      throw new SafetensorsError(
        `${shown}: gap of ${t.offset - pos} bytes in the data section before tensor "${t.name}"; ${REDOWNLOAD}`,
      );
    }
    const end = t.offset + t.byteLength;
    if (end > size) {
      throw new SafetensorsError(
        `${shown}: tensor "${t.name}" ends at byte ${end}, past the end of the file (${size} bytes); the file is truncated, download it again`,
      );
    }
    pos = end;
    prev = t;
  }
}

function readRange(fd: number, t: TensorInfo): Uint8Array {
  // Allocate with 8-byte alignment so typed-array views of any width work.
  const buf = new Uint8Array(new ArrayBuffer(Math.ceil(t.byteLength / 8) * 8), 0, t.byteLength);
  readExactly(fd, buf, t.offset, () => `${t.file}: unexpected end of file reading tensor "${t.name}" (the file shrank after opening?); ${REDOWNLOAD}`);
  return buf;
}

/** Read a tensor's bytes given only its TensorInfo (opens and closes the file). */
export function readTensorBytes(t: TensorInfo): Uint8Array {
  let fd: number;
  try {
    fd = fs.openSync(t.file, "r");
  } catch (e) {
    throw new SafetensorsError(`${t.file}: cannot open to read tensor "${t.name}" (${(e as Error).message})`);
  }
  try {
    return readRange(fd, t);
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------
// dtype conversion (the scalar codecs are in dtype.ts)

// Whole-table lookups: FP8 checkpoints hold billions of bytes, a table beats bit twiddling.
const F8E4M3_TABLE = Float32Array.from({ length: 256 }, (_, b) => f8e4m3ToF32(b));
const F8E5M2_TABLE = Float32Array.from({ length: 256 }, (_, b) => f8e5m2ToF32(b));

/**
 * Decode raw tensor bytes to float32. Exact for F32, F16, BF16 and the FP8
 * types; F64 rounds, and integers beyond 2^24 in magnitude round.
 */
export function toFloat32(dtype: DType, bytes: Uint8Array): Float32Array {
  if (!isDType(dtype)) throw new SafetensorsError(`cannot convert unknown dtype ${JSON.stringify(dtype)} to float32`);
  const width = DTYPE_BYTES[dtype];
  if (bytes.byteLength % width !== 0) {
    throw new SafetensorsError(`${dtype} data has ${bytes.byteLength} bytes, not a multiple of ${width}`);
  }
  const n = bytes.byteLength / width;
  const out = new Float32Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case "F32":
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
      return out;
    case "F64":
      for (let i = 0; i < n; i++) out[i] = view.getFloat64(i * 8, true);
      return out;
    case "BF16": {
      // bfloat16 is the upper half of a float32: place the bits, no arithmetic.
      const o32 = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) o32[i] = view.getUint16(i * 2, true) << 16;
      return out;
    }
    case "F16":
      for (let i = 0; i < n; i++) out[i] = f16ToF32(view.getUint16(i * 2, true));
      return out;
    case "F8_E4M3":
      for (let i = 0; i < n; i++) out[i] = F8E4M3_TABLE[bytes[i]];
      return out;
    case "F8_E5M2":
      for (let i = 0; i < n; i++) out[i] = F8E5M2_TABLE[bytes[i]];
      return out;
    case "I64":
      for (let i = 0; i < n; i++) out[i] = Number(view.getBigInt64(i * 8, true));
      return out;
    case "U64":
      for (let i = 0; i < n; i++) out[i] = Number(view.getBigUint64(i * 8, true));
      return out;
    case "I32":
      for (let i = 0; i < n; i++) out[i] = view.getInt32(i * 4, true);
      return out;
    case "U32":
      for (let i = 0; i < n; i++) out[i] = view.getUint32(i * 4, true);
      return out;
    case "I16":
      for (let i = 0; i < n; i++) out[i] = view.getInt16(i * 2, true);
      return out;
    case "U16":
      for (let i = 0; i < n; i++) out[i] = view.getUint16(i * 2, true);
      return out;
    case "I8":
      for (let i = 0; i < n; i++) out[i] = view.getInt8(i);
      return out;
    case "U8": case "BOOL":
      for (let i = 0; i < n; i++) out[i] = bytes[i];
      return out;
  }
}

/** A typed view of the bytes in the tensor's natural JS type (copying to ensure alignment). */
export function toTypedArray(dtype: DType, bytes: Uint8Array): TypedArray {
  const width = isDType(dtype) ? DTYPE_BYTES[dtype] : 0;
  if (width === 0 || bytes.byteLength % width !== 0) {
    throw new SafetensorsError(`${dtype} data has ${bytes.byteLength} bytes, not a whole number of elements`);
  }
  const copy = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  const b = copy.buffer, o = copy.byteOffset, n = copy.byteLength / width;
  switch (dtype) {
    case "F64": return new Float64Array(b, o, n);
    case "F32": return new Float32Array(b, o, n);
    case "I64": return new BigInt64Array(b, o, n);
    case "U64": return new BigUint64Array(b, o, n);
    case "I32": return new Int32Array(b, o, n);
    case "U32": return new Uint32Array(b, o, n);
    case "I16": return new Int16Array(b, o, n);
    case "U16": return new Uint16Array(b, o, n);
    case "I8": return new Int8Array(b, o, n);
    case "U8": case "BOOL": return new Uint8Array(b, o, n);
    case "F16": case "BF16": return new Uint16Array(b, o, n);
    default: return new Uint8Array(b, o, copy.byteLength);
  }
}

// ---------------------------------------------------------------------------
// Several files as one set of weights (sharded checkpoints).

/**
 * A set of weights spread over one or more .safetensors files: a single file,
 * a `*.safetensors.index.json` shard index, or a folder holding either.
 */
export class WeightSet {
  readonly files: SafetensorsFile[];
  private readonly where = new Map<string, SafetensorsFile>();
  readonly source: string;

  constructor(files: SafetensorsFile[], source: string) {
    this.files = files;
    this.source = source;
    for (const f of files) {
      for (const k of f.keys()) {
        // Two files with the same tensor (e.g. a folder holding both model.safetensors
        // and model.fp16.safetensors) would otherwise silently mix variants.
        const other = this.where.get(k);
        if (other) {
          throw new SafetensorsError(
            `${source}: tensor "${k}" is in both ${other.path} and ${f.path}; open one of the files directly`,
          );
        }
        this.where.set(k, f);
      }
    }
  }

  static open(p: string): WeightSet {
    const st = fs.statSync(p, { throwIfNoEntry: false });
    if (!st) throw new SafetensorsError(`${p}: no such file or folder; check the path`);
    if (st.isDirectory()) return WeightSet.openFolder(p);
    if (p.endsWith(".index.json")) return WeightSet.openIndex(p);
    return new WeightSet([SafetensorsFile.open(p)], p);
  }

  private static openFolder(dir: string): WeightSet {
    const names = fs.readdirSync(dir);
    const indexes = names.filter((n) => n.endsWith(".safetensors.index.json"));
    if (indexes.length > 1) {
      throw new SafetensorsError(`${dir}: several shard indexes (${indexes.join(", ")}); open one of them directly`);
    }
    if (indexes.length === 1) return WeightSet.openIndex(path.join(dir, indexes[0]));
    const single = names.filter((n) => n.endsWith(".safetensors")).sort();
    if (single.length === 0) throw new SafetensorsError(`${dir}: no .safetensors files in this folder`);
    return openAll(single.map((n) => path.join(dir, n)), dir);
  }

  private static openIndex(indexPath: string): WeightSet {
    const map = readWeightMap(indexPath);
    const dir = path.dirname(indexPath);
    const shardNames = [...new Set(Object.values(map))].sort();
    for (const s of shardNames) {
      if (!fs.existsSync(path.join(dir, s))) {
        throw new SafetensorsError(`${indexPath}: shard "${s}" is missing; download it again`);
      }
    }
    const set = openAll(shardNames.map((s) => path.join(dir, s)), indexPath);
    try {
      for (const [k, shard] of Object.entries(map)) checkIndexed(set, indexPath, k, path.resolve(dir, shard));
    } catch (e) {
      set.close();
      throw e;
    }
    return set;
  }

  keys(): string[] {
    return [...this.where.keys()];
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  info(name: string): TensorInfo {
    return this.fileOf(name).info(name);
  }

  bytes(name: string): Uint8Array {
    return this.fileOf(name).bytes(name);
  }

  float32(name: string): Float32Array {
    return toFloat32(this.info(name).dtype, this.bytes(name));
  }

  metadata(): Record<string, string> {
    return Object.assign({}, ...this.files.map((f) => f.metadata));
  }

  close(): void {
    for (const f of this.files) f.close();
  }

  private fileOf(name: string): SafetensorsFile {
    const f = this.where.get(name);
    if (!f) {
      throw new SafetensorsError(
        `${this.source}: missing tensor "${name}"; check that the checkpoint matches the model (variant, key names) and is complete`,
      );
    }
    return f;
  }
}

/** Open every file, closing those already open if one fails (no leaked descriptors). */
function openAll(files: string[], source: string): WeightSet {
  const opened: SafetensorsFile[] = [];
  try {
    for (const f of files) opened.push(SafetensorsFile.open(f));
    return new WeightSet(opened, source);
  } catch (e) {
    for (const f of opened) f.close();
    throw e;
  }
}

function readWeightMap(indexPath: string): Record<string, string> {
  let index: unknown;
  try {
    index = JSON.parse(fs.readFileSync(indexPath, "utf8"));
  } catch (e) {
    throw new SafetensorsError(`${indexPath}: cannot read shard index (${(e as Error).message}); download it again`);
  }
  const map = (index as { weight_map?: unknown } | null)?.weight_map;
  const ok = map !== null && typeof map === "object" && !Array.isArray(map)
    && Object.values(map).every((v) => typeof v === "string");
  if (!ok) throw new SafetensorsError(`${indexPath}: shard index has no "weight_map" of tensor name to file name; download it again`);
  return map as Record<string, string>;
}

/** The index must agree with the shards: each listed tensor is in the shard it names. */
function checkIndexed(set: WeightSet, indexPath: string, name: string, shardPath: string): void {
  if (!set.has(name)) {
    throw new SafetensorsError(`${indexPath}: tensor "${name}" is listed in shard "${path.basename(shardPath)}" but not found there; download the checkpoint again`);
  }
  const actual = set.info(name).file;
  if (actual !== fs.realpathSync(shardPath)) {
    throw new SafetensorsError(
      `${indexPath}: tensor "${name}" is listed in shard "${path.basename(shardPath)}" but found in ${actual}; the index does not match the shards, download them again`,
    );
  }
}

// ---------------------------------------------------------------------------
// FP8 checkpoints

/**
 * Dequantize an FP8 weight `X.weight` with its companion `X.weight_scale`:
 * `fp8(W) * scale`, where the scale is one value for the whole tensor or one
 * per output row (shape `[out]` or `[out, 1]`).
 */
export function dequantizeFp8(set: WeightSet, name: string): Float32Array {
  const w = set.info(name);
  if (w.dtype !== "F8_E4M3" && w.dtype !== "F8_E5M2") {
    throw new SafetensorsError(`${w.file}: tensor "${name}" is ${w.dtype}, not FP8; read it with float32() instead`);
  }
  const scaleName = `${name}_scale`;
  if (!set.has(scaleName)) {
    throw new SafetensorsError(`${w.file}: FP8 tensor "${name}" has no companion "${scaleName}"; the checkpoint is incomplete, download it again`);
  }
  const s = set.info(scaleName);
  const scale = set.float32(scaleName);
  const values = toFloat32(w.dtype, set.bytes(name));
  const rows = scaleRows(w, s);
  const rowLen = rows === 0 ? 0 : values.length / rows;
  for (let r = 0; r < rows; r++) {
    const k = scale.length === 1 ? scale[0] : scale[r];
    for (let i = r * rowLen, end = i + rowLen; i < end; i++) values[i] *= k;
  }
  return values;
}

/** How many rows the scale covers: 1 for a per-tensor scale, else the weight's first dimension. */
function scaleRows(w: TensorInfo, s: TensorInfo): number {
  const n = numel(s.shape);
  if (n === 1) return 1;
  const out = w.shape[0];
  const perRow = w.shape.length >= 1 && n === out
    && (s.shape.length === 1 || (s.shape.length === 2 && s.shape[1] === 1));
  if (!perRow) {
    throw new SafetensorsError(
      `${s.file}: scale "${s.name}" has shape ${JSON.stringify(s.shape)}, which fits neither per-tensor ([] or [1]) ` +
        `nor per-row ([${out}] or [${out}, 1]) for weight "${w.name}" of shape ${JSON.stringify(w.shape)}; the checkpoint uses an unsupported quantization layout`,
    );
  }
  return out;
}

// ---------------------------------------------------------------------------
// Writing

export interface TensorToWrite {
  dtype: DType;
  shape: number[];
  data: TypedArray | Uint8Array;
}

/** Write tensors to a .safetensors file (widest dtype first so every offset is aligned). */
export function writeSafetensors(file: string, tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): void {
  checkWriteInput(file, tensors, metadata);
  const names = Object.keys(tensors).sort((a, b) => DTYPE_BYTES[tensors[b].dtype] - DTYPE_BYTES[tensors[a].dtype] || (a < b ? -1 : 1));
  const header: Record<string, unknown> = {};
  if (metadata) header["__metadata__"] = metadata;
  let offset = 0;
  const parts: Uint8Array[] = [];
  for (const name of names) {
    const t = tensors[name];
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
    parts.push(bytes);
  }
  writeAtomically(file, [encodeHeader(header), ...parts]);
}

function checkWriteInput(file: string, tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): void {
  if (metadata && !Object.values(metadata).every((v) => typeof v === "string")) {
    throw new SafetensorsError(`${file}: metadata values must be strings (JSON-encode other values)`);
  }
  for (const [name, t] of Object.entries(tensors)) {
    if (name === "__metadata__") throw new SafetensorsError(`${file}: "__metadata__" is reserved and cannot name a tensor`);
    if (!isDType(t.dtype)) throw new SafetensorsError(`${file}: tensor "${name}" has unknown dtype ${JSON.stringify(t.dtype)}`);
    if (!isShape(t.shape)) throw new SafetensorsError(`${file}: tensor "${name}" has invalid shape ${JSON.stringify(t.shape)}`);
    const need = numel(t.shape) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== need) {
      throw new SafetensorsError(`${file}: tensor "${name}" data has ${t.data.byteLength} bytes, ${t.dtype}${JSON.stringify(t.shape)} needs ${need}`);
    }
  }
}

/** Length prefix + JSON, padded with spaces so the data section starts 8-byte aligned. */
function encodeHeader(header: Record<string, unknown>): Uint8Array {
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
  const body = Buffer.from(json, "utf8");
  const out = Buffer.alloc(8 + body.byteLength);
  out.writeBigUInt64LE(BigInt(body.byteLength), 0);
  body.copy(out, 8);
  return out;
}

let tmpCounter = 0;

/** Write to a temporary file and rename, so readers never see a half-written file. */
function writeAtomically(file: string, parts: Uint8Array[]): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${tmpCounter++}`;
  try {
    const fd = fs.openSync(tmp, "w");
    try {
      for (const p of parts) writeFully(fd, p);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new SafetensorsError(`${file}: cannot write (${(e as Error).message})`);
  }
}

function writeFully(fd: number, p: Uint8Array): void {
  let done = 0;
  while (done < p.byteLength) done += fs.writeSync(fd, p, done, Math.min(p.byteLength - done, 1 << 30));
}

/** Read every tensor of a small file into memory in its natural type. */
export function readAll(file: string): Map<string, { dtype: DType; shape: number[]; data: TypedArray }> {
  const f = SafetensorsFile.open(file);
  try {
    const out = new Map<string, { dtype: DType; shape: number[]; data: TypedArray }>();
    for (const [name, t] of f.tensors) out.set(name, { dtype: t.dtype, shape: t.shape, data: toTypedArray(t.dtype, f.bytes(name)) });
    return out;
  } finally {
    f.close();
  }
}
