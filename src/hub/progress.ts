// Progress of `flux2 pull` on stderr: on a terminal one redrawn status line
// (file k/n, a bar, bytes done/total, speed, ETA, overall percentage); in a
// log (not a TTY) plain lines: one when a file starts, one every few seconds
// while it downloads, one when it is done.

import { formatDuration } from "../util/duration.js";

export interface ProgressOptions {
  /** Where to write; null: nothing at all. */
  out: NodeJS.WritableStream | null;
  /** Redraw a single line (terminal) instead of printing plain lines. */
  tty: boolean;
  /** Plain mode: seconds between two progress lines of the same file. */
  intervalS?: number;
}

export function formatBytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`;
}

export class Progress {
  private readonly out: NodeJS.WritableStream | null;
  private readonly tty: boolean;
  private readonly intervalMs: number;
  private totalBytes = 0;
  private totalFiles = 0;
  private doneBytes = 0;
  private fileIndex = 0;
  private file = "";
  private fileSize = 0;
  private fileDone = 0;
  private lastDraw = 0;
  private lineShown = false;
  /** Samples (time ms, file bytes) over the last few seconds, for the speed. */
  private samples: [number, number][] = [];

  constructor(opts: ProgressOptions) {
    this.out = opts.out;
    this.tty = opts.tty;
    this.intervalMs = (opts.intervalS ?? 10) * 1000;
  }

  /** The transfer ahead: files and bytes still to fetch (for the overall figure). */
  begin(totalFiles: number, totalBytes: number): void {
    this.totalFiles = totalFiles;
    this.totalBytes = totalBytes;
  }

  /** A message line (skip notices, summaries); clears the status line first. */
  note(line: string): void {
    if (!this.out) return;
    this.clearLine();
    this.out.write(line + "\n");
  }

  fileStart(filePath: string, size: number, resumeFrom: number): void {
    this.fileIndex++;
    this.file = filePath;
    this.fileSize = size;
    this.fileDone = resumeFrom;
    this.doneBytes += resumeFrom;
    this.samples = [[Date.now(), resumeFrom]];
    this.lastDraw = Date.now();
    if (!this.tty) {
      const what = resumeFrom > 0 ? `resuming ${filePath} at ${formatBytes(resumeFrom)} of ${formatBytes(size)}` : `downloading ${filePath} (${formatBytes(size)})`;
      this.note(`[${this.fileIndex}/${this.totalFiles}] ${what}`);
    } else {
      this.draw(true);
    }
  }

  /** `n` more bytes of the current file arrived (negative: the file restarted from 0). */
  advance(n: number): void {
    this.fileDone += n;
    this.doneBytes += n;
    const now = Date.now();
    this.samples.push([now, this.fileDone]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift();
    if (this.tty) {
      if (now - this.lastDraw >= 100) this.draw(false);
    } else if (now - this.lastDraw >= this.intervalMs) {
      this.lastDraw = now;
      this.note(`  ${this.file}: ${this.figures()}`);
    }
  }

  /** The current file starts again from byte 0 (its bytes so far are discarded). */
  restartFile(): void {
    this.doneBytes -= this.fileDone;
    this.fileDone = 0;
    this.samples = [[Date.now(), 0]];
  }

  /** The current file is finished (verified) or abandoned; `message` says which. */
  fileEnd(message: string): void {
    this.note(message);
  }

  end(): void {
    this.clearLine();
  }

  private speed(): number {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    const dt = (last[0] - first[0]) / 1000;
    return dt > 0.05 ? (last[1] - first[1]) / dt : 0;
  }

  private figures(): string {
    const pct = this.fileSize > 0 ? Math.floor((100 * this.fileDone) / this.fileSize) : 100;
    const speed = this.speed();
    const eta = speed > 0 ? formatDuration((this.fileSize - this.fileDone) / speed) : "?";
    return `${pct}% ${formatBytes(this.fileDone)}/${formatBytes(this.fileSize)} ${formatBytes(speed)}/s eta ${eta}`;
  }

  private draw(force: boolean): void {
    if (!this.out || (!force && !this.file)) return;
    this.lastDraw = Date.now();
    const width = 24;
    const frac = this.fileSize > 0 ? Math.min(1, this.fileDone / this.fileSize) : 1;
    const filled = Math.round(frac * width);
    const bar = "█".repeat(filled) + "░".repeat(width - filled);
    const overall = this.totalBytes > 0 ? ` | all ${Math.floor((100 * this.doneBytes) / this.totalBytes)}%` : "";
    const columns = (this.out as NodeJS.WriteStream).columns;
    const cols = columns && columns > 40 ? columns : 120;
    const head = `[${this.fileIndex}/${this.totalFiles}] `;
    const tail = ` ${bar} ${this.figures()}${overall}`;
    let name = this.file;
    const room = cols - 1 - head.length - tail.length;
    if (name.length > room) name = room > 1 ? "…" + name.slice(name.length - room + 1) : "";
    this.out.write(`\r\x1b[K${head}${name}${tail}`);
    this.lineShown = true;
  }

  private clearLine(): void {
    if (this.tty && this.lineShown && this.out) {
      this.out.write("\r\x1b[K");
      this.lineShown = false;
    }
  }
}
