// Colours for the flux2-mini data set and its evaluation: hex codes, colour names, sRGB → CIELAB
// and the CIE76 colour difference ΔE*ab (the Euclidean distance in L*a*b*, D65 white).
//
// The conversion itself lives in src/util/colour.ts (the trainer's thumbnails use it too); the
// data builder, the eval and the trainer all use exactly the same formulas.

import { deltaE, rgbToLab, type Lab } from "../util/colour.js";

export { deltaE, rgbToLab, type Lab };
export type Rgb = [number, number, number];

export function parseHex(hex: string): Rgb {
  const m = /^#([0-9a-fA-F]{6})$/.exec(hex);
  if (!m) throw new Error(`"${hex}" is not a #RRGGBB colour`);
  const v = parseInt(m[1], 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

export function toHex(c: Rgb): string {
  return "#" + c.map((v) => Math.round(v).toString(16).padStart(2, "0")).join("").toUpperCase();
}

export function hexLab(hex: string): Lab {
  return rgbToLab(...parseHex(hex));
}

/** CIELAB hue angle (degrees, 0–360) and chroma of a colour: what the README test and its probe read. */
export function hueChroma(lab: Lab): { hue: number; chroma: number } {
  return { hue: ((Math.atan2(lab[2], lab[1]) * 180) / Math.PI + 360) % 360, chroma: Math.hypot(lab[1], lab[2]) };
}

/** The angle between two hues in degrees (0–180), the short way round the circle. */
export function hueDifference(a: number, b: number): number {
  return Math.abs(((a - b + 540) % 360) - 180);
}

export const WHITE = "#FFFFFF";

/** Colour names used in captions, with the hex code drawn for each (CSS values where CSS has the name). */
export const NAMED_COLOURS: { name: string; hex: string }[] = [
  { name: "red", hex: "#FF0000" }, { name: "orange", hex: "#FFA500" }, { name: "yellow", hex: "#FFFF00" },
  { name: "green", hex: "#008000" }, { name: "lime", hex: "#32CD32" }, { name: "teal", hex: "#008080" },
  { name: "cyan", hex: "#00FFFF" }, { name: "blue", hex: "#0000FF" }, { name: "navy", hex: "#000080" },
  { name: "purple", hex: "#800080" }, { name: "violet", hex: "#EE82EE" }, { name: "magenta", hex: "#FF00FF" },
  { name: "pink", hex: "#FFC0CB" }, { name: "brown", hex: "#8B4513" }, { name: "maroon", hex: "#800000" },
  { name: "olive", hex: "#808000" }, { name: "gold", hex: "#FFD700" }, { name: "grey", hex: "#808080" },
  { name: "black", hex: "#000000" }, { name: "white", hex: "#FFFFFF" },
];

/**
 * The 105 runs of the letters A-F that the mini's tokenizer (Qwen3's, models/flux2-mini/tokenizer)
 * reads as one token, shortest first, then in alphabetical order. Qwen3 splits digits one by one,
 * so a hex code is read as its digits and the tokens of its letter runs: "#34ACE0" is
 * `# 3 4 ACE 0`. In uniformly random codes the long runs are rare (a given three-letter run is
 * a whole run in about 1 code in 2,000), so the text encoder sees some tokens a handful of times
 * and 12 of them never in 13,199 codes. test/mini_dataset.test.ts checks this list against the
 * tokenizer. Written out rather than derived at build time so that the data builder does not read
 * a model folder.
 */
export const HEX_LETTER_RUN_TOKENS: readonly string[] = [
  "A", "B", "C", "D", "E", "F", "AA", "AB", "AC", "AD", "AE", "AF", "BA", "BB", "BC", "BD", "BE", "BF", "CA", "CB",
  "CC", "CD", "CE", "CF", "DA", "DB", "DC", "DD", "DE", "DF", "EA", "EB", "EC", "ED", "EE", "EF", "FA", "FB", "FC",
  "FD", "FE", "FF", "AAA", "AAC", "AAD", "AAF", "ABA", "ABB", "ABC", "ACA", "ACC", "ACE", "ADA", "ADB", "ADC", "ADD",
  "ADE", "ADF", "AEA", "AFE", "AFF", "BAB", "BAD", "BBC", "BED", "CAA", "CAC", "CAD", "CAF", "CBC", "CBD", "CCA",
  "CCC", "CDC", "CDF", "CED", "CEE", "CEF", "DAC", "DBC", "DCF", "DDD", "DEC", "DED", "DEF", "EDA", "EEE", "EFF",
  "FDA", "FFE", "FFF", "AAAA", "ADED", "BBBB", "CADE", "CCCC", "CEED", "EEEE", "FACE", "FFFF", "ABCDE", "EEDED",
  "CCCCCC", "CEEDED", "FFFFFF",
];

/**
 * Hex colours that never appear in the training captions (nor any colour within ΔE 8 of one):
 * the eval asks for `a #RRGGBB circle on a white background` with these. All are at least ΔE 30
 * from white so that a shape of the colour is distinguishable from the background.
 */
export const HELD_OUT_HEX: string[] = [
  "#2D5A8E", "#C0392B", "#27AE60", "#8E44AD", "#F39C12", "#16A085", "#D35400", "#2C3E50",
  "#E84393", "#6C5CE7", "#00B894", "#E1B12C", "#E17055", "#0984E3", "#B33939", "#218C74",
  "#706FD3", "#CC8E35", "#40407A", "#FF5252", "#33D9B2", "#34ACE0", "#84817A", "#A29BFE",
];

/** Closest distance from a colour to the held-out set. */
export function distanceToHeldOut(lab: Lab): number {
  let best = Infinity;
  for (const h of HELD_OUT_LAB) best = Math.min(best, deltaE(lab, h));
  return best;
}

const HELD_OUT_LAB = HELD_OUT_HEX.map(hexLab);

/** Minimum ΔE between a training colour and any held-out colour. */
export const HELD_OUT_MARGIN = 8;
/** Minimum ΔE between a shape and its background (both in training and in the eval prompts). */
export const MIN_CONTRAST = 30;
