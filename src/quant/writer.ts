// Writing large .safetensors files without holding them in memory.
//
// The header (names, dtypes, shapes, offsets) is fixed up front from a plan; tensor bytes are
// then written at their offsets, in any order and in any number of chunks, and the file is
// renamed into place only when every byte of every tensor has been written. Used for the
// random real-shape checkpoints (src/bench/make_model.ts) and quantized folders (src/quant/).

import * as fs from "../platform/fs.js";
import * as path from "../platform/path.js";
import { DTYPE_BYTES, numel, type DType } from "../io/safetensors.js";

export interface PlannedTensor {
  name: string;
  dtype: DType;
  shape: number[];
}

export class SafetensorsStreamWriter {
  private readonly fd: number;
  private readonly tmp: string;
  private readonly where = new Map<string, { start: number; length: number; written: number }>();
  private closed = false;

  constructor(readonly file: string, plan: PlannedTensor[], metadata?: Record<string, string>) {
    // Widest dtype first keeps every tensor naturally aligned (the header is padded to 8 bytes).
    const order = plan.map((t, i) => ({ t, i })).sort((a, b) => DTYPE_BYTES[b.t.dtype] - DTYPE_BYTES[a.t.dtype] || a.i - b.i);
    const header: Record<string, unknown> = {};
    if (metadata) header.__metadata__ = metadata;
    let offset = 0;
    const entries: [string, number, number][] = [];
    for (const { t } of order) {
      if (header[t.name] !== undefined) throw new Error(`${file}: tensor "${t.name}" planned twice`);
      const length = numel(t.shape) * DTYPE_BYTES[t.dtype];
      header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + length] };
      entries.push([t.name, offset, length]);
      offset += length;
    }
    let json = JSON.stringify(header);
    json += " ".repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
    const body = Buffer.from(json, "utf8");
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(body.byteLength), 0);
    const dataStart = 8 + body.byteLength;
    for (const [name, start, length] of entries) this.where.set(name, { start: dataStart + start, length, written: 0 });
    fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
    this.tmp = `${file}.partial-${process.pid}`;
    this.fd = fs.openSync(this.tmp, "w");
    writeAll(this.fd, prefix, 0);
    writeAll(this.fd, body, 8);
    fs.ftruncateSync(this.fd, dataStart + offset);
  }

  /** Append the next chunk of tensor `name` (chunks of one tensor arrive in order). */
  write(name: string, bytes: Uint8Array): void {
    const w = this.where.get(name);
    if (!w) throw new Error(`${this.file}: tensor "${name}" is not in the plan`);
    if (w.written + bytes.byteLength > w.length) throw new Error(`${this.file}: too many bytes for "${name}" (${w.written + bytes.byteLength} > ${w.length})`);
    writeAll(this.fd, bytes, w.start + w.written);
    w.written += bytes.byteLength;
  }

  /** Check every tensor is complete, then move the file into place. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
    const missing = [...this.where].filter(([, w]) => w.written !== w.length).map(([n]) => n);
    if (missing.length) {
      fs.rmSync(this.tmp, { force: true });
      throw new Error(`${this.file}: ${missing.length} tensor(s) incomplete, e.g. "${missing[0]}"`);
    }
    fs.renameSync(this.tmp, this.file);
  }

  /** Give up: remove the partial file. */
  abort(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
    fs.rmSync(this.tmp, { force: true });
  }
}

function writeAll(fd: number, bytes: Uint8Array, position: number): void {
  let done = 0;
  while (done < bytes.byteLength) {
    done += fs.writeSync(fd, bytes, done, Math.min(bytes.byteLength - done, 1 << 30), position + done);
  }
}

/** View any typed array's bytes. */
export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
