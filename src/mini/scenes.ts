// The generated scene set of flux2-mini: one to three shapes, colours as names or hex codes,
// sizes, positions, plain or coloured backgrounds; captions in plain and JSON-structured form.
//
// Every scene is a pure function of (seed, index), so the set is the same on every machine and
// a scene does not depend on how many others are built. What the eval holds out (hex colours,
// shape-at-position combinations) never appears in a training caption.

import { Xoshiro128 } from "../util/random.js";
import {
  HELD_OUT_HEX, HELD_OUT_MARGIN, HEX_LETTER_RUN_TOKENS, MIN_CONTRAST, NAMED_COLOURS, WHITE, deltaE, distanceToHeldOut, hexLab, parseHex, rgbToLab, toHex,
} from "./colour.js";
import { SHAPES, renderScene, type PlacedShape, type ShapeKind } from "./shapes.js";

export const POSITIONS = ["left", "right", "top", "bottom", "centre"] as const;
export type Position = (typeof POSITIONS)[number];

export const POSITION_PHRASE: Record<Position, string> = {
  left: "on the left", right: "on the right", top: "at the top", bottom: "at the bottom", centre: "in the centre",
};

/** Centre of each named position, as a fraction of the image side. */
export const POSITION_CENTRE: Record<Position, [number, number]> = {
  left: [0.27, 0.5], right: [0.73, 0.5], top: [0.5, 0.27], bottom: [0.5, 0.73], centre: [0.5, 0.5],
};

export const SIZES = { small: 0.12, medium: 0.17, large: 0.22 } as const;
export type SizeName = keyof typeof SIZES;

/** Shape-at-position combinations no training scene contains (the layout eval asks for them). */
export const HELD_OUT_LAYOUTS: { shape: ShapeKind; position: Position }[] = [
  { shape: "triangle", position: "left" }, { shape: "star", position: "top" }, { shape: "ring", position: "right" },
  { shape: "square", position: "bottom" }, { shape: "circle", position: "bottom" }, { shape: "ring", position: "centre" },
];

/** The shapes of the exact caption form `a #RRGGBB circle on a white background`. */
export const HEX_FORM_SHAPES: ShapeKind[] = ["circle", "square", "triangle"];

export interface Colour {
  hex: string;
  /** How the caption names it: a colour word, or the hex code itself. */
  word: string;
}

export interface Subject {
  shape: ShapeKind;
  colour: Colour;
  position: Position;
  size: SizeName;
  /** Whether the plain caption says the size. */
  saySize: boolean;
}

export type SceneKind = "hex" | "single" | "pair" | "row";

/**
 * How often each kind of scene is drawn, as relative weights (hex, single, pair, row). The
 * default is what versions 1–5 trained on. Thresholds are integer partial sums over the integer
 * total, so 30/25/25/20 gives exactly the literals 0.3, 0.55 and 0.8 the sampler always used.
 */
export type SceneMix = Record<SceneKind, number>;
export const DEFAULT_SCENE_MIX: SceneMix = { hex: 30, single: 25, pair: 25, row: 20 };
const SCENE_KINDS: SceneKind[] = ["hex", "single", "pair", "row"];

/** Parse `--scene-mix HEX,SINGLE,PAIR,ROW` (non-negative integers, not all zero). */
export function parseSceneMix(text: string): SceneMix {
  const parts = text.split(",").map((t) => t.trim());
  const ok = parts.length === 4 && parts.every((t) => /^\d+$/.test(t)) && parts.some((t) => Number(t) > 0);
  if (!ok) throw new Error(`--scene-mix must be four non-negative integer weights HEX,SINGLE,PAIR,ROW (not all 0), e.g. 30,25,25,20 (the default); got "${text}"`);
  return Object.fromEntries(SCENE_KINDS.map((k, i) => [k, Number(parts[i])])) as SceneMix;
}

export function isDefaultSceneMix(mix: SceneMix): boolean {
  return SCENE_KINDS.every((k) => mix[k] === DEFAULT_SCENE_MIX[k]);
}

function pickKind(u: number, mix: SceneMix): SceneKind {
  const total = SCENE_KINDS.reduce((t, k) => t + mix[k], 0);
  let sum = 0;
  for (const k of SCENE_KINDS.slice(0, -1)) {
    sum += mix[k];
    if (u < sum / total) return k;
  }
  return "row";
}

export interface Scene {
  kind: SceneKind;
  subjects: Subject[];
  background: Colour;
  /** For pairs: the relation word ("above", "below", "to the left of", "to the right of"). */
  relation: string | null;
  json: boolean;
  caption: string;
}

const isHeldOutLayout = (shape: ShapeKind, position: Position) =>
  HELD_OUT_LAYOUTS.some((h) => h.shape === shape && h.position === position);

class Picker {
  constructor(readonly rng: Xoshiro128, readonly hexCodes: HexCodes = "uniform", readonly hexTokenShare = DEFAULT_HEX_TOKEN_SHARE) {}
  unit(): number { return this.rng.nextDouble(); }
  int(n: number): number { return Math.floor(this.rng.nextDouble() * n); }
  pick<T>(xs: ArrayLike<T>): T { return xs[this.int(xs.length)]; }
  chance(p: number): boolean { return this.rng.nextDouble() < p; }
}

/**
 * How training hex codes are drawn. "uniform" (what versions 1–6 trained on): uniformly random
 * RGB. "token-runs": a share of them (hexTokenShare, default half) built around one of the
 * tokenizer's 105 letter-run tokens (HEX_LETTER_RUN_TOKENS), drawn with equal chance, so that every
 * token is seen often; the rest uniform.
 */
export type HexCodes = "uniform" | "token-runs";
export const HEX_CODES: HexCodes[] = ["uniform", "token-runs"];
/**
 * Session 23's token-run share. A smaller one keeps more of the uniform codes that cover the whole
 * colour space (letter-run codes lean to bright channels: A–F are the top 6 of each digit's 16 values).
 */
export const DEFAULT_HEX_TOKEN_SHARE = 0.5;

/** Refuses a token-run share outside (0, 1], or one given without token-run codes, which would ignore it. */
export function checkHexTokenShare(hexCodes: HexCodes, share: number | undefined): void {
  if (share === undefined) return;
  if (hexCodes !== "token-runs") throw new Error(`--hex-token-share only applies to --hex-codes token-runs (got --hex-codes ${hexCodes}): add --hex-codes token-runs or leave the share out`);
  if (!(share > 0 && share <= 1)) throw new Error(`--hex-token-share must be a number above 0 and at most 1 (the share of hex codes built around a letter-run token), got ${share}`);
}

const HEX_DIGITS = "0123456789ABCDEF";
const DECIMAL_DIGITS = "0123456789";

/**
 * A code that holds `run` (a letter-run token, drawn uniformly) as a whole run at a random place:
 * a decimal digit on each side of it, so that the tokenizer reads the run as that one token; the
 * other characters are random hex digits.
 */
function tokenRunRgb(p: Picker): [number, number, number] {
  const run = p.pick(HEX_LETTER_RUN_TOKENS);
  const start = p.int(7 - run.length);
  let code = "";
  for (let i = 0; i < 6; i++) {
    if (i >= start && i < start + run.length) code += run[i - start];
    else if (i === start - 1 || i === start + run.length) code += p.pick(DECIMAL_DIGITS);
    else code += p.pick(HEX_DIGITS);
  }
  return [0, 2, 4].map((k) => parseInt(code.slice(k, k + 2), 16)) as [number, number, number];
}

/** A random training hex colour: not within HELD_OUT_MARGIN of a held-out colour, contrasting with `against`. */
function trainingHex(p: Picker, against: string[]): string {
  for (;;) {
    const rgb: [number, number, number] = p.hexCodes === "token-runs" && p.chance(p.hexTokenShare) ? tokenRunRgb(p) : [p.int(256), p.int(256), p.int(256)];
    const lab = rgbToLab(...rgb);
    if (distanceToHeldOut(lab) < HELD_OUT_MARGIN) continue;
    if (against.some((a) => deltaE(lab, hexLab(a)) < MIN_CONTRAST)) continue;
    return toHex(rgb);
  }
}

/** A shape colour, named or hex, contrasting with the background and already used colours. */
function shapeColour(p: Picker, against: string[]): Colour {
  if (p.chance(0.5)) {
    const ok = NAMED_COLOURS.filter((c) => c.name !== "white" && against.every((a) => deltaE(hexLab(c.hex), hexLab(a)) >= MIN_CONTRAST));
    if (ok.length) {
      const c = p.pick(ok);
      return { hex: c.hex, word: c.name };
    }
  }
  const hex = trainingHex(p, against);
  return { hex, word: hex };
}

function background(p: Picker): Colour {
  const u = p.unit();
  if (u < 0.6) return { hex: WHITE, word: "white" };
  if (u < 0.8) {
    const c = p.pick(NAMED_COLOURS);
    return { hex: c.hex, word: c.name };
  }
  const hex = trainingHex(p, []);
  return { hex, word: hex };
}

const article = (word: string) => (/^[aeiou]/i.test(word) ? "an" : "a");

/** "a small red star", "an orange circle", "a #2D5A8E ring". */
function nounPhrase(s: Subject, withSize: boolean): string {
  const words = [...(withSize ? [s.size] : []), s.colour.word, s.shape];
  return `${article(words[0])} ${words.join(" ")}`;
}

function plainCaption(scene: Omit<Scene, "caption" | "json">): string {
  const bg = `on ${article(scene.background.word)} ${scene.background.word} background`;
  const [a, b, c] = scene.subjects;
  switch (scene.kind) {
    case "hex":
      return `${nounPhrase(a, false)} ${bg}`;
    case "single":
      return `${nounPhrase(a, a.saySize)} ${POSITION_PHRASE[a.position]}, ${bg}`;
    case "pair":
      return `${nounPhrase(a, a.saySize)} ${scene.relation} ${nounPhrase(b, b.saySize)}, ${bg}`;
    case "row": {
      const dir = a.position === "left" ? "in a row from left to right" : "in a column from top to bottom";
      return `${nounPhrase(a, false)}, ${nounPhrase(b, false)} and ${nounPhrase(c, false)} ${dir}, ${bg}`;
    }
  }
}

/** The JSON-structured caption (FLUX.2's structured prompt style): scene, subjects, background, palette. */
function jsonCaption(scene: Omit<Scene, "caption" | "json">, plain: string): string {
  const palette: string[] = [];
  for (const h of [...scene.subjects.map((s) => s.colour.hex), scene.background.hex]) if (!palette.includes(h)) palette.push(h);
  return JSON.stringify({
    scene: plain.replace(/, on (a|an) \S+ background$/, "").replace(/ on (a|an) \S+ background$/, ""),
    subjects: scene.subjects.map((s) => ({ type: s.shape, color: s.colour.word, position: s.position, size: s.size })),
    background: scene.background.word,
    palette,
  });
}

/** Scene `index` of the set built with `seed`. */
export function sampleScene(seed: number, index: number, mix: SceneMix = DEFAULT_SCENE_MIX, hexCodes: HexCodes = "uniform", hexTokenShare = DEFAULT_HEX_TOKEN_SHARE): Scene {
  const p = new Picker(new Xoshiro128((BigInt(seed) << 32n) | BigInt(index)), hexCodes, hexTokenShare);
  for (;;) {
    const s = trySample(p, mix);
    if (s) return s;
  }
}

function trySample(p: Picker, mix: SceneMix): Scene | null {
  const kind = pickKind(p.unit(), mix);
  let bg: Colour = { hex: WHITE, word: "white" };
  let relation: string | null = null;
  const subjects: Subject[] = [];
  const add = (shape: ShapeKind, position: Position, size: SizeName, saySize: boolean) => {
    const colour = shapeColour(p, [bg.hex, ...subjects.map((s) => s.colour.hex)]);
    subjects.push({ shape, colour, position, size, saySize });
  };
  if (kind === "hex") {
    // The exact form: a hex-coloured circle, square or triangle, centred, on white.
    const hex = trainingHex(p, [WHITE]);
    subjects.push({ shape: p.pick(HEX_FORM_SHAPES), colour: { hex, word: hex }, position: "centre", size: "large", saySize: false });
  } else {
    bg = background(p);
    if (kind === "single") {
      add(p.pick(SHAPES), p.pick(POSITIONS), p.pick(Object.keys(SIZES) as SizeName[]), p.chance(0.5));
    } else if (kind === "pair") {
      const vertical = p.chance(0.5);
      const first: Position = vertical ? (p.chance(0.5) ? "top" : "bottom") : (p.chance(0.5) ? "left" : "right");
      const second: Position = ({ top: "bottom", bottom: "top", left: "right", right: "left" } as const)[first as "top"];
      relation = { top: "above", bottom: "below", left: "to the left of", right: "to the right of" }[first as "top"];
      add(p.pick(SHAPES), first, p.pick(["small", "medium"] as SizeName[]), p.chance(0.3));
      add(p.pick(SHAPES), second, p.pick(["small", "medium"] as SizeName[]), p.chance(0.3));
    } else {
      const row: Position[] = p.chance(0.5) ? ["left", "centre", "right"] : ["top", "centre", "bottom"];
      for (const pos of row) add(p.pick(SHAPES), pos, "small", false);
    }
  }
  if (subjects.some((s) => isHeldOutLayout(s.shape, s.position))) return null;
  const base = { kind, subjects, background: bg, relation };
  const plain = plainCaption(base);
  // JSON captions for one or two shapes (three-shape JSON with hex codes runs past the 128 text tokens the mini uses).
  const json = (kind === "single" || kind === "pair") && p.chance(0.4);
  return { ...base, json, caption: json ? jsonCaption(base, plain) : plain };
}

/**
 * Where shapes go. "jitter" (what versions 1–5 trained on): the named position's centre plus a
 * small random offset. "grid": exactly a quarter, half or three quarters of the side, no offset,
 * so every centre lies on a boundary between the transformer's image tokens (16 pixels apart at
 * 64 px: 4× VAE downsampling, then 2×2 patches). A shape then makes the same tokens wherever it
 * stands, only moved, and what the model learns drawing it in one place holds in the others.
 */
export type Placement = "jitter" | "grid";
export const PLACEMENTS: Placement[] = ["jitter", "grid"];

export const GRID_CENTRE: Record<Position, [number, number]> = {
  left: [0.25, 0.5], right: [0.75, 0.5], top: [0.5, 0.25], bottom: [0.5, 0.75], centre: [0.5, 0.5],
};

/** Pixel placement of a scene's subjects on a `size`-pixel canvas. */
export function placeScene(scene: Scene, size: number, seed: number, index: number, placement: Placement = "jitter"): PlacedShape[] {
  const p = new Picker(new Xoshiro128((BigInt(seed) << 32n) | BigInt(index) | (1n << 63n)));
  return scene.subjects.map((s) => {
    const [fx, fy] = (placement === "grid" ? GRID_CENTRE : POSITION_CENTRE)[s.position];
    const j = () => (placement === "grid" ? 0 : (p.unit() - 0.5) * 0.06 * size);
    return { kind: s.shape, cx: fx * size + j(), cy: fy * size + j(), r: SIZES[s.size] * size, colour: parseHex(s.colour.hex) };
  });
}

/** Scene `index` drawn at `size`×`size`: packed RGB. */
export function drawScene(scene: Scene, size: number, seed: number, index: number, placement: Placement = "jitter"): Uint8Array {
  return renderScene(size, parseHex(scene.background.hex), placeScene(scene, size, seed, index, placement));
}

/** A prompt of the exact hex form, for the eval. */
export function hexPrompt(hex: string, shape: ShapeKind): string {
  return `${article(hex)} ${hex} ${shape} on a white background`;
}

/** A prompt of the single-shape layout form on white, for the eval. */
export function layoutPrompt(colourName: string, shape: ShapeKind, position: Position): string {
  return `${article(colourName)} ${colourName} ${shape} ${POSITION_PHRASE[position]}, on a white background`;
}

/** Colours of the eval's layout prompts: named colours that contrast with white. */
export const LAYOUT_COLOURS = NAMED_COLOURS.filter((c) => deltaE(hexLab(c.hex), hexLab(WHITE)) >= MIN_CONTRAST).map((c) => c.name);

export { HELD_OUT_HEX };
