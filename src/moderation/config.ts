// The moderation configuration (`--moderation FILE` on flux2 serve, worker,
// generate and edit): a JSON file the operator writes. Every key is checked;
// an unknown key is refused, so a misspelt setting never passes as "filtered".
//
// {
//   "prompt": {                       // checks on the prompt (→ "Request Moderated")
//     "words": ["..."],               // whole words or phrases, case-insensitive
//     "patterns": ["..."]             // JavaScript regular expressions, case-insensitive
//   },
//   "llm": {},                        // optional yes/no check with the text encoder (llm_check.ts;
//                                     // keys system, prompt with {prompt}, yes, no)
//   "image": {                        // an image classifier (inputs → "Request Moderated",
//                                     // outputs → "Content Moderated")
//     "classifier": "DIR",            // ViTForImageClassification folder, e.g. a download
//                                     // of Falconsai/nsfw_image_detection (relative to this file)
//     "label": "nsfw",                // the class whose probability is checked
//     "thresholds": [0.2, 0.5, 0.85, 0.9, 0.95, 0.98, 0.995],  // by safety_tolerance 0..6
//     "check_inputs": true,
//     "check_outputs": true
//   }
// }

import * as fs from "node:fs";
import * as path from "node:path";
import { DEFAULT_LLM_PROMPT, DEFAULT_LLM_SYSTEM, type LlmCheckConfig } from "./llm_check.js";

/** BFL's default safety_tolerance. */
export const DEFAULT_SAFETY_TOLERANCE = 2;

/**
 * Probability of the checked label above which an image is moderated, for
 * safety_tolerance 0 (strictest) … 6 (most permissive). Tolerance 2, BFL's default,
 * is 0.85: the threshold of BFL's reference code (NSFW_THRESHOLD in flux2/text_encoder.py).
 */
export const DEFAULT_THRESHOLDS = [0.2, 0.5, 0.85, 0.9, 0.95, 0.98, 0.995];

export interface ModerationConfig {
  /** The file it came from (for messages). */
  source: string;
  prompt: { words: string[]; patterns: string[] };
  image: {
    classifier: string;
    label: string;
    thresholds: number[];
    checkInputs: boolean;
    checkOutputs: boolean;
  } | null;
  /** The yes/no prompt check with the model's text encoder (llm_check.ts), or null. */
  llm: LlmCheckConfig | null;
}

export class ModerationConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModerationConfigError";
  }
}

function only(obj: Record<string, unknown>, keys: string[], where: string): void {
  for (const k of Object.keys(obj)) {
    if (!keys.includes(k)) throw new ModerationConfigError(`${where}: unknown key "${k}" (allowed: ${keys.join(", ")})`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function stringList(v: unknown, where: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== "string" || s.trim() === "")) throw new ModerationConfigError(`${where} must be a list of non-empty strings`);
  return v as string[];
}

/** Read and check a moderation file; relative classifier paths are taken from the file's folder. */
export function loadModerationConfig(file: string): ModerationConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new ModerationConfigError(`--moderation ${file}: cannot read it as JSON (${(e as Error).message})`);
  }
  return parseModerationConfig(raw, file, path.dirname(path.resolve(file)));
}

export function parseModerationConfig(raw: unknown, source: string, baseDir: string): ModerationConfig {
  const where = `--moderation ${source}`;
  if (!isObject(raw)) throw new ModerationConfigError(`${where}: expected a JSON object with "prompt" and/or "image"`);
  only(raw, ["prompt", "image", "llm"], where);
  const p = raw.prompt ?? {};
  if (!isObject(p)) throw new ModerationConfigError(`${where}: "prompt" must be an object`);
  only(p, ["words", "patterns"], `${where}: prompt`);
  const words = stringList(p.words, `${where}: prompt.words`);
  const patterns = stringList(p.patterns, `${where}: prompt.patterns`);
  for (const re of patterns) {
    try {
      new RegExp(re, "iu");
    } catch (e) {
      throw new ModerationConfigError(`${where}: prompt.patterns entry ${JSON.stringify(re)} is not a valid regular expression (${(e as Error).message})`);
    }
  }
  let image: ModerationConfig["image"] = null;
  if (raw.image !== undefined) {
    const i = raw.image;
    if (!isObject(i)) throw new ModerationConfigError(`${where}: "image" must be an object`);
    only(i, ["classifier", "label", "thresholds", "check_inputs", "check_outputs"], `${where}: image`);
    if (typeof i.classifier !== "string" || !i.classifier) throw new ModerationConfigError(`${where}: image.classifier must be the folder of a ViTForImageClassification checkpoint`);
    const classifier = path.resolve(baseDir, i.classifier);
    if (!fs.existsSync(path.join(classifier, "config.json"))) {
      throw new ModerationConfigError(`${where}: image.classifier ${classifier} has no config.json (download e.g. Falconsai/nsfw_image_detection with flux2 pull and point here)`);
    }
    const thresholds = i.thresholds ?? DEFAULT_THRESHOLDS;
    if (!Array.isArray(thresholds) || thresholds.length !== 7 || thresholds.some((t) => typeof t !== "number" || !(t >= 0 && t <= 1))) {
      throw new ModerationConfigError(`${where}: image.thresholds must be 7 probabilities (0..1), one per safety_tolerance 0..6`);
    }
    if (thresholds.some((t, k) => k > 0 && t < thresholds[k - 1])) throw new ModerationConfigError(`${where}: image.thresholds must not decrease (0 is the strictest tolerance)`);
    for (const k of ["check_inputs", "check_outputs"] as const) {
      if (i[k] !== undefined && typeof i[k] !== "boolean") throw new ModerationConfigError(`${where}: image.${k} must be true or false`);
    }
    if (i.label !== undefined && typeof i.label !== "string") throw new ModerationConfigError(`${where}: image.label must be a string`);
    image = {
      classifier, label: (i.label as string | undefined) ?? "nsfw", thresholds: thresholds as number[],
      checkInputs: i.check_inputs !== false, checkOutputs: i.check_outputs !== false,
    };
    if (!image.checkInputs && !image.checkOutputs) throw new ModerationConfigError(`${where}: image checks neither inputs nor outputs; remove "image" instead`);
  }
  let llm: LlmCheckConfig | null = null;
  if (raw.llm !== undefined) {
    const l = raw.llm;
    if (!isObject(l)) throw new ModerationConfigError(`${where}: "llm" must be an object ({} for BFL's default prompts)`);
    only(l, ["system", "prompt", "yes", "no"], `${where}: llm`);
    for (const k of ["system", "prompt", "yes", "no"] as const) {
      if (l[k] !== undefined && (typeof l[k] !== "string" || !(l[k] as string).trim())) throw new ModerationConfigError(`${where}: llm.${k} must be a non-empty string`);
    }
    llm = { system: (l.system as string) ?? DEFAULT_LLM_SYSTEM, prompt: (l.prompt as string) ?? DEFAULT_LLM_PROMPT, yes: (l.yes as string) ?? "yes", no: (l.no as string) ?? "no" };
    if (!llm.prompt.includes("{prompt}")) throw new ModerationConfigError(`${where}: llm.prompt must contain {prompt}, where the prompt to check goes`);
  }
  if (!words.length && !patterns.length && !image && !llm) throw new ModerationConfigError(`${where}: checks nothing (no prompt words or patterns, no image classifier, no llm check)`);
  return { source, prompt: { words, patterns }, image, llm };
}

/** One line for start-up logs and /v1/models. */
export function describeModeration(c: ModerationConfig | undefined): string {
  if (!c) return "no moderation configured: prompts and images are not checked (flux2 serve --moderation CONFIG; see docs/server.md)";
  const parts = [];
  if (c.prompt.words.length || c.prompt.patterns.length) parts.push(`prompt lists (${c.prompt.words.length} words, ${c.prompt.patterns.length} patterns)`);
  if (c.llm) parts.push("yes/no prompt check with the text encoder LLM");
  if (c.image) parts.push(`image classifier ${path.basename(c.image.classifier)} on ${[c.image.checkInputs && "inputs", c.image.checkOutputs && "outputs"].filter(Boolean).join(" and ")} (label "${c.image.label}", threshold ${c.image.thresholds[DEFAULT_SAFETY_TOLERANCE]} at safety_tolerance ${DEFAULT_SAFETY_TOLERANCE})`);
  return `moderation from ${c.source}: ${parts.join("; ")}`;
}

/**
 * Why a safety_tolerance cannot be honoured, or null. Stricter than the default
 * needs an image classifier (the tolerance picks its threshold); without any
 * moderation, nothing would be filtered at all.
 */
export function safetyToleranceProblem(tolerance: number | undefined, c: ModerationConfig | undefined): string | null {
  if (tolerance === undefined || tolerance >= DEFAULT_SAFETY_TOLERANCE) return null;
  if (!c) return `this server has no moderation configured, so safety_tolerance ${tolerance} (stricter than the default ${DEFAULT_SAFETY_TOLERANCE}) would filter nothing; omit it, or start the server with --moderation CONFIG`;
  if (!c.image) return `this server's moderation has no image classifier, and safety_tolerance only sets the classifier's threshold; omit it, or add "image" to ${c.source}`;
  return null;
}
