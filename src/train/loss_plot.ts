// The loss curve of a run as a PNG (RUN_DIR/loss.png): an SVG drawn here and
// rasterised by sharp (already a dependency for images; no plotting library).

import * as fs from "node:fs";
import sharp from "sharp";

/** Exponential moving average with bias correction (what the progress line shows). */
export function smoothed(losses: number[], beta = 0.9): number[] {
  const out: number[] = [];
  let avg = 0;
  losses.forEach((l, i) => {
    avg = beta * avg + (1 - beta) * l;
    out.push(avg / (1 - beta ** (i + 1)));
  });
  return out;
}

export function lossSvg(losses: number[], title: string): string {
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
export async function writeLossPng(file: string, losses: number[], title: string): Promise<void> {
  if (!losses.length) return;
  const tmp = `${file}.tmp-${process.pid}`;
  await sharp(Buffer.from(lossSvg(losses, title))).png().toFile(tmp);
  fs.renameSync(tmp, file);
}
