// Prompt upsampling: the model's own text encoder LLM rewrites a short prompt
// into a detailed one before it is encoded (BFL's API `prompt_upsampling`,
// `flux2 generate --upsample-prompt`).
//
// FLUX.2 [dev] (Mistral): as diffusers' Flux2Pipeline.upsample_prompt — a system
// turn with SYSTEM_MESSAGE_UPSAMPLING_T2I (below; diffusers takes it from BFL's
// flux2/system_messages.py), the user's prompt, sampling at temperature 0.15
// (the value diffusers recommends), at most 512 new tokens, special tokens
// dropped from the answer. FLUX.2 [klein] (Qwen3): the same system message and
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
import { MistralPromptTokenizer } from "./mistral_prompt.js";
import { PromptTokenizer } from "./tokenizer.js";
import { TextGenerator, type SamplingOptions } from "./generate.js";

/** diffusers `SYSTEM_MESSAGE_UPSAMPLING_T2I` (from BFL's flux2 repository), verbatim: it is the model's instruction. */
export const UPSAMPLE_SYSTEM_MESSAGE_T2I = `You are an expert prompt engineer for FLUX.2 by Black Forest Labs. Rewrite user prompts to be more descriptive while strictly preserving their core subject and intent.

Guidelines:
1. Structure: Keep structured inputs structured (enhance within fields). Convert natural language to detailed paragraphs.
2. Details: Add concrete visual specifics - form, scale, textures, materials, lighting (quality, direction, color), shadows, spatial relationships, and environmental context.
3. Text in Images: Put ALL text in quotation marks, matching the prompt's language. Always provide explicit quoted text for objects that would contain text in reality (signs, labels, screens, etc.) - without it, the model generates gibberish.

Output only the revised prompt and nothing else.`;

export const UPSAMPLE_TEMPERATURE = 0.15;
export const UPSAMPLE_MAX_NEW_TOKENS = 512;

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
}

/**
 * The files of a checkpoint that the text LLM needs. A pipeline Checkpoint fits it; text/ sits
 * below pipeline/ and so names only what it reads (no import back up).
 */
export interface TextLlmFiles {
  textEncoder: { weights: string; config: string | null; kind: "qwen3" | "mistral3" };
  tokenizer: string;
}

/** Open a checkpoint's text encoder and tokenizer for chats under `system`. */
export async function openTextLlm(ck: TextLlmFiles, system: string): Promise<TextLlm> {
  const te = ck.textEncoder;
  const configFile = defaultConfigPath(te.weights, te.config);
  const raw = readJsonConfig(configFile);
  const eos = ([] as unknown[]).concat(raw.eos_token_id ?? []).filter((x): x is number => Number.isInteger(x));
  if (te.kind === "mistral3") {
    const tok = await MistralPromptTokenizer.load(ck.tokenizer, { systemMessage: system });
    const stop = [...eos, tok.tokenId("</s>")].filter((x): x is number => x !== undefined);
    return {
      config: readMistralConfig(configFile), weights: new MistralWeights(WeightSet.open(te.weights)),
      render: (p) => tok.tokenize(tok.renderChat(p)), decode: (ids) => tok.decode(ids), plain: (t) => tok.tokenizePlain(t), stop,
    };
  }
  const tok = await PromptTokenizer.load(ck.tokenizer);
  // Qwen3 chats end a turn with <|im_end|>; the base model's eos (<|endoftext|>) ends it too.
  const stop = [...eos, tok.tokenId("<|im_end|>"), tok.eosToken !== undefined ? tok.tokenId(tok.eosToken) : undefined].filter((x): x is number => x !== undefined);
  return {
    config: readQwen3Config(configFile), weights: new Qwen3Weights(WeightSet.open(te.weights)),
    render: (p) => tok.tokenize(tok.renderMessages([{ role: "system", content: system }, { role: "user", content: p }])),
    decode: (ids) => tok.decode(ids), plain: (t) => tok.tokenize(t), stop,
  };
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
        maxNewTokens: UPSAMPLE_MAX_NEW_TOKENS, temperature: UPSAMPLE_TEMPERATURE, seed: (opts.seed ?? 0) + i, stopTokens: m.stop, ...opts.sampling,
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
