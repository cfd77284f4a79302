// The picture measures of `flux2 eval`, on packed 8-bit RGB images (W×H×3):
//
//  - hexAdherence: the background is white and the shape's mean colour is within ΔE 15
//    (CIE76, CIELAB D65) of the prompted hex code;
//  - layoutAdherence: the largest shape is the named shape, at the named position;
//  - emoji retrieval: thumbnail features and top-k nearest neighbours (retrieval.ts);
//  - the style measure: paletteFraction in src/mini/style.ts.
//
// How a shape is found: the background colour is the mean of the 2-pixel border; foreground is
// every pixel more than ΔE 20 from it and nearer the shape's colour than the background's (see
// findShape); the shape is the largest 4-connected foreground region. Its colour is the mean over
// its interior (region pixels whose four neighbours are in the region), so anti-aliased edges do
// not pull the mean towards the background.

import { WHITE, deltaE, hexLab, hueChroma, rgbToLab, type Lab } from "../mini/colour.js";
import { POSITIONS, POSITION_CENTRE, type Position } from "../mini/scenes.js";
import { SHAPES, shapeMaskInBox, type ShapeKind } from "../mini/shapes.js";

export const HEX_TOLERANCE = 15;
const FOREGROUND_DE = 20;
/** A region smaller than this fraction of the image is not a shape. */
const MIN_AREA = 0.01;

export interface Img {
  rgb: Uint8Array;
  width: number;
  height: number;
}

export interface ShapeFinding {
  background: Lab;
  /** The border is white: its mean within ΔE 15 of white and 90% of border pixels within ΔE 15. */
  whiteBackground: boolean;
  /** The largest foreground region (null when there is none of at least 1% of the image). */
  region: Uint8Array | null;
  area: number;
  box: [number, number, number, number];
  centroid: [number, number];
  meanColour: Lab | null;
}

function labImage(img: Img): Float64Array {
  const n = img.width * img.height;
  const lab = new Float64Array(n * 3);
  for (let i = 0; i < n; i++) lab.set(rgbToLab(img.rgb[i * 3], img.rgb[i * 3 + 1], img.rgb[i * 3 + 2]), i * 3);
  return lab;
}

const at = (lab: Float64Array, i: number): Lab => [lab[i * 3], lab[i * 3 + 1], lab[i * 3 + 2]];

export function findShape(img: Img): ShapeFinding {
  const { width: W, height: H } = img;
  if (img.rgb.length !== W * H * 3) throw new Error(`image data is ${img.rgb.length} bytes, expected ${W}×${H}×3`);
  const lab = labImage(img);
  const border: number[] = [];
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) if (x < 2 || y < 2 || x >= W - 2 || y >= H - 2) border.push(y * W + x);
  const bg: Lab = [0, 0, 0];
  for (const i of border) for (let k = 0; k < 3; k++) bg[k] += lab[i * 3 + k] / border.length;
  const white = hexLab(WHITE);
  const nearWhite = border.filter((i) => deltaE(at(lab, i), white) <= HEX_TOLERANCE).length / border.length;
  const whiteBackground = deltaE(bg, white) <= HEX_TOLERANCE && nearWhite >= 0.9;

  // Pass 1: everything clearly off the background. Pass 2: with the shape's colour estimated from
  // the most distinct half of that region, a pixel belongs to the shape when it is nearer the shape's
  // colour than the background's — the 50% coverage line, so soft or blurred edges neither grow the
  // shape (filling a ring's hole, a star's notches) nor shrink it.
  const fg = new Uint8Array(W * H);
  const dBg = new Float64Array(W * H);
  for (let i = 0; i < W * H; i++) {
    dBg[i] = deltaE(at(lab, i), bg);
    fg[i] = dBg[i] > FOREGROUND_DE ? 1 : 0;
  }
  const rough = largestRegion(fg, W, H);
  const core = rough ? colourOfMostDistinct(lab, dBg, rough) : null;
  if (core) for (let i = 0; i < W * H; i++) fg[i] = fg[i] && deltaE(at(lab, i), core) < dBg[i] ? 1 : 0;
  const region = core ? largestRegion(fg, W, H) : null;
  const none: ShapeFinding = { background: bg, whiteBackground, region: null, area: 0, box: [0, 0, 0, 0], centroid: [0, 0], meanColour: null };
  if (!region) return none;
  let area = 0, sx = 0, sy = 0, x0 = W, y0 = H, x1 = 0, y1 = 0;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      if (!region[y * W + x]) continue;
      area++; sx += x + 0.5; sy += y + 0.5;
      x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + 1); y1 = Math.max(y1, y + 1);
    }
  }
  if (area < MIN_AREA * W * H) return none;
  const mean: Lab = [0, 0, 0];
  let n = 0;
  const inside = (x: number, y: number) => x >= 0 && y >= 0 && x < W && y < H && region[y * W + x] === 1;
  for (const interiorOnly of [true, false]) {
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        if (!inside(x, y)) continue;
        if (interiorOnly && !(inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1))) continue;
        const i = y * W + x;
        for (let k = 0; k < 3; k++) mean[k] += lab[i * 3 + k];
        n++;
      }
    }
    if (n > 0) break; // a region too thin to have an interior uses all its pixels
  }
  return {
    background: bg, whiteBackground, region, area, box: [x0, y0, x1, y1], centroid: [sx / area, sy / area],
    meanColour: [mean[0] / n, mean[1] / n, mean[2] / n],
  };
}

/** Mean colour of the region's pixels at or above the median distance from the background. */
function colourOfMostDistinct(lab: Float64Array, dBg: Float64Array, region: Uint8Array): Lab {
  const idx: number[] = [];
  for (let i = 0; i < region.length; i++) if (region[i]) idx.push(i);
  const sorted = idx.map((i) => dBg[i]).sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  const m: Lab = [0, 0, 0];
  let n = 0;
  for (const i of idx) {
    if (dBg[i] < median) continue;
    for (let k = 0; k < 3; k++) m[k] += lab[i * 3 + k];
    n++;
  }
  return [m[0] / n, m[1] / n, m[2] / n];
}

/** The largest 4-connected region of a binary mask (null when the mask is empty). */
function largestRegion(mask: Uint8Array, W: number, H: number): Uint8Array | null {
  const label = new Int32Array(W * H).fill(-1);
  let best = -1, bestSize = 0, next = 0;
  const stack: number[] = [];
  for (let s = 0; s < W * H; s++) {
    if (!mask[s] || label[s] >= 0) continue;
    let size = 0;
    label[s] = next;
    stack.push(s);
    while (stack.length) {
      const i = stack.pop()!;
      size++;
      const x = i % W, y = (i - x) / W;
      for (const j of [x > 0 ? i - 1 : -1, x < W - 1 ? i + 1 : -1, y > 0 ? i - W : -1, y < H - 1 ? i + W : -1]) {
        if (j >= 0 && mask[j] && label[j] < 0) {
          label[j] = next;
          stack.push(j);
        }
      }
    }
    if (size > bestSize) {
      best = next;
      bestSize = size;
    }
    next++;
  }
  if (best < 0) return null;
  const out = new Uint8Array(W * H);
  for (let i = 0; i < W * H; i++) out[i] = label[i] === best ? 1 : 0;
  return out;
}

export interface HexResult {
  pass: boolean;
  deltaE: number | null;
  whiteBackground: boolean;
  /** Which shape was drawn (the layout measure's classifier; not part of the pass). */
  shape: ShapeKind | null;
}

/** Hex-colour adherence of one image: white background and shape mean colour within ΔE 15 of `hex`. */
export function hexAdherence(img: Img, hex: string): HexResult {
  const f = findShape(img);
  const d = f.meanColour ? deltaE(f.meanColour, hexLab(hex)) : null;
  const shape = f.region ? classifyShape(f.region, img.width, img.height, f.box).shape : null;
  return { pass: f.whiteBackground && d !== null && d <= HEX_TOLERANCE, deltaE: d, whiteBackground: f.whiteBackground, shape };
}

/**
 * Which shape a region is: the template (drawn with the data set's own shape tests, stretched to the
 * region's bounding box) with the highest intersection over union.
 */
export function classifyShape(region: Uint8Array, W: number, H: number, box: [number, number, number, number]): { shape: ShapeKind; iou: number } {
  let best: { shape: ShapeKind; iou: number } = { shape: SHAPES[0], iou: -1 };
  for (const shape of SHAPES) {
    const t = shapeMaskInBox(shape, W, H, box);
    let inter = 0, union = 0;
    for (let i = 0; i < W * H; i++) {
      inter += region[i] & t[i];
      union += region[i] | t[i];
    }
    const iou = union ? inter / union : 0;
    if (iou > best.iou) best = { shape, iou };
  }
  return best;
}

/** The named position whose centre is nearest to a point (fractions of the image side). */
export function nearestPosition(fx: number, fy: number): Position {
  let best: Position = "centre", d = Infinity;
  for (const p of POSITIONS) {
    const [cx, cy] = POSITION_CENTRE[p];
    const e = Math.hypot(fx - cx, fy - cy);
    if (e < d) {
      d = e;
      best = p;
    }
  }
  return best;
}

export interface LayoutResult {
  pass: boolean;
  shape: ShapeKind | null;
  position: Position | null;
}

/** Layout adherence of one image: the largest shape is `shape`, nearest to the named `position`, on white. */
export function layoutAdherence(img: Img, shape: ShapeKind, position: Position): LayoutResult {
  const f = findShape(img);
  if (!f.region) return { pass: false, shape: null, position: null };
  const got = classifyShape(f.region, img.width, img.height, f.box).shape;
  const where = nearestPosition(f.centroid[0] / img.width, f.centroid[1] / img.height);
  return { pass: f.whiteBackground && got === shape && where === position, shape: got, position: where };
}

/** Leaf green in CIELAB: hue 100–160° (the Noto apple's leaf is at about 130°), chroma at least 20. */
const LEAF_HUE: [number, number] = [100, 160];
const LEAF_MIN_CHROMA = 20;

/**
 * The share of the picture's top third that is leaf green. The apple emoji's training picture has its
 * stem and leaf there (14% of the top third at 64²); a red blob, what flux2-mini drew for
 * `a red apple` up to version 7, has none. Used by the README apple test (test/flux2_mini.test.ts)
 * beside the eval's retrieval rank, which a red blob can also win.
 */
export function leafShare(img: Img): number {
  const rows = Math.floor(img.height / 3);
  let leaf = 0;
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < img.width; x++) {
      const i = 3 * (y * img.width + x);
      const { hue, chroma } = hueChroma(rgbToLab(img.rgb[i], img.rgb[i + 1], img.rgb[i + 2]));
      if (chroma >= LEAF_MIN_CHROMA && hue >= LEAF_HUE[0] && hue <= LEAF_HUE[1]) leaf++;
    }
  }
  return leaf / (rows * img.width);
}
