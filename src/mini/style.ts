// The LoRA style set of flux2-mini: emoji redrawn in a four-colour palette (a posterised,
// flat look no training image has), for the "a LoRA learns a new style" demo and its measure.

import { WHITE, deltaE, hexLab, parseHex, rgbToLab, type Lab } from "./colour.js";
import { emojiPrompt, listEmoji, type EmojiEntry } from "./emoji.js";

/** Dark to light; a pixel takes the colour of its lightness band. */
export const STYLE_PALETTE = ["#264653", "#2A9D8F", "#E76F51", "#E9C46A"];
const BANDS = [38, 58, 72]; // L* upper bounds of the first three bands
/** Pixels this close to white count as background (kept white by the restyle, ignored by the measure). */
export const BACKGROUND_DE = 10;
/** The phrase that names the style in captions and prompts. */
export const STYLE_PHRASE = "in flat four-colour poster style";

const WHITE_LAB = hexLab(WHITE);
const PALETTE_LAB: Lab[] = STYLE_PALETTE.map(hexLab);
const PALETTE_RGB = STYLE_PALETTE.map(parseHex);

/** Redraw packed RGB in the palette: near-white stays white, every other pixel takes its lightness band's colour. */
export function restyle(rgb: Uint8Array): Uint8Array {
  const out = new Uint8Array(rgb.length);
  for (let i = 0; i < rgb.length; i += 3) {
    const lab = rgbToLab(rgb[i], rgb[i + 1], rgb[i + 2]);
    if (deltaE(lab, WHITE_LAB) < BACKGROUND_DE) {
      out[i] = out[i + 1] = out[i + 2] = 255;
      continue;
    }
    let band = BANDS.findIndex((b) => lab[0] < b);
    if (band < 0) band = BANDS.length;
    out.set(PALETTE_RGB[band], i);
  }
  return out;
}

/**
 * The style measure: the fraction of non-background pixels within ΔE 15 of a palette colour
 * (1 for the style images themselves; low for ordinary emoji, whose colours are varied; near 0 for noise).
 */
export function paletteFraction(rgb: Uint8Array): number {
  let fg = 0, hit = 0;
  for (let i = 0; i < rgb.length; i += 3) {
    const lab = rgbToLab(rgb[i], rgb[i + 1], rgb[i + 2]);
    if (deltaE(lab, WHITE_LAB) < BACKGROUND_DE) continue;
    fg++;
    if (PALETTE_LAB.some((p) => deltaE(lab, p) <= 15)) hit++;
  }
  return fg === 0 ? 0 : hit / fg;
}

/** The 25 training emoji of the style set and 10 other emoji the eval prompts in the style (fixed picks, spread over the list). */
export function styleSplit(): { train: EmojiEntry[]; eval: EmojiEntry[] } {
  const all = listEmoji().filter((e) => e.group === "animals-nature" || e.group === "food-drink");
  const step = Math.floor(all.length / 35);
  const picks = Array.from({ length: 35 }, (_, k) => all[k * step]);
  const held = (k: number) => k % 7 === 3 || k % 7 === 6;
  return { train: picks.filter((_, k) => !held(k)), eval: picks.filter((_, k) => held(k)) };
}

export function styleCaption(e: EmojiEntry): string {
  return `${emojiPrompt(e)}, ${STYLE_PHRASE}`;
}
