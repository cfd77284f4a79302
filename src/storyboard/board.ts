// Storyboards: a creative brief, named references (characters, costumes,
// places, style) given once, and a shot list. Each shot becomes one panel,
// generated with the references it names as FLUX.2 multi-reference inputs and
// a fixed seed, so panels stay consistent and any one can be re-made alone.
//
// A board is given as JSON (StoryboardSpec below) or as plain text:
//
//   Title: The harbour job
//   Brief: Two thieves meet at dawn.
//   Style: muted film still, 35 mm
//   Size: 512x320                (optional; also Seed: N, Steps: N)
//   @Mara (character): refs/mara.png — a tall woman in a red coat
//   @Harbour (place): refs/harbour.jpg
//   1. Mara waits on the Harbour wall.
//   2. [seed 9] Close-up of Mara's hands.
//
// Shot lines are "N. text" or "- text"; a reference line is
// "@Name (kind): image — description" (kind and description optional). A
// reference is attached to the shots that name it (whole word, any case) or
// that list it in `references` (JSON); references of kind "style" go to
// every shot. Any other line is refused, naming it: nothing is ignored.

import { z } from "zod";
import { GUIDANCE_RANGE, STEPS_RANGE } from "../pipeline/variants.js";
import { imageField } from "../api/request.js";

export const REFERENCE_KINDS = ["character", "costume", "place", "prop", "style"] as const;

/** Shot ids become file names (frames/NN-id.png): keep them plain. */
const SHOT_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const REF_NAME = /^[\p{L}\p{N}][\p{L}\p{N} _'-]{0,63}$/u;

export const StoryboardReference = z.object({
  name: z.string().regex(REF_NAME, "a reference name is 1 to 64 letters, digits, spaces, _ ' or -, starting with a letter or digit"),
  kind: z.enum(REFERENCE_KINDS).default("character"),
  /** A file path (CLI), or base64 / data: URL / http(s) URL (API). */
  image: z.string().min(1),
  description: z.string().max(2000).optional(),
}).strict();

export const StoryboardShot = z.object({
  id: z.string().regex(SHOT_ID, "a shot id is 1 to 64 letters, digits, _ or -").optional(),
  prompt: z.string().min(1).max(10_000),
  /** Reference names to attach; default: those the prompt names (and every style reference). */
  references: z.array(z.string().min(1)).max(10).optional(),
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
}).strict();

export const StoryboardSpec = z.object({
  title: z.string().max(200).optional(),
  brief: z.string().max(20_000).optional(),
  /** Text added to every shot's prompt. */
  style: z.string().max(2000).optional(),
  references: z.array(StoryboardReference).max(16).default([]),
  shots: z.array(StoryboardShot).min(1, "a storyboard needs at least one shot").max(64),
  width: z.number().int().min(64).max(2048).optional(),
  height: z.number().int().min(64).max(2048).optional(),
  /** The seed of every panel unless a shot gives its own: one seed keeps the look of the panels alike. */
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
  steps: z.number().int().min(STEPS_RANGE.min).max(STEPS_RANGE.max).optional(),
  guidance: z.number().min(GUIDANCE_RANGE.min).max(GUIDANCE_RANGE.max).optional(),
}).strict();

export type StoryboardSpec = z.infer<typeof StoryboardSpec>;
export type StoryboardReference = z.infer<typeof StoryboardReference>;

export class StoryboardError extends Error {}

/** One panel to generate: its prompt with the reference notes, the references in input order, the seed. */
export interface ShotPlan {
  index: number;
  id: string;
  /** The shot's text as written. */
  text: string;
  /** What the model is given: the shot, which image is which reference, and the style. */
  prompt: string;
  /** Names of the references attached, in the order of the input images. */
  references: string[];
  seed: number;
}

/** Validate a parsed JSON board (zod), with messages naming the field. */
export function parseStoryboardJson(value: unknown): StoryboardSpec {
  const r = StoryboardSpec.safeParse(value);
  if (!r.success) {
    throw new StoryboardError(`invalid storyboard: ${r.error.issues.map((i) => `${i.path.join(".") || "(board)"}: ${i.message}`).join("; ")}`);
  }
  return r.data;
}

/** Parse a board from text (JSON if it starts with "{", else the line format above). */
export function parseStoryboard(text: string): StoryboardSpec {
  const t = text.trim();
  if (t.startsWith("{")) {
    let json: unknown;
    try {
      json = JSON.parse(t);
    } catch (e) {
      throw new StoryboardError(`the storyboard looks like JSON but does not parse: ${(e as Error).message}`);
    }
    return parseStoryboardJson(json);
  }
  const board: Record<string, unknown> = { references: [], shots: [] };
  const refs = board.references as Record<string, unknown>[];
  const shots = board.shots as Record<string, unknown>[];
  for (const [n, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const where = `line ${n + 1} ("${line.slice(0, 60)}")`;
    let m: RegExpExecArray | null;
    if ((m = /^(title|brief|style|size|seed|steps|guidance)\s*:\s*(.*)$/i.exec(line))) {
      const key = m[1].toLowerCase(), value = m[2].trim();
      if (key === "size") {
        const s = /^(\d+)\s*[x×]\s*(\d+)$/.exec(value);
        if (!s) throw new StoryboardError(`${where}: Size is WIDTHxHEIGHT, e.g. 512x320`);
        board.width = Number(s[1]);
        board.height = Number(s[2]);
      } else if (key === "seed" || key === "steps" || key === "guidance") {
        const v = Number(value);
        if (!value || !Number.isFinite(v)) throw new StoryboardError(`${where}: ${m[1]} must be a number`);
        board[key] = v;
      } else board[key] = value;
    } else if ((m = /^@([^():]+?)\s*(?:\(([^)]*)\))?\s*:\s*(.+)$/.exec(line))) {
      const [image, ...desc] = m[3].split(/\s+[—–]\s+|\s+--\s+/);
      refs.push({ name: m[1].trim(), ...(m[2] ? { kind: m[2].trim().toLowerCase() } : {}), image: image.trim(), ...(desc.length ? { description: desc.join(" — ").trim() } : {}) });
    } else if ((m = /^(?:\d+[.)]|[-*])\s+(?:\[seed\s+(\d+)\]\s*)?(.+)$/i.exec(line))) {
      shots.push({ prompt: m[2].trim(), ...(m[1] ? { seed: Number(m[1]) } : {}) });
    } else {
      throw new StoryboardError(`${where} is neither a setting (Title:, Brief:, Style:, Size:, Seed:, Steps:, Guidance:), a reference (@Name (kind): image — description) nor a shot ("1. text" or "- text")`);
    }
  }
  return parseStoryboardJson(board);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Does `text` name `name` as a whole word (any case)? */
export function names(text: string, name: string): boolean {
  return new RegExp(`(^|[^\\p{L}\\p{N}])${escapeRegExp(name)}($|[^\\p{L}\\p{N}])`, "iu").test(text);
}

/**
 * Shot ids, attached references, prompts and seeds. Refuses duplicate names or
 * ids, unknown reference names, and shots needing more references than the
 * model takes (`maxReferences`).
 */
export function planShots(board: StoryboardSpec, maxReferences = 10): ShotPlan[] {
  const byName = new Map<string, StoryboardReference>();
  for (const r of board.references) {
    const key = r.name.toLowerCase();
    if (byName.has(key)) throw new StoryboardError(`two references are named "${r.name}": give each a distinct name`);
    byName.set(key, r);
  }
  const ids = new Set<string>();
  return board.shots.map((shot, index) => {
    const id = shot.id ?? `shot${String(index + 1).padStart(2, "0")}`;
    if (ids.has(id)) throw new StoryboardError(`two shots have the id "${id}": give each a distinct id`);
    ids.add(id);
    let attached: StoryboardReference[];
    if (shot.references) {
      attached = shot.references.map((n) => {
        const r = byName.get(n.toLowerCase());
        if (!r) throw new StoryboardError(`shot ${id} names the reference "${n}", which the board does not define (it has: ${[...byName.values()].map((x) => x.name).join(", ") || "none"})`);
        return r;
      });
    } else {
      attached = board.references.filter((r) => r.kind !== "style" && names(shot.prompt, r.name));
    }
    for (const r of board.references) if (r.kind === "style" && !attached.includes(r)) attached.push(r);
    if (attached.length > maxReferences) {
      throw new StoryboardError(`shot ${id} has ${attached.length} references but the model takes at most ${maxReferences}: list fewer in its "references"`);
    }
    return { index, id, text: shot.prompt, prompt: shotPrompt(board, shot.prompt, attached), references: attached.map((r) => r.name), seed: shot.seed ?? board.seed };
  });
}

/**
 * The panel's prompt: the shot, then which input image shows which reference
 * (FLUX.2 multi-reference prompts point at "image 1", "image 2", …), then the style.
 */
export function shotPrompt(board: StoryboardSpec, text: string, refs: StoryboardReference[]): string {
  const parts = [text.trim().replace(/[.\s]*$/, ".")];
  if (refs.length) {
    const which = refs.map((r, i) => `image ${i + 1} is ${r.kind === "style" ? "the style reference" : `${r.name} (${r.kind})`}${r.description ? `: ${r.description}` : ""}`);
    parts.push(`References: ${which.join("; ")}.`);
  }
  if (board.style) parts.push(`Style: ${board.style.trim()}`);
  return parts.join(" ");
}

/**
 * The generation request of one shot, for `flux2 storyboard` and POST /v1/storyboard alike: its
 * prompt, its references as input images (`image` gives a reference's value: a file path for
 * the CLI, the stored image for the server), the board's size, steps and guidance, its seed.
 */
export function shotRequest(board: StoryboardSpec, plan: ShotPlan, image: (name: string) => string | undefined = (n) => board.references.find((r) => r.name === n)?.image): Record<string, unknown> {
  const body: Record<string, unknown> = { prompt: plan.prompt, seed: plan.seed };
  plan.references.forEach((name, i) => (body[imageField(i)] = image(name)));
  for (const k of ["width", "height", "steps", "guidance"] as const) if (board[k] !== undefined) body[k] = board[k];
  return body;
}
