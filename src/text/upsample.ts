// Prompt upsampling: the model's own text encoder LLM rewrites a short prompt
// into a detailed one before it is encoded (BFL's API `prompt_upsampling`,
// `flux2 generate --upsample-prompt`).
//
// FLUX.2 [dev] (Mistral): as diffusers' Flux2Pipeline.upsample_prompt — a system
// turn with SYSTEM_MESSAGE_UPSAMPLING_T2I (below; diffusers takes it from BFL's
// flux2/system_messages.py), the user's prompt, sampling at temperature 0.15
// (the value diffusers recommends; top_k 50 and top_p 1, transformers' defaults, or
// the folder's generation_config.json), at most 512 new tokens, special tokens
// dropped from the answer and transformers' clean_up_tokenization applied. FLUX.2 [klein] (Qwen3): the same system message and
// sampling through Qwen3's own chat template with thinking off — BFL publishes
// no klein-specific upsampling message.
//
// Image-conditioned upsampling (SYSTEM_MESSAGE_UPSAMPLING_I2I with the reference
// images) needs dev's Pixtral vision tower, which flux2.ts does not implement:
// it is refused, never silently done as text-only.

import type { Backend } from "../backend/backend.js";
import { WeightSet } from "../io/safetensors.js";
import { MistralWeights, readMistralConfig } from "../models/mistral.js";
import { Qwen3Weights, readQwen3Config } from "../models/qwen3.js";
import { defaultConfigPath, readJsonConfig, type DecoderConfig, type DecoderWeights } from "../models/decoder.js";
import * as fs from "../platform/fs.js";
import * as path from "../platform/path.js";
import { cleanUpTokenizationSpaces, MistralPromptTokenizer } from "./mistral_prompt.js";
import { PromptTokenizer } from "./tokenizer.js";
import { lmHeadProblem, TextGenerator, type SamplingOptions } from "./generate.js";

/** diffusers `SYSTEM_MESSAGE_UPSAMPLING_T2I` (from BFL's flux2 repository), verbatim: it is the model's instruction. */
export const UPSAMPLE_SYSTEM_MESSAGE_T2I = `You are an expert prompt engineer for FLUX.2 by Black Forest Labs. Rewrite user prompts to be more descriptive while strictly preserving their core subject and intent.

Guidelines:
1. Structure: Keep structured inputs structured (enhance within fields). Convert natural language to detailed paragraphs.
2. Details: Add concrete visual specifics - form, scale, textures, materials, lighting (quality, direction, color), shadows, spatial relationships, and environmental context.
3. Text in Images: Put ALL text in quotation marks, matching the prompt's language. Always provide explicit quoted text for objects that would contain text in reality (signs, labels, screens, etc.) - without it, the model generates gibberish.

Output only the revised prompt and nothing else.`;

export const UPSAMPLE_TEMPERATURE = 0.15;
export const UPSAMPLE_MAX_NEW_TOKENS = 512;
/**
 * diffusers passes only do_sample and temperature, so transformers' generation defaults fill in the
 * rest: top_k 50 and top_p 1 (GenerationConfig), unless the text encoder folder's
 * generation_config.json sets them (`TextLlm.sampling`).
 */
export const TRANSFORMERS_DEFAULT_TOP_K = 50;

export const IMAGE_UPSAMPLING_REFUSED =
  "prompt upsampling with input images needs FLUX.2 [dev]'s vision tower (Pixtral), which flux2.ts does not implement yet; " +
  "upsample without images, or write the detailed prompt yourself";

export interface UpsampleOptions {
  backend: Backend;
  /** Sampling seed (the request's seed): the same seed gives the same rewrite. */
  seed?: number;
  /** Override the sampling (tests); default: temperature 0.15, 512 new tokens. */
  sampling?: Partial<SamplingOptions>;
}

/** A text encoder opened for generation: its config, weights and chat rendering. */
export interface TextLlm {
  config: DecoderConfig;
  weights: DecoderWeights;
  /** Token ids of a system + user chat, ready for the assistant's answer. */
  render: (user: string) => number[];
  decode: (ids: number[]) => string;
  /** Token ids of plain text, no special tokens (e.g. "yes"). */
  plain: (text: string) => number[];
  stop: number[];
  /** top_k / top_p as transformers' generate() would take them for this checkpoint (generation_config.json, else its defaults). */
  sampling: { topK: number; topP: number };
}

/**
 * The files of a checkpoint that the text LLM needs. A pipeline Checkpoint fits it; text/ sits
 * below pipeline/ and so names only what it reads (no import back up).
 */
export interface TextLlmFiles {
  textEncoder: { weights: string; config: string | null; kind: "qwen3" | "mistral3" };
  tokenizer: string;
}

/**
 * Why this checkpoint's text encoder cannot generate text (prompt upsampling, the LLM moderation
 * check), or null. Reads the config and the weight headers only, so a server can refuse
 * `prompt_upsampling` with 422 at submit instead of failing the job later.
 */
export function textLlmProblem(ck: TextLlmFiles): string | null {
  const te = ck.textEncoder;
  let set: WeightSet | undefined;
  try {
    const configFile = defaultConfigPath(te.weights, te.config);
    set = WeightSet.open(te.weights);
    if (te.kind === "mistral3") return lmHeadProblem(readMistralConfig(configFile), new MistralWeights(set));
    return lmHeadProblem(readQwen3Config(configFile), new Qwen3Weights(set));
  } catch (e) {
    // A folder this check cannot read: upsampling is refused with the reason; encoding reports its own error when run.
    return `the text encoder cannot be opened for text generation: ${(e as Error).message}`;
  } finally {
    set?.close();
  }
}

/** Open a checkpoint's text encoder and tokenizer for chats under `system`. */
export async function openTextLlm(ck: TextLlmFiles, system: string): Promise<TextLlm> {
  const te = ck.textEncoder;
  const configFile = defaultConfigPath(te.weights, te.config);
  const raw = readJsonConfig(configFile);
  // transformers' generate() takes eos and sampling defaults from generation_config.json beside the
  // config when there is one, else from the config (a Mistral 3 config keeps them in text_config).
  const genFile = path.join(path.dirname(configFile), "generation_config.json");
  const gen = fs.existsSync(genFile) ? readJsonConfig(genFile) : {};
  const ids = (v: unknown) => ([] as unknown[]).concat(v ?? []).filter((x): x is number => Number.isInteger(x));
  const eos = [...ids(gen.eos_token_id), ...ids(raw.eos_token_id), ...ids(raw.text_config?.eos_token_id)];
  const sampling = generationDefaults(gen, genFile);
  if (te.kind === "mistral3") {
    const tok = await MistralPromptTokenizer.load(ck.tokenizer, { systemMessage: system });
    const stop = [...eos, tok.tokenId("</s>")].filter((x): x is number => x !== undefined);
    return {
      config: readMistralConfig(configFile), weights: new MistralWeights(WeightSet.open(te.weights)),
      // add_generation_prompt and clean_up_tokenization_spaces as diffusers' Flux2Pipeline.upsample_prompt.
      render: (p) => tok.tokenize(tok.renderChat(p, true)), decode: (ids) => cleanUpTokenizationSpaces(tok.decode(ids)),
      plain: (t) => tok.tokenizePlain(t), stop, sampling,
    };
  }
  const tok = await PromptTokenizer.load(ck.tokenizer);
  // Qwen3 chats end a turn with <|im_end|>; the base model's eos (<|endoftext|>) ends it too.
  const stop = [...eos, tok.tokenId("<|im_end|>"), tok.eosToken !== undefined ? tok.tokenId(tok.eosToken) : undefined].filter((x): x is number => x !== undefined);
  return {
    config: readQwen3Config(configFile), weights: new Qwen3Weights(WeightSet.open(te.weights)),
    render: (p) => tok.tokenize(tok.renderMessages([{ role: "system", content: system }, { role: "user", content: p }])),
    decode: (ids) => tok.decode(ids), plain: (t) => tok.tokenize(t), stop, sampling,
  };
}

/** top_k / top_p from a generation_config.json (absent: transformers' defaults 50 and 1); a bad value is refused. */
function generationDefaults(gen: Record<string, any>, file: string): { topK: number; topP: number } {
  const topK = gen.top_k ?? TRANSFORMERS_DEFAULT_TOP_K, topP = gen.top_p ?? 1;
  if (!Number.isInteger(topK) || topK < 0) throw new Error(`${file}: top_k must be a whole number (0 = off), got ${JSON.stringify(gen.top_k)}`);
  if (!(typeof topP === "number" && topP > 0 && topP <= 1)) throw new Error(`${file}: top_p must be in (0, 1], got ${JSON.stringify(gen.top_p)}`);
  return { topK, topP };
}

/**
 * Rewrite each prompt with the checkpoint's text encoder; the generation session is
 * released before returning. An empty answer (the model stopped at once) keeps the
 * original prompt, which the caller can see by comparing.
 */
export async function upsamplePrompts(ck: TextLlmFiles, prompts: string[], opts: UpsampleOptions): Promise<string[]> {
  const m = await openTextLlm(ck, UPSAMPLE_SYSTEM_MESSAGE_T2I);
  const gen = await TextGenerator.create(m.config, m.weights, opts.backend);
  try {
    const out: string[] = [];
    for (const [i, prompt] of prompts.entries()) {
      const r = await gen.generate(m.render(prompt), {
        maxNewTokens: UPSAMPLE_MAX_NEW_TOKENS, temperature: UPSAMPLE_TEMPERATURE, ...m.sampling, seed: (opts.seed ?? 0) + i, stopTokens: m.stop, ...opts.sampling,
      });
      const text = m.decode(r.tokens).trim();
      out.push(text || prompt);
    }
    return out;
  } finally {
    await gen.release();
    m.weights.set.close();
  }
}
