// The loss curve of a run as a PNG (RUN_DIR/loss.png): an SVG drawn here and
// rasterised by sharp (already a dependency for images; no plotting library).

import * as fs from "node:fs";
import sharp from "sharp";

/** Exponential moving average with bias correction (what the progress line shows). */
export function smoothed(losses: readonly number[], beta = 0.9): number[] {
  const out: number[] = [];
  let avg = 0;
  losses.forEach((l, i) => {
    avg = beta * avg + (1 - beta) * l;
    out.push(avg / (1 - beta ** (i + 1)));
  });
  return out;
}

export function lossSvg(losses: readonly number[], title: string): string {
  const W = 800, H = 400, L = 70, R = 20, T = 40, B = 50;
  const n = losses.length;
  const finite = losses.filter(Number.isFinite);
  const lo = Math.min(...finite), hi = Math.max(...finite);
  const span = hi - lo || Math.abs(hi) || 1;
  const x = (i: number) => L + (n <= 1 ? 0 : (i / (n - 1)) * (W - L - R));
  const y = (v: number) => T + (1 - (v - lo) / span) * (H - T - B);
  const line = (vals: number[]) => vals.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = lo + f * span;
    return `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/><text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${v.toPrecision(3)}</text>`;
  }).join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">` +
    `<rect width="${W}" height="${H}" fill="white"/>${ticks}` +
    `<text x="${L}" y="24" font-size="14">${esc(title)}</text>` +
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">step (1 – ${n})</text>` +
    (n ? `<polyline fill="none" stroke="#9ecae1" stroke-width="1" points="${line(losses.map((v) => (Number.isFinite(v) ? v : hi)))}"/>` +
      `<polyline fill="none" stroke="#08519c" stroke-width="2" points="${line(smoothed(losses))}"/>` : "") +
    `</svg>`;
}

/** Write the curve atomically (temporary file + rename), so a viewer never sees half a PNG. */
export async function writeLossPng(file: string, losses: readonly number[], title: string): Promise<void> {
  if (!losses.length) return;
  const tmp = `${file}.tmp-${process.pid}`;
  await sharp(Buffer.from(lossSvg(losses, title))).png().toFile(tmp);
  fs.renameSync(tmp, file);
}

/**
 * Redraws RUN_DIR/loss.png as a run goes without ever holding up training. A redraw runs in the
 * background; a request while one is in flight replaces any waiting request, so at most one
 * redraw waits. A redraw that takes longer than `stallMs` marks the plot as stalled: one
 * warning, no more redraws, and training goes on. Why: a 2,000-step `flux2 train --vae` run
 * (session 6, docs/flux2-mini.md) stopped for good after step 569 while it awaited a redraw,
 * with a libvips worker and a pango fontconfig thread blocked (SVG text goes through pango);
 * the cause was not found and a 3,000-redraw loop did not reproduce it, so the trainer no
 * longer waits on the plot at all.
 */
export class LossPlotter {
  private inFlight: Promise<void> | null = null;
  private waiting: number[] | null = null;
  /** True once a redraw timed out or failed: no more redraws. */
  stalled = false;

  constructor(
    private readonly file: string,
    private readonly title: string,
    private readonly warn: (message: string) => void,
    private readonly stallMs = 60_000,
    private readonly render: (file: string, losses: readonly number[], title: string) => Promise<void> = writeLossPng,
  ) {}

  /** Ask for a redraw with these losses (copied); returns at once. */
  update(losses: readonly number[]): void {
    if (this.stalled) return;
    if (this.inFlight) {
      this.waiting = [...losses];
      return;
    }
    this.start([...losses]);
  }

  /** Draw the final curve and wait for it, at most `stallMs`. False if the plot stalled or failed. */
  async finish(losses: readonly number[]): Promise<boolean> {
    this.waiting = null;
    while (this.inFlight && !this.stalled) await this.inFlight;
    if (this.stalled) return false;
    this.start([...losses]);
    await this.inFlight;
    return !this.stalled;
  }

  private start(losses: number[]): void {
    let timer: NodeJS.Timeout | undefined;
    const stall = new Promise<"stalled">((resolve) => { timer = setTimeout(() => resolve("stalled"), this.stallMs); });
    const drawn = this.render(this.file, losses, this.title).then(() => "drawn" as const, (e: unknown) => e instanceof Error ? e : new Error(String(e)));
    this.inFlight = Promise.race([drawn, stall]).then((outcome) => {
      clearTimeout(timer);
      this.inFlight = null;
      if (outcome === "stalled") {
        this.stalled = true;
        this.warn(`the loss plot (${this.file}) did not finish drawing in ${Math.round(this.stallMs / 1000)} s; it is no longer redrawn, and training goes on (the losses are in the progress lines and in --json)`);
        return;
      }
      if (outcome instanceof Error) {
        this.stalled = true;
        this.warn(`the loss plot (${this.file}) could not be drawn (${outcome.message}); it is no longer redrawn, and training goes on`);
        return;
      }
      const next = this.waiting;
      this.waiting = null;
      if (next) this.start(next);
    });
  }
}
