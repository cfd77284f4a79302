// Prompt helpers: the structured (JSON) prompt FLUX.2 understands, the length
// indicator, and inserting a hex colour at the cursor.

export interface Subject { description: string; position: string; action: string }
export interface Structured {
  scene: string;
  subjects: Subject[];
  style: string;
  lighting: string;
  mood: string;
  camera: { angle: string; lens: string; depth_of_field: string };
}

export const emptySubject = (): Subject => ({ description: "", position: "", action: "" });
export const emptyStructured = (): Structured => ({
  scene: "", subjects: [emptySubject()], style: "", lighting: "", mood: "",
  camera: { angle: "", lens: "", depth_of_field: "" },
});

/** The JSON prompt text for a structured prompt: empty fields are left out. */
export function structuredToText(s: Structured): string {
  const out: Record<string, unknown> = {};
  if (s.scene.trim()) out.scene = s.scene.trim();
  const subjects = s.subjects
    .map((x) => Object.fromEntries(Object.entries(x).filter(([, v]) => v.trim()).map(([k, v]) => [k, v.trim()])))
    .filter((x) => Object.keys(x).length);
  if (subjects.length) out.subjects = subjects;
  for (const k of ["style", "lighting", "mood"] as const) if (s[k].trim()) out[k] = s[k].trim();
  const camera = Object.fromEntries(Object.entries(s.camera).filter(([, v]) => v.trim()).map(([k, v]) => [k, v.trim()]));
  if (Object.keys(camera).length) out.camera = camera;
  return Object.keys(out).length ? JSON.stringify(out) : "";
}

const asText = (v: unknown): string => (typeof v === "string" ? v : v === undefined || v === null ? "" : JSON.stringify(v));

/** Read a prompt back into the builder; plain text becomes the scene. */
export function textToStructured(text: string): Structured {
  const s = emptyStructured();
  const t = text.trim();
  if (!t) return s;
  let j: unknown;
  try { j = JSON.parse(t); } catch { s.scene = t; return s; }
  if (!j || typeof j !== "object" || Array.isArray(j)) { s.scene = t; return s; }
  const o = j as Record<string, unknown>;
  s.scene = asText(o.scene ?? o.description);
  if (Array.isArray(o.subjects) && o.subjects.length) {
    s.subjects = o.subjects.map((x) => {
      if (typeof x === "string") return { ...emptySubject(), description: x };
      const r = (x ?? {}) as Record<string, unknown>;
      return { description: asText(r.description ?? r.type ?? r.name), position: asText(r.position), action: asText(r.action) };
    });
  }
  s.style = asText(o.style);
  s.lighting = asText(o.lighting);
  s.mood = asText(o.mood);
  const c = (o.camera && typeof o.camera === "object" ? o.camera : {}) as Record<string, unknown>;
  s.camera = { angle: asText(c.angle), lens: asText(c.lens), depth_of_field: asText(c.depth_of_field ?? c["f-number"]) };
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
