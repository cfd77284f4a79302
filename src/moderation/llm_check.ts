// The optional yes/no prompt check with the model's own text encoder LLM, as
// BFL's reference code does it (flux2/text_encoder.py `test_txt`): a system turn,
// a user turn that embeds the prompt, one forward pass, and the answer is "yes"
// when the "yes" token's logit beats the "no" token's (the reference restricts
// the vocabulary to those two and decodes greedily: the same decision). Both
// texts are the operator's to see and change (moderation file, "llm"); the
// defaults are BFL's SYSTEM_PROMPT_CONTENT_FILTER and PROMPT_TEXT_INTEGRITY
// (copyright and public figures; written for Mistral, BFL's dev encoder).

import type { Backend } from "../backend/backend.js";
import type { Checkpoint } from "../pipeline/checkpoint.js";
import { TextGenerator } from "../text/generate.js";
import { openTextLlm } from "../text/upsample.js";

export const DEFAULT_LLM_SYSTEM = `You are Mistral Small 3, a Large Language Model (LLM) created by Mistral AI, a French startup headquartered in Paris.
Your task is identifying images and text for copyright concerns and depictions of public personas.`;

export const DEFAULT_LLM_PROMPT = `Task: Analyze a text prompt to identify potential copyright concerns or requests to depict living public figures.

Output: Respond with only "yes" or "no"

Criteria for "Yes":
- The prompt explicitly names a character from copyrighted media (movies, TV, comics, games, etc.)
- The prompt explicitly mentions a trademarked logo or brand
- The prompt names or describes a specific living public figure (celebrities, politicians, athletes, influencers, etc.)

Criteria for "No":
- All other cases
- When you cannot identify the specific copyrighted work or named individual

Critical Requirements:
1. You must be able to name the exact copyrighted work or specific person referenced
2. General demographic descriptions or characteristics are not sufficient
3. Analyze only the prompt text, not potential image outcomes
4. Provide only the one-word answer: "yes" or "no"

The prompt to check is:
-----
{prompt}
-----

Does this prompt have copyright concerns or includes public figures?`;

export interface LlmCheckConfig {
  system: string;
  /** The user turn; "{prompt}" is replaced by the prompt to check. */
  prompt: string;
  /** The answer words; the first token of each is compared. */
  yes: string;
  no: string;
}

export interface LlmVerdict {
  flagged: boolean;
  yesLogit: number;
  noLogit: number;
}

/** Ask the checkpoint's text encoder whether `prompt` should be refused. */
export async function llmPromptCheck(ck: Checkpoint, prompt: string, c: LlmCheckConfig, backend: Backend): Promise<LlmVerdict> {
  const llm = await openTextLlm(ck, c.system);
  const gen = await TextGenerator.create(llm.config, llm.weights, backend);
  try {
    const [yes] = llm.plain(c.yes), [no] = llm.plain(c.no);
    if (yes === undefined || no === undefined || yes === no) throw new Error(`moderation llm: the answer words "${c.yes}" and "${c.no}" must be two different tokens of this tokenizer`);
    const logits = await gen.forward(llm.render(c.prompt.split("{prompt}").join(prompt)), gen.newCache());
    return { flagged: logits[yes] > logits[no], yesLogit: logits[yes], noLogit: logits[no] };
  } finally {
    await gen.release();
    llm.weights.set.close();
  }
}
