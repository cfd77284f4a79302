// The moderation stage around a generation: the prompt and the input images are
// checked before anything runs (a hit is BFL's "Request Moderated"), every output
// image after it (a hit is "Content Moderated"; the image is neither stored nor
// served). What is checked comes from the operator's file (config.ts).

import type { Backend } from "../backend/backend.js";
import { VitClassifier } from "../models/vit.js";
import { DEFAULT_SAFETY_TOLERANCE, type ModerationConfig } from "./config.js";
import { llmPromptCheck } from "./llm_check.js";
import type { Checkpoint } from "../pipeline/checkpoint.js";

export class ModeratedError extends Error {
  /** "request": the prompt or an input image; "content": a generated image. */
  constructor(readonly stage: "request" | "content", readonly reason: string) {
    super(`${stage === "request" ? "Request Moderated" : "Content Moderated"}: ${reason}`);
    this.name = "ModeratedError";
  }
}

/** Letters and digits on neither side: "ass" matches "ass" but not "class". */
function wordPattern(word: string): RegExp {
  const escaped = word.normalize("NFKC").replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/\s+/g, "\\s+");
  return new RegExp(`(?<![\\p{L}\\p{N}])${escaped}(?![\\p{L}\\p{N}])`, "iu");
}

/** The first word-list or pattern hit in a prompt, as a reason; null when clean. */
export function promptListHit(prompt: string, c: ModerationConfig["prompt"]): string | null {
  // NFKC folds full-width and other compatibility forms ("ｆｏｏ" → "foo") before matching.
  const text = prompt.normalize("NFKC");
  for (const w of c.words) if (wordPattern(w).test(text)) return `the prompt contains a blocked word or phrase ("${w}")`;
  for (const p of c.patterns) if (new RegExp(p, "iu").test(text)) return `the prompt matches a blocked pattern (${JSON.stringify(p)})`;
  return null;
}

export interface RgbImage {
  rgb: Uint8Array;
  width: number;
  height: number;
}

export class Moderator {
  private classifier?: Promise<VitClassifier>;

  constructor(readonly config: ModerationConfig, private backend: Backend) {}

  checkPrompt(prompt: string): void {
    const hit = promptListHit(prompt, this.config.prompt);
    if (hit) throw new ModeratedError("request", hit);
  }

  /** The yes/no LLM check (when configured) with the job's checkpoint; throws ModeratedError on "yes". */
  async checkPromptWithLlm(prompt: string, ck: Checkpoint): Promise<void> {
    if (!this.config.llm) return;
    const v = await llmPromptCheck(ck, prompt, this.config.llm, this.backend);
    if (v.flagged) throw new ModeratedError("request", `the text encoder's yes/no check answered "${this.config.llm.yes}" (logit ${v.yesLogit.toFixed(3)} over ${v.noLogit.toFixed(3)})`);
  }

  /** Threshold of the checked label's probability for a safety_tolerance. */
  threshold(tolerance = DEFAULT_SAFETY_TOLERANCE): number {
    if (!this.config.image) throw new Error("no image classifier configured");
    return this.config.image.thresholds[tolerance];
  }

  /** Check input images (what: "input_image", …) before a run. */
  async checkInputs(images: { what: string; image: RgbImage }[], tolerance?: number): Promise<void> {
    if (!this.config.image?.checkInputs) return;
    for (const { what, image } of images) {
      const reason = await this.imageHit(image, tolerance);
      if (reason) throw new ModeratedError("request", `${what}: ${reason}`);
    }
  }

  /** Check generated images before they are encoded, stored or served. */
  async checkOutputs(images: RgbImage[], tolerance?: number): Promise<void> {
    if (!this.config.image?.checkOutputs) return;
    for (const [i, image] of images.entries()) {
      const reason = await this.imageHit(image, tolerance);
      if (reason) throw new ModeratedError("content", `${images.length > 1 ? `image ${i}: ` : ""}${reason}`);
    }
  }

  private async imageHit(image: RgbImage, tolerance = DEFAULT_SAFETY_TOLERANCE): Promise<string | null> {
    const c = this.config.image!;
    this.classifier ??= VitClassifier.open(c.classifier, this.backend);
    const vit = await this.classifier;
    if (!vit.config.labels.includes(c.label)) {
      throw new Error(`moderation: the classifier in ${c.classifier} has no label "${c.label}" (it has ${vit.config.labels.join(", ")}); set image.label in ${this.config.source}`);
    }
    const p = (await vit.classify(image.rgb, image.width, image.height))[c.label];
    const t = this.threshold(tolerance);
    return p > t ? `the image classifier gives "${c.label}" ${p.toFixed(3)}, above ${t} (safety_tolerance ${tolerance})` : null;
  }

  async release(): Promise<void> {
    const c = this.classifier;
    this.classifier = undefined;
    if (c) await (await c).release();
  }
}
