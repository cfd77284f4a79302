// Regenerates testdata/resize/lanczos.json: expected outputs of Pillow's own
// LANCZOS resampler (src/libImaging/Resample.c, compiled unmodified against the
// stub Imaging.h here; harness.c adds Image.resize's Python-level rules), and
// Python's int(w*sqrt(cap/(w*h))) for the pixel-cap sizes.
//
//   node testdata/resize/gen/make-fixtures.mjs /path/to/Pillow/src/libImaging/Resample.c
//
// Needs gcc and python3 (no PIL). The input patterns must stay identical to
// `pattern()` in test/reference.test.ts (the fixture stores input hashes to catch drift).
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const resampleC = process.argv[2];
if (!resampleC || !fs.existsSync(resampleC)) throw new Error("usage: make-fixtures.mjs <Pillow Resample.c>");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pil-oracle-"));
for (const f of ["Imaging.h", "harness.c"]) fs.copyFileSync(path.join(here, f), path.join(tmp, f));
fs.copyFileSync(resampleC, path.join(tmp, "Resample.c"));
const oracle = path.join(tmp, "oracle");
execFileSync("gcc", ["-O2", "-o", oracle, path.join(tmp, "harness.c"), path.join(tmp, "Resample.c"), "-lm"], { stdio: "inherit" });

export function pattern(kind, w, h, ch, seed) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s;
  };
  const out = new Uint8Array(w * h * ch);
  let i = 0;
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let c = 0; c < ch; c++, i++) {
        if (kind === "noise") out[i] = next() & 255;
        else {
          const g = Math.floor((x * 255) / Math.max(1, w - 1) + (y * 97) / Math.max(1, h - 1)) + c * 50;
          out[i] = (g + ((((x >> 3) + (y >> 3)) & 1) ? 90 : 0) + (next() & 15)) & 255;
        }
      }
  return out;
}

const sha = (b) => createHash("sha256").update(b).digest("hex");
// [name, kind, w, h, channels, newW, newH, seed, store full bytes?]
const CASES = [
  ["rgb_noise_down", "noise", 37, 23, 3, 16, 11, 1, true],
  ["rgb_edges_up", "edges", 20, 15, 3, 47, 33, 2, true],
  ["l_noise_vertical_only", "noise", 50, 40, 1, 50, 17, 3, true],
  ["l_edges_horizontal_only", "edges", 31, 29, 1, 12, 29, 4, true],
  ["rgb_tall_vertical_first", "edges", 3, 400, 3, 2, 37, 5, true],
  ["rgb_noise_mixed", "noise", 64, 48, 3, 41, 80, 6, true],
  ["rgb_1x1_up", "noise", 1, 1, 3, 5, 3, 7, true],
  ["rgb_to_1x1", "edges", 9, 7, 3, 1, 1, 8, true],
  ["rgb_near_identity", "noise", 97, 61, 3, 96, 60, 9, true],
  ["l_strong_down", "edges", 300, 20, 1, 7, 3, 10, true],
  ["rgb_cap_2000x1500", "edges", 2000, 1500, 3, 1182, 886, 11, false],
  ["rgb_cap_1536_square", "noise", 1536, 1536, 3, 1024, 1024, 12, false],
  ["rgb_cap_4096x2304", "edges", 4096, 2304, 3, 1365, 768, 13, false],
  ["l_wide_3000x200", "noise", 3000, 200, 1, 1254, 83, 14, false],
];
const cases = [];
for (const [name, kind, w, h, ch, nw, nh, seed, full] of CASES) {
  const src = pattern(kind, w, h, ch, seed);
  const input = Buffer.concat([Buffer.from(`${w} ${h} ${ch} ${nw} ${nh}\n`), Buffer.from(src)]);
  const out = execFileSync(oracle, { input, maxBuffer: 1 << 28 });
  if (out.length !== nw * nh * ch) throw new Error(`${name}: oracle wrote ${out.length} bytes`);
  cases.push({ name, kind, w, h, channels: ch, newW: nw, newH: nh, seed, inputSha256: sha(src), outputSha256: sha(out), ...(full ? { output: out.toString("base64") } : {}) });
}

const SIZES = [[2000, 1500], [4096, 2304], [1025, 1024], [1024, 1025], [3000, 3000], [1920, 1080], [1080, 1920], [6000, 2000], [8000, 1000], [1023, 1026], [4000, 3000], [2048, 2048], [2049, 2049], [5000, 4999], [4100, 4100], [2025, 2024]];
const CAPS = [1024 * 1024, 2024 * 2024];
const py = `import math,json,sys
out=[]
for w,h in ${JSON.stringify(SIZES)}:
  for k in ${JSON.stringify(CAPS)}:
    if w*h<=k: out.append([w,h,k,w,h]); continue
    s=math.sqrt(k/(w*h)); out.append([w,h,k,int(w*s),int(h*s)])
print(json.dumps(out))`;
const capped = JSON.parse(execFileSync("python3", ["-c", py]).toString());

const doc = {
  about: "Pillow LANCZOS resize oracle outputs (see gen/make-fixtures.mjs); capped = [w, h, cap, int(w*s), int(h*s)] from Python",
  pillowResample: sha(fs.readFileSync(resampleC)),
  cases,
  capped,
};
fs.writeFileSync(path.join(here, "..", "lanczos.json"), JSON.stringify(doc, null, 1) + "\n");
fs.rmSync(tmp, { recursive: true });
console.log(`wrote ${cases.length} cases, ${capped.length} capped sizes`);
