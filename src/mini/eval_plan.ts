// What `flux2 eval` asks a model for, derived from the data set's held-out lists (so the eval and
// the builder cannot drift apart). Written into every built set as eval.json.

import { HELD_OUT_HEX, NAMED_COLOURS, WHITE, parseHex } from "./colour.js";
import { HEX_FORM_SHAPES, HELD_OUT_LAYOUTS, LAYOUT_COLOURS, POSITION_CENTRE, SIZES, hexPrompt, layoutPrompt, type Position, type SizeName } from "./scenes.js";
import { renderScene, type ShapeKind } from "./shapes.js";
import { emojiPrompt, listEmoji } from "./emoji.js";
import { STYLE_PHRASE, styleSplit } from "./style.js";

export interface HexCase { prompt: string; hex: string; shape: ShapeKind }
export interface LayoutCase { prompt: string; colour: string; shape: ShapeKind; position: Position }
export interface EmojiCase { prompt: string; code: string }
export interface StyleCase { prompt: string; code: string }

export interface EvalPlan {
  hex: HexCase[];
  layout: LayoutCase[];
  emoji: EmojiCase[];
  style: StyleCase[];
}

/** Groups the emoji retrieval queries are drawn from (people variants and flags are too alike at 64 px to name one apart). */
const RETRIEVAL_GROUPS = new Set(["smileys-emotion", "animals-nature", "food-drink", "travel-places", "activities", "objects", "symbols"]);

export function evalPlan(): EvalPlan {
  // Every held-out colour with every shape of the exact form; the first 24 cases already hold each
  // colour once (so a --limit keeps every colour before it repeats one).
  const n = HELD_OUT_HEX.length, m = HEX_FORM_SHAPES.length;
  const hex: HexCase[] = Array.from({ length: n * m }, (_, k) => {
    const h = HELD_OUT_HEX[k % n], shape = HEX_FORM_SHAPES[(k + Math.floor(k / n)) % m];
    return { prompt: hexPrompt(h, shape), hex: h, shape };
  });
  // Each held-out layout in five colours, interleaved the same way.
  const colours = ["red", "blue", "green", "purple", "orange"].filter((c) => LAYOUT_COLOURS.includes(c));
  const layout: LayoutCase[] = [];
  for (const colour of colours) {
    for (const { shape, position } of HELD_OUT_LAYOUTS) layout.push({ prompt: layoutPrompt(colour, shape, position), colour, shape, position });
  }
  const pool = listEmoji().filter((e) => RETRIEVAL_GROUPS.has(e.group));
  const step = pool.length / 100;
  const emoji = Array.from({ length: 100 }, (_, k) => pool[Math.floor(k * step)]).map((e) => ({ prompt: emojiPrompt(e), code: e.code }));
  const style = styleSplit().eval.map((e) => ({ prompt: `${emojiPrompt(e)}, ${STYLE_PHRASE}`, code: e.code }));
  return { hex, layout, emoji, style };
}

/** The ideal answer to a hex case, drawn as the data set draws the exact form (centred, large). */
export function drawHexCase(c: HexCase, size: number): Uint8Array {
  return renderScene(size, parseHex(WHITE), [{ kind: c.shape, cx: size / 2, cy: size / 2, r: SIZES.large * size, colour: parseHex(c.hex) }]);
}

/** The ideal answer to a layout case at a given size, on white. */
export function drawLayoutCase(c: LayoutCase, size: number, shapeSize: SizeName = "medium"): Uint8Array {
  const hex = NAMED_COLOURS.find((n) => n.name === c.colour)!.hex;
  const [fx, fy] = POSITION_CENTRE[c.position];
  return renderScene(size, parseHex(WHITE), [{ kind: c.shape, cx: fx * size, cy: fy * size, r: SIZES[shapeSize] * size, colour: parseHex(hex) }]);
}
