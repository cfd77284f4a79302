// flux2 watermark detect FILE...: read the invisible watermark back (src/provenance/watermark.ts).

import * as fs from "node:fs";
import { parseArgs } from "node:util";
import { detectWatermark } from "../provenance/watermark.js";

const HELP = `usage: flux2 watermark detect FILE... [--json]

Looks for the invisible watermark that flux2 generate, flux2 edit and flux2 serve
embed in every image of at least 256x256 pixels (unless --no-watermark). The mark
carries a fixed 48-bit message (the one BFL's reference code uses) in the 8x8-block
means of the luma; it survives JPEG re-encoding down to quality 75 and halving the
image. Also recognises the 46-bit layout BFL's code writes.

Prints one line per file: "watermark found" or "no watermark", with how many of the
message's bits were read back (a detection needs at least 40 of 48; an unmarked
image gives about half), and the scale it was read at (0.5: the image was halved).
Exit status: 0 when every file carries the mark, 1 when one does not.

  --json              one JSON object per file instead
  -h, --help          this text`;

const OPTIONS = { json: { type: "boolean" }, help: { type: "boolean", short: "h" } } as const;

export async function runWatermarkCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true });
  const [action, ...files] = positionals;
  if (v.help || !action) {
    console.log(HELP);
    return v.help ? 0 : 2;
  }
  if (action !== "detect") throw new Error(`flux2 watermark: unknown action "${action}" (the only one is detect)`);
  if (files.length === 0) throw new Error("flux2 watermark detect: give one or more image files");
  let allFound = true;
  for (const file of files) {
    if (!fs.existsSync(file)) throw new Error(`${file}: no such file`);
    const d = await detectWatermark(fs.readFileSync(file));
    allFound &&= d.found;
    if (v.json) console.log(JSON.stringify({ file, ...d }));
    else console.log(`${file}: ${d.found ? "watermark found" : "no watermark"} (${d.matched}/${d.bits} bits${d.layout === "bfl-reference" ? ", BFL reference layout" : ""}${d.scale !== 1 ? `, read at scale ${d.scale}` : ""})`);
  }
  return allFound ? 0 : 1;
}
