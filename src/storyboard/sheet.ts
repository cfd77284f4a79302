// Storyboard exports: a contact sheet (PNG with sharp, PDF with pdf-lib) and
// a folder of frames with a JSON manifest and an ffmpeg concat list, which a
// video tool (ffmpeg, an editor's image-sequence import) takes as it is.

import * as fs from "node:fs";
import * as path from "node:path";
import { PDFDocument, StandardFonts, rgb } from "pdf-lib";
import sharp from "sharp";

/** One generated panel of a board. */
export interface Panel {
  index: number;
  id: string;
  /** The shot as written. */
  text: string;
  /** The prompt the model was given. */
  prompt: string;
  references: string[];
  seed: number;
  width: number;
  height: number;
  /** The panel's image file (PNG). */
  png: Buffer;
}

export interface SheetInfo {
  title?: string;
  brief?: string;
}

/** Seconds each frame is held in the concat list: a storyboard animatic's usual beat. */
export const DEFAULT_FRAME_SECONDS = 2;

const CELL = 320;
const GAP = 16;
const CAPTION_H = 44;
const TITLE_H = 56;

function columns(n: number): number {
  return Math.min(3, n);
}

function xmlEscape(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c]!);
}

function clip(s: string, n: number): string {
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

/** Panel cell size: every panel fitted into CELL×CELL·(h/w) of the first, so the grid is regular. */
function cellSize(panels: Panel[]): { w: number; h: number } {
  const p = panels[0];
  return { w: CELL, h: Math.round((CELL * p.height) / p.width) };
}

/** The contact sheet as a PNG: title, then the panels in a grid of up to 3 columns, each captioned "N · id — shot". */
export async function contactSheetPng(panels: Panel[], info: SheetInfo = {}): Promise<Buffer> {
  if (!panels.length) throw new Error("a contact sheet needs at least one panel");
  const cols = columns(panels.length), rows = Math.ceil(panels.length / cols);
  const cell = cellSize(panels);
  const W = GAP + cols * (cell.w + GAP), H = TITLE_H + rows * (cell.h + CAPTION_H + GAP) + GAP;
  const layers: { input: Buffer; left: number; top: number }[] = [];
  const text: string[] = [];
  if (info.title || info.brief) {
    text.push(`<text x="${GAP}" y="28" font-family="DejaVu Sans, sans-serif" font-size="20" font-weight="bold" fill="#111">${xmlEscape(clip(info.title ?? "Storyboard", 80))}</text>`);
    if (info.brief) text.push(`<text x="${GAP}" y="48" font-family="DejaVu Sans, sans-serif" font-size="12" fill="#444">${xmlEscape(clip(info.brief, 150))}</text>`);
  }
  for (const [i, p] of panels.entries()) {
    const x = GAP + (i % cols) * (cell.w + GAP), y = TITLE_H + Math.floor(i / cols) * (cell.h + CAPTION_H + GAP);
    const img = await sharp(p.png).resize(cell.w, cell.h, { fit: "contain", background: "#ffffff" }).png().toBuffer();
    layers.push({ input: img, left: x, top: y });
    text.push(`<text x="${x}" y="${y + cell.h + 16}" font-family="DejaVu Sans, sans-serif" font-size="13" font-weight="bold" fill="#111">${xmlEscape(`${p.index + 1} · ${p.id}`)}</text>`);
    text.push(`<text x="${x}" y="${y + cell.h + 34}" font-family="DejaVu Sans, sans-serif" font-size="11" fill="#333">${xmlEscape(clip(p.text, 52))}</text>`);
  }
  const svg = Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}">${text.join("")}</svg>`);
  layers.push({ input: svg, left: 0, top: 0 });
  return sharp({ create: { width: W, height: H, channels: 3, background: "#f4f4f2" } }).composite(layers).png().toBuffer();
}

/** pdf-lib's standard fonts encode WinAnsi only: other characters are shown as "?" rather than failing the export. */
function winAnsi(s: string): string {
  return s.replace(/[^\x20-\x7e\u00a0-\u00ff]/g, (c) => (c === "…" ? "..." : c === "—" || c === "–" ? "-" : c === "·" ? "\u00b7" : "?"));
}

/** The contact sheet as a PDF: A4 landscape pages of up to 6 panels (3 × 2), captioned, with the title on the first. */
export async function contactSheetPdf(panels: Panel[], info: SheetInfo = {}): Promise<Buffer> {
  if (!panels.length) throw new Error("a contact sheet needs at least one panel");
  const doc = await PDFDocument.create();
  doc.setTitle(info.title ?? "Storyboard");
  doc.setCreator("flux2.ts storyboard");
  const font = await doc.embedFont(StandardFonts.Helvetica);
  const bold = await doc.embedFont(StandardFonts.HelveticaBold);
  const PW = 842, PH = 595, M = 36, cols = 3, rowsPerPage = 2;
  const cellW = (PW - 2 * M - (cols - 1) * 18) / cols;
  const cellH = (PH - 2 * M - 40 - (rowsPerPage - 1) * 18) / rowsPerPage - 30;
  const perPage = cols * rowsPerPage;
  for (let start = 0; start < panels.length; start += perPage) {
    const page = doc.addPage([PW, PH]);
    const head = start === 0 ? winAnsi(clip(info.title ?? "Storyboard", 90)) : winAnsi(clip(`${info.title ?? "Storyboard"} (continued)`, 90));
    page.drawText(head, { x: M, y: PH - M - 14, size: 16, font: bold, color: rgb(0.07, 0.07, 0.07) });
    if (start === 0 && info.brief) page.drawText(winAnsi(clip(info.brief, 140)), { x: M, y: PH - M - 30, size: 9, font, color: rgb(0.3, 0.3, 0.3) });
    for (const [k, p] of panels.slice(start, start + perPage).entries()) {
      const col = k % cols, row = Math.floor(k / cols);
      const img = await doc.embedPng(p.png);
      const scale = Math.min(cellW / img.width, cellH / img.height);
      const w = img.width * scale, h = img.height * scale;
      const x = M + col * (cellW + 18), top = PH - M - 40 - row * (cellH + 30 + 18);
      page.drawImage(img, { x, y: top - h, width: w, height: h });
      page.drawText(winAnsi(`${p.index + 1} - ${p.id}`), { x, y: top - h - 12, size: 9, font: bold });
      page.drawText(winAnsi(clip(p.text, 60)), { x, y: top - h - 24, size: 8, font, color: rgb(0.2, 0.2, 0.2) });
    }
  }
  // Fixed dates: the same panels give the same bytes.
  doc.setCreationDate(new Date(0));
  doc.setModificationDate(new Date(0));
  return Buffer.from(await doc.save());
}

/** The frame file of a panel inside an export folder. */
export function frameName(p: Pick<Panel, "index" | "id">): string {
  return `frames/${String(p.index + 1).padStart(2, "0")}-${p.id}.png`;
}

/** manifest.json: the board and, per frame, its file, shot, prompt, references, seed, size and duration. */
export function manifest(panels: Panel[], info: SheetInfo & { model?: string; frameSeconds?: number }) {
  const seconds = info.frameSeconds ?? DEFAULT_FRAME_SECONDS;
  return {
    format: "flux2-storyboard/1",
    title: info.title ?? null,
    brief: info.brief ?? null,
    model: info.model ?? null,
    frame_seconds: seconds,
    contact_sheet: { png: "contact_sheet.png", pdf: "contact_sheet.pdf" },
    ffmpeg_concat: "frames.ffconcat",
    frames: panels.map((p) => ({
      index: p.index, id: p.id, file: frameName(p), text: p.text, prompt: p.prompt, references: p.references, seed: p.seed,
      width: p.width, height: p.height, start_s: p.index * seconds, duration_s: seconds,
    })),
  };
}

/** ffmpeg's concat demuxer list: `ffmpeg -f concat -i frames.ffconcat -vsync vfr -pix_fmt yuv420p board.mp4`. */
export function ffconcat(panels: Panel[], seconds = DEFAULT_FRAME_SECONDS): string {
  const lines = ["ffconcat version 1.0"];
  for (const p of panels) lines.push(`file '${frameName(p)}'`, `duration ${seconds}`);
  // The concat demuxer holds the last frame only if it is listed again.
  if (panels.length) lines.push(`file '${frameName(panels[panels.length - 1])}'`);
  return lines.join("\n") + "\n";
}

/**
 * Write (or refresh) an export folder: frames/, manifest.json, frames.ffconcat and both
 * contact sheets. A frame file whose bytes are unchanged is not rewritten.
 */
export async function writeExport(dir: string, panels: Panel[], info: SheetInfo & { model?: string; frameSeconds?: number }): Promise<string[]> {
  fs.mkdirSync(path.join(dir, "frames"), { recursive: true });
  const written: string[] = [];
  const put = (rel: string, bytes: Buffer | string) => {
    const file = path.join(dir, rel);
    const data = typeof bytes === "string" ? Buffer.from(bytes) : bytes;
    if (fs.existsSync(file) && fs.readFileSync(file).equals(data)) return;
    fs.writeFileSync(file + ".tmp", data);
    fs.renameSync(file + ".tmp", file);
    written.push(file);
  };
  for (const p of panels) put(frameName(p), p.png);
  put("manifest.json", JSON.stringify(manifest(panels, info), null, 2) + "\n");
  put("frames.ffconcat", ffconcat(panels, info.frameSeconds));
  put("contact_sheet.png", await contactSheetPng(panels, info));
  put("contact_sheet.pdf", await contactSheetPdf(panels, info));
  return written;
}
