// A shot list written from a creative brief by the checkpoint's own text
// encoder LLM (the same decoder that prompt upsampling uses, src/text/upsample.ts).
// The answer is read as numbered lines; an answer without the shots asked for
// is refused with what the model wrote, never padded or made up.

import type { Backend } from "../backend/backend.js";
import type { Checkpoint } from "../pipeline/checkpoint.js";
import { TextGenerator } from "../text/generate.js";
import { openTextLlm } from "../text/upsample.js";
import { StoryboardError } from "./board.js";

export const SHOT_LIST_SYSTEM_MESSAGE = `You are a storyboard artist. From the user's creative brief, write a shot list for a short sequence.
Write exactly the number of shots asked for, one per line, numbered "1.", "2.", and so on.
Each shot is one sentence describing what the camera sees: shot size, subject, action and place.
Use the names of the characters, costumes and places given, spelled exactly as given.
Output only the numbered shot list and nothing else.`;

/** Low temperature: a shot list should follow the brief closely. */
const TEMPERATURE = 0.3;
const MAX_NEW_TOKENS_PER_SHOT = 80;

/** The user turn: the brief, the names to use, and how many shots. */
export function shotListRequest(brief: string, count: number, referenceNames: string[] = []): string {
  const names = referenceNames.length ? `\nNames to use: ${referenceNames.join(", ")}.` : "";
  return `Brief: ${brief.trim()}${names}\nWrite ${count} shots.`;
}

/** Numbered lines of an answer ("1. …", "2) …"); refuses an answer with fewer than `count`. */
export function parseShotList(answer: string, count: number): string[] {
  const shots = answer.split(/\r?\n/).map((l) => /^\s*(?:shot\s*)?\d+\s*[.):-]\s*(.+)$/i.exec(l)?.[1]?.trim()).filter((s): s is string => !!s);
  if (shots.length < count) {
    throw new StoryboardError(`the text encoder's LLM wrote ${shots.length} numbered shot(s) where ${count} were asked for ` +
      `(it wrote: ${JSON.stringify(answer.slice(0, 300))}); write the shot list yourself, or use a checkpoint whose text encoder can follow instructions`);
  }
  return shots.slice(0, count);
}

export async function writeShotList(ck: Checkpoint, brief: string, count: number, opts: { backend: Backend; seed?: number; referenceNames?: string[] }): Promise<string[]> {
  if (!brief.trim()) throw new StoryboardError("the brief is empty: say what the sequence is about");
  const m = await openTextLlm(ck, SHOT_LIST_SYSTEM_MESSAGE);
  let gen: TextGenerator;
  try {
    gen = await TextGenerator.create(m.config, m.weights, opts.backend);
  } catch (e) {
    m.weights.set.close();
    throw new StoryboardError(`this checkpoint's text encoder cannot generate text (${(e as Error).message}): write the shot list yourself`);
  }
  try {
    const r = await gen.generate(m.render(shotListRequest(brief, count, opts.referenceNames)), {
      maxNewTokens: MAX_NEW_TOKENS_PER_SHOT * count, temperature: TEMPERATURE, seed: opts.seed ?? 0, stopTokens: m.stop,
    });
    return parseShotList(m.decode(r.tokens), count);
  } finally {
    await gen.release();
    m.weights.set.close();
  }
}
