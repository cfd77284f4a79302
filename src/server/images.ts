// Content-addressed image store: a file's name is the sha256 of its bytes plus
// its extension (<root>/ab/<sha256>.png). Writing the same image twice is a
// no-op, so a retried job cannot leave a second copy, and several processes
// (the server and Redis workers) can share one folder safely: files appear
// atomically (written to a temporary name, then renamed).

import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";

export const IMAGE_TYPES: Record<string, string> = {
  png: "image/png", jpg: "image/jpeg", webp: "image/webp", gif: "image/gif", avif: "image/avif", tiff: "image/tiff", heif: "image/heif",
};

const NAME_RE = /^([0-9a-f]{64})\.(png|jpg|webp|gif|avif|tiff|heif)$/;

export function isImageName(name: string): boolean {
  return NAME_RE.test(name);
}

/** sharp's format names → our extensions. */
export function extFor(format: string | undefined): string {
  if (format === "jpeg") return "jpg";
  if (format && IMAGE_TYPES[format]) return format;
  return "bin";
}

export class ImageStore {
  constructor(readonly root: string) {
    fs.mkdirSync(root, { recursive: true });
  }

  path(name: string): string {
    const m = NAME_RE.exec(name);
    if (!m) throw new Error(`not an image name: ${name}`);
    return path.join(this.root, m[1].slice(0, 2), name);
  }

  /** Store bytes; returns the name (<sha256>.<ext>). */
  async put(bytes: Uint8Array, ext: string): Promise<string> {
    const name = `${createHash("sha256").update(bytes).digest("hex")}.${ext}`;
    const file = this.path(name);
    if (fs.existsSync(file)) return name;
    await fs.promises.mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    try {
      const fh = await fs.promises.open(tmp, "w");
      try {
        await fh.writeFile(bytes);
        await fh.sync(); // the job row that names this file may be committed right after
      } finally {
        await fh.close();
      }
      await fs.promises.rename(tmp, file);
    } catch (e) {
      // A full disk (ENOSPC) must not leave half-written files behind.
      await fs.promises.rm(tmp, { force: true }).catch(() => {});
      throw e;
    }
    return name;
  }

  has(name: string): boolean {
    return isImageName(name) && fs.existsSync(this.path(name));
  }

  read(name: string): Promise<Buffer> {
    return fs.promises.readFile(this.path(name));
  }

  readSync(name: string): Buffer {
    return fs.readFileSync(this.path(name));
  }
}
