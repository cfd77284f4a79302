// The form remembered across reloads (this browser's localStorage), and the size an edit of the
// first image produces.

import type { Expand } from "./components/References";
import type { LoraChoice } from "./components/LoraPicker";
import type { SeedMode } from "./components/SeedControls";
import type { SizeState } from "./components/SizeControls";
import type { Reference } from "./images";
import type { Structured } from "./prompt";
import { describeSize, MAX_SIDE, type SizeLimits } from "./size";

export interface SavedForm {
  promptMode: "text" | "json";
  text: string;
  structured: Structured;
  negative: string;
  sizeState: SizeState;
  seedMode: SeedMode;
  seedText: string;
  steps: number;
  guidance: number;
  batch: number;
  refs: Reference[];
  mask: string | null;
  strengthOn: boolean;
  strength: number;
  expand: Expand;
  loras: LoraChoice[];
}

const FORM_KEY = "flux2.studio.form";
const IMAGES_KEY = "flux2.studio.form-images";

/** The saved form; fields that are missing or of the wrong shape are left out (the defaults apply). */
export function loadForm(): Partial<SavedForm> {
  try {
    const form = JSON.parse(localStorage.getItem(FORM_KEY) ?? "{}") as Partial<SavedForm>;
    const images = JSON.parse(localStorage.getItem(IMAGES_KEY) ?? "{}") as Pick<Partial<SavedForm>, "refs" | "mask">;
    if (!form || typeof form !== "object") return {};
    if (form.structured && !Array.isArray(form.structured.subjects)) delete form.structured;
    return { ...form, ...(Array.isArray(images.refs) ? { refs: images.refs } : {}), ...(typeof images.mask === "string" ? { mask: images.mask } : {}) };
  } catch {
    return {};
  }
}

/** Save the form's fields (cheap: called on every change). */
export function saveForm(f: Omit<SavedForm, "refs" | "mask">): void {
  try { localStorage.setItem(FORM_KEY, JSON.stringify(f)); } catch { /* private mode or full */ }
}

/**
 * Save the reference images and the mask: data URLs that can pass the storage quota (about 5 MB),
 * so they are kept apart, written only when they change, and dropped (not the form) when they do not fit.
 */
export function saveFormImages(refs: Reference[], mask: string | null): void {
  try { localStorage.setItem(IMAGES_KEY, JSON.stringify({ refs, mask })); } catch {
    try { localStorage.removeItem(IMAGES_KEY); } catch { /* nothing to do */ }
  }
}

/**
 * The output size of an edit: the first image plus the expansion, each side rounded down to the
 * model's multiple, and scaled down (keeping the ratio) to the model's pixel cap, as the server's
 * inpainting preparation does.
 */
export function editedSize(first: Reference, expand: Expand, l: SizeLimits): { width: number; height: number; why: string; error?: string } {
  const [top, right, bottom, left] = expand;
  let w = first.width + left + right;
  let h = first.height + top + bottom;
  const grown = w !== first.width || h !== first.height;
  if (w * h > l.maxPixels) {
    const k = Math.sqrt(l.maxPixels / (w * h));
    w *= k; h *= k;
  }
  const m = l.multipleOf;
  const width = Math.floor(w / m) * m, height = Math.floor(h / m) * m;
  const why = `Editing the first image (${first.width}×${first.height}${grown ? ` + expansion` : ""}): the output is ${describeSize(width, height)}${width * height < Math.round(w) * Math.round(h) ? `, rounded down to multiples of ${m}${w * h < (first.width + left + right) * (first.height + top + bottom) ? " within the model's pixel cap" : ""}` : ""}.`;
  let error: string | undefined;
  if (width < l.minSide || height < l.minSide) error = `The edited image would be ${width}×${height}; each side must be at least ${l.minSide} px: use a larger first image or expand it.`;
  if (width > MAX_SIDE || height > MAX_SIDE) error = `The edited image would be ${width}×${height}; each side must be at most ${MAX_SIDE} px: expand less.`;
  return { width, height, why, error };
}
