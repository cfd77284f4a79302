// Prompt helpers: the structured (JSON) prompt FLUX.2 understands, the length
// indicator, and inserting a hex colour at the cursor.

// BFL's JSON prompt schema (docs.bfl.ai, "JSON prompting"): scene, subjects, style, color_palette,
// lighting, mood, background, composition, camera. The builder edits the string fields and the
// palette; whatever else a prompt carries (other keys, objects where we expect text, extra subject or
// camera keys) is kept as it was in `extra` and written back, so Text → builder → Text loses nothing.

export type Extra = Record<string, unknown>;
export interface Subject { description: string; position: string; action: string; extra: Extra }
export const TEXT_FIELDS = ["style", "lighting", "mood", "background", "composition"] as const;
export type TextField = (typeof TEXT_FIELDS)[number];
export const CAMERA_FIELDS = ["angle", "lens", "depth_of_field"] as const;
export type CameraField = (typeof CAMERA_FIELDS)[number];
export interface Structured {
  scene: string;
  subjects: Subject[];
  style: string;
  /** Hex colours (#RRGGBB), in order. */
  color_palette: string[];
  lighting: string;
  mood: string;
  background: string;
  composition: string;
  camera: Record<CameraField, string> & { extra: Extra };
  /** Top-level keys the builder has no field for, and known keys whose value is not plain text. */
  extra: Extra;
}

export const emptySubject = (): Subject => ({ description: "", position: "", action: "", extra: {} });
export const emptyStructured = (): Structured => ({
  scene: "", subjects: [emptySubject()], style: "", color_palette: [], lighting: "", mood: "", background: "", composition: "",
  camera: { angle: "", lens: "", depth_of_field: "", extra: {} }, extra: {},
});

const isObj = (v: unknown): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v);

/** Text fields of an object: strings into `fields`, anything else kept raw in `extra`. */
function split<K extends string>(o: Record<string, unknown>, keys: readonly K[]): { fields: Record<K, string>; extra: Extra } {
  const fields = Object.fromEntries(keys.map((k) => [k, ""])) as Record<K, string>;
  const extra: Extra = {};
  for (const [k, v] of Object.entries(o)) {
    if ((keys as readonly string[]).includes(k) && typeof v === "string") fields[k as K] = v;
    else extra[k] = v;
  }
  return { fields, extra };
}

/** Non-empty trimmed strings of `fields`, then `extra` (which never overrides a field the builder edited). */
function join(fields: Record<string, string>, extra: Extra): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) if (v.trim()) out[k] = v.trim();
  for (const [k, v] of Object.entries(extra)) if (!(k in out)) out[k] = v;
  return out;
}

/** The JSON prompt text for a structured prompt: empty fields are left out, extra keys kept. */
export function structuredToText(s: Structured): string {
  const out: Record<string, unknown> = {};
  if (s.scene.trim()) out.scene = s.scene.trim();
  const subjects = s.subjects
    .map((x) => join({ description: x.description, position: x.position, action: x.action }, x.extra))
    .filter((x) => Object.keys(x).length);
  if (subjects.length) out.subjects = subjects;
  for (const k of TEXT_FIELDS) {
    if (s[k].trim()) out[k] = s[k].trim();
    if (k === "style" && s.color_palette.length) out.color_palette = s.color_palette;
  }
  const { extra: camExtra, ...cam } = s.camera;
  const camera = join(cam, camExtra);
  if (Object.keys(camera).length) out.camera = camera;
  for (const [k, v] of Object.entries(s.extra)) if (!(k in out)) out[k] = v;
  return Object.keys(out).length ? JSON.stringify(out) : "";
}

/** Read a prompt back into the builder; plain text (or JSON that is not an object) becomes the scene. */
export function textToStructured(text: string): Structured {
  const s = emptyStructured();
  const t = text.trim();
  if (!t) return s;
  let j: unknown;
  try { j = JSON.parse(t); } catch { s.scene = t; return s; }
  if (!isObj(j)) { s.scene = t; return s; }
  const { fields, extra } = split(j, ["scene", ...TEXT_FIELDS]);
  // Known keys holding something other than text (a lighting object, say) stay raw in extra.
  Object.assign(s, fields);
  const subjects = j.subjects;
  if (Array.isArray(subjects) && subjects.every((x) => isObj(x) || typeof x === "string") && subjects.length) {
    delete extra.subjects;
    s.subjects = subjects.map((x) => {
      if (typeof x === "string") return { ...emptySubject(), description: x };
      const r = split(x as Record<string, unknown>, ["description", "position", "action"] as const);
      return { ...r.fields, extra: r.extra };
    });
  }
  const palette = j.color_palette;
  if (Array.isArray(palette) && palette.every((c) => typeof c === "string" && HEX.test(c))) {
    delete extra.color_palette;
    s.color_palette = palette as string[];
  }
  if (isObj(j.camera)) {
    delete extra.camera;
    const c = split(j.camera, CAMERA_FIELDS);
    s.camera = { ...c.fields, extra: c.extra };
  }
  s.extra = extra;
  return s;
}

/** Whether a prompt is a JSON object (and so opens in the builder). */
export function isJsonPrompt(text: string): boolean {
  const t = text.trim();
  if (!t.startsWith("{")) return false;
  try { const j = JSON.parse(t); return !!j && typeof j === "object" && !Array.isArray(j); } catch { return false; }
}

export const TOKEN_LIMIT = 512;

/**
 * Approximate token count for the text encoder's BPE tokenizer (Qwen3 / Mistral):
 * about one token per 4 characters of a Latin word, one per punctuation mark or
 * digit group, one per CJK or other non-Latin character. Within ~15% on English
 * prose; the studio only uses it to warn before the 512-token cut-off.
 */
export function estimateTokens(text: string): number {
  let n = 0;
  for (const m of text.matchAll(/[A-Za-z\u00C0-\u024F]+|\d{1,3}|[^\sA-Za-z\u00C0-\u024F\d]/gu)) {
    const w = m[0];
    if (/^[A-Za-z\u00C0-\u024F]/.test(w)) n += Math.max(1, Math.ceil(w.length / 4));
    else n += 1;
  }
  return n;
}

/**
 * Insert `insert` into `text` at `at` (a cursor offset), with a space on
 * either side where it would otherwise touch a word. Returns the new text and
 * the cursor position after the insertion.
 */
export function insertAt(text: string, at: number, insert: string): { text: string; cursor: number } {
  const i = Math.max(0, Math.min(at, text.length));
  const before = text.slice(0, i);
  const after = text.slice(i);
  const pre = before && !/\s$/.test(before) ? " " : "";
  const post = after && !/^[\s,.;:!?)\]}"]/.test(after) ? " " : "";
  const piece = pre + insert + post;
  return { text: before + piece + after, cursor: i + pre.length + insert.length };
}

export const HEX = /^#[0-9A-Fa-f]{6}$/;
