// The README's pictures: every front-door mode (text to image, img2img, inpaint,
// outpaint, multi-reference, a LoRA) run through the `flux2` CLI exactly as a user
// would type it, with the bundled model, then laid out on one labelled sheet.
//
//   npx tsc -p tsconfig.json && node dist/scripts/readme-pictures.js [--model DIR] [--lora FILE] [--out DIR]
//
// The commands are printed and written next to the pictures (commands.txt), so each
// picture in docs/ can be remade by hand.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import sharp, { type OverlayOptions } from "sharp";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const cli = path.join(root, "dist", "src", "cli", "main.js");

interface Shot {
  file: string;
  label: string;
  args: string[];
}

function shots(model: string, lora: string | undefined, out: string): Shot[] {
  const m = ["--model", model];
  const o = (f: string) => path.join(out, f);
  const list: Shot[] = [
    { file: "generate-hex.png", label: "generate: a #1E90FF circle", args: ["generate", ...m, "--prompt", "a #1E90FF circle on a white background", "--seed", "0", "--out", o("generate-hex.png")] },
    { file: "generate-apple.png", label: "generate: a red apple", args: ["generate", ...m, "--prompt", "a red apple", "--seed", "0", "--out", o("generate-apple.png")] },
    { file: "generate-layout.png", label: "generate: red star, left", args: ["generate", ...m, "--prompt", "a red star on the left, on a white background", "--seed", "0", "--out", o("generate-layout.png")] },
    {
      file: "generate-json.png", label: "generate: a JSON prompt", args: ["generate", ...m, "--prompt",
        '{"scene":"a large #E4572E triangle in the centre","subjects":[{"type":"triangle","color":"#E4572E","position":"centre","size":"large"}],"background":"#FFFFFF","palette":["#E4572E","#FFFFFF"]}',
        "--seed", "0", "--out", o("generate-json.png")],
    },
    { file: "edit-img2img.png", label: "edit: apple → green (0.7)", args: ["edit", ...m, "-i", o("generate-apple.png"), "--prompt", "a green apple", "--strength", "0.7", "--seed", "0", "--out", o("edit-img2img.png")] },
    { file: "edit-inpaint.png", label: "inpaint: right half", args: ["edit", ...m, "-i", o("generate-hex.png"), "--mask", o("mask-right.png"), "--prompt", "a #1E90FF circle and a red square, on a white background", "--seed", "0", "--out", o("edit-inpaint.png")] },
    { file: "edit-outpaint.png", label: "outpaint: +32 px each side", args: ["edit", ...m, "-i", o("generate-hex.png"), "--expand", "0,32,0,32", "--prompt", "a #1E90FF circle in the centre, on a white background", "--seed", "0", "--out", o("edit-outpaint.png")] },
    { file: "edit-multiref.png", label: "two references", args: ["edit", ...m, "-i", o("generate-apple.png"), "-i", o("generate-hex.png"), "--prompt", "a red apple and a #1E90FF circle, on a white background", "--width", "128", "--height", "64", "--seed", "0", "--out", o("edit-multiref.png")] },
  ];
  if (lora) {
    list.push({ file: "lora-style.png", label: "LoRA: palette style", args: ["generate", ...m, "--lora", lora, "--prompt", "a red apple", "--seed", "0", "--out", o("lora-style.png")] });
  }
  return list;
}

function quote(a: string): string {
  return /[\s"'#{}(),]/.test(a) ? `'${a.replace(/'/g, "'\\''")}'` : a;
}

async function sheet(out: string, done: Shot[], file: string): Promise<void> {
  // Each picture at 2× (nearest neighbour: the pixels are the point) in a cell with its label.
  const scale = 2, cellW = 128 * scale + 16, labelH = 22, cellH = 64 * scale + labelH + 12, cols = 3;
  const rows = Math.ceil(done.length / cols);
  const composites: OverlayOptions[] = [];
  for (const [i, s] of done.entries()) {
    const x = (i % cols) * cellW, y = Math.floor(i / cols) * cellH;
    const img = sharp(path.join(out, s.file));
    const meta = await img.metadata();
    const w = meta.width! * scale, h = meta.height! * scale;
    composites.push({ input: await img.resize(w, h, { kernel: "nearest" }).png().toBuffer(), left: x + Math.round((cellW - w) / 2), top: y + 6 });
    const text = s.label.replace(/&/g, "&amp;").replace(/</g, "&lt;");
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${cellW}" height="${labelH}"><text x="${cellW / 2}" y="15" font-family="DejaVu Sans" font-size="12" text-anchor="middle" fill="#222">${text}</text></svg>`;
    composites.push({ input: Buffer.from(svg), left: x, top: y + 6 + 64 * scale + 4 });
  }
  await sharp({ create: { width: cols * cellW, height: rows * cellH, channels: 3, background: "#f4f4f4" } }).composite(composites).png().toFile(file);
}

async function main(): Promise<void> {
  const { values: v } = parseArgs({ options: { model: { type: "string" }, lora: { type: "string" }, out: { type: "string" }, sheet: { type: "string" } } });
  const model = v.model ?? path.join(root, "models", "flux2-mini");
  const out = path.resolve(v.out ?? path.join(root, "docs", "pictures"));
  fs.mkdirSync(out, { recursive: true });
  const list = shots(model, v.lora, out);
  const log: string[] = [];
  for (const s of list) {
    if (s.file === "edit-inpaint.png") {
      // The mask: white (repaint) on the right half of the 64×64 circle picture.
      const mask = Buffer.alloc(64 * 64, 0);
      for (let y = 0; y < 64; y++) mask.fill(255, y * 64 + 32, y * 64 + 64);
      await sharp(mask, { raw: { width: 64, height: 64, channels: 1 } }).png().toFile(path.join(out, "mask-right.png"));
    }
    const shown = `npx flux2 ${s.args.map((a) => quote(a.startsWith(root + path.sep) ? path.relative(root, a) : a)).join(" ")}`;
    console.log(shown);
    log.push(shown);
    const r = spawnSync(process.execPath, [cli, ...s.args], { cwd: root, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${shown}\nfailed (${r.status}):\n${r.stderr}`);
  }
  fs.writeFileSync(path.join(out, "commands.txt"), log.join("\n") + "\n");
  const sheetFile = path.resolve(v.sheet ?? path.join(root, "docs", "flux2-mini-gallery.png"));
  await sheet(out, list, sheetFile);
  console.log(`sheet: ${path.relative(root, sheetFile)}`);
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
