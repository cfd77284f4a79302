// Prompt tokenisation for the FLUX.2 [dev] text encoder (Mistral Small 3.x), docs/FLUX2-spec.md §2.2.
//
// Mirrors diffusers `Flux2Pipeline._get_mistral_3_small_prompt_embeds` / `format_text_input` (BFL
// `Mistral3SmallEmbedder`): every "[IMG]" is removed from the prompt, the chat
//   system: [{type: "text", text: DEV_SYSTEM_MESSAGE}], user: [{type: "text", text: prompt}]
// is rendered with the processor's chat template (add_generation_prompt = false), tokenised, then
// truncated and padded to 512 tokens — LEFT padding with `<pad>` by default (LlamaTokenizer(Fast)'s
// class default; a tokenizer_config.json `padding_side` wins).
//
// Why not `PromptTokenizer` (tokenizer.ts): it renders a one-turn *user* chat with the generation
// prompt on, requires a chat template and a pad_token entry, pads on the right by default and
// tokenises with special tokens added. The dev chat needs a system turn with list-of-blocks content,
// the generation prompt off, BOS handled as transformers' processor does, a left-padding default and
// a documented fallback when the folder has no template. This class is its sibling, built on the same
// libraries (@huggingface/tokenizers for the BPE, @huggingface/jinja for the template) and returning
// the same `EncodedPrompts`.
//
// BOS: the template itself emits `bos_token`; transformers' `ProcessorMixin.apply_chat_template` then
// tokenises with add_special_tokens = False when the rendered text starts with the BOS string, so the
// result holds exactly one `<s>` (docs/FLUX2-spec.md §2.2 [verify]). The same rule is applied here.

import * as fs from "../platform/fs_promises.js";
import * as path from "../platform/path.js";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { TokenizerLoadError, checkLength, defaultTemplate, encodeBatch, parseTemplate, tokenContent, type EncodedPrompts, type PaddingSide } from "./tokenizer.js";

/**
 * The FLUX.2 [dev] system message, byte-exact: 168 characters, one "\n" after "object" (the classic
 * diffusers pipeline and BFL; diffusers' modular pipeline has a space there — docs/FLUX2-spec.md §2.2).
 */
export const DEV_SYSTEM_MESSAGE =
  "You are an AI that reasons about image descriptions. You give structured responses focusing on object relationships, object\n" +
  "attribution and actions without speculation.";

/** SHA-256 (hex) of DEV_SYSTEM_MESSAGE's UTF-8 bytes, from the spec. */
export const DEV_SYSTEM_MESSAGE_SHA256 = "d43d93082f24034d9c7f4e5b65cdeceb1e082c64c9cf95dfae5be89c31e1320d";

/** `max_sequence_length` of the dev pipeline. */
export const DEV_MAX_LENGTH = 512;

/**
 * transformers' `clean_up_tokenization` (PreTrainedTokenizerBase), which diffusers' upsample_prompt asks
 * for with clean_up_tokenization_spaces=True: drops the space before . ? ! , and in English
 * contractions. Hand-written because @huggingface/tokenizers' decode has no such step (it is
 * transformers' Python, not the tokenizer's); the replacement list is transformers', in its order.
 */
export function cleanUpTokenizationSpaces(text: string): string {
  return text
    .replaceAll(" .", ".").replaceAll(" ?", "?").replaceAll(" !", "!").replaceAll(" ,", ",")
    .replaceAll(" ' ", "'").replaceAll(" n't", "n't").replaceAll(" 'm", "'m").replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve").replaceAll(" 're", "'re");
}

/** Removes every "[IMG]" (the processor would otherwise count image placeholders and fail after truncation). */
export function removeImageTokens(prompt: string): string {
  return prompt.split("[IMG]").join("");
}

export interface TextBlock {
  type: "text";
  text: string;
}

export interface ChatMessage {
  role: "system" | "user";
  content: TextBlock[];
}

/** diffusers `format_text_input` for one prompt: system turn, then the cleaned user prompt. */
export function devMessages(prompt: string, systemMessage: string = DEV_SYSTEM_MESSAGE): ChatMessage[] {
  return [
    { role: "system", content: [{ type: "text", text: systemMessage }] },
    { role: "user", content: [{ type: "text", text: removeImageTokens(prompt) }] },
  ];
}

/**
 * The Mistral Small 3.x chat template's text-only rendering of the dev chat, used when the tokenizer
 * folder ships no template: `<s>[SYSTEM_PROMPT]{system}[/SYSTEM_PROMPT][INST]{prompt}[/INST]`.
 */
export function renderDevChatBuiltin(prompt: string, systemMessage: string = DEV_SYSTEM_MESSAGE, bosToken = "<s>"): string {
  return `${bosToken}[SYSTEM_PROMPT]${systemMessage}[/SYSTEM_PROMPT][INST]${removeImageTokens(prompt)}[/INST]`;
}

/** Where the chat template came from. */
export type TemplateSource = "chat_template.jinja" | "chat_template.json" | "tokenizer_config.json" | "builtin";

export interface MistralPromptOptions {
  /** Override the padding side (default: tokenizer_config.json, else the tokenizer class default). */
  paddingSide?: PaddingSide;
  /** Replace the system message (default DEV_SYSTEM_MESSAGE). */
  systemMessage?: string;
  /** Ignore the folder's chat template and use the documented form. */
  builtinTemplate?: boolean;
}

type Config = Record<string, unknown>;

const SPECIAL_TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"] as const;

export class MistralPromptTokenizer {
  readonly dir: string;
  readonly padToken: string;
  readonly padId: number;
  readonly bosToken: string | null;
  readonly paddingSide: PaddingSide;
  readonly truncationSide: PaddingSide;
  readonly templateSource: TemplateSource;
  readonly systemMessage: string;
  private readonly tokenizer: Tokenizer;
  private readonly template: Template | null;
  private readonly templateVars: Record<string, unknown>;

  private constructor(dir: string, tokenizer: Tokenizer, specials: Record<string, string>, config: Config,
                      template: { source: TemplateSource; text: string | null }, opts: MistralPromptOptions) {
    this.dir = dir;
    this.tokenizer = tokenizer;
    this.templateVars = specials;
    this.bosToken = specials.bos_token ?? null;
    this.templateSource = template.source;
    this.template = template.text === null ? null : parseTemplate(dir, template.text);
    this.padToken = specials.pad_token ?? "<pad>";
    const padId = tokenizer.token_to_id(this.padToken);
    if (padId === undefined) {
      throw new TokenizerLoadError(
        `${dir}: pad token ${JSON.stringify(this.padToken)} is not in the vocabulary of tokenizer.json ` +
          `(set "pad_token" in tokenizer_config.json; Mistral's Tekken tokenizer uses "<pad>")`,
      );
    }
    this.padId = padId;
    if (opts.paddingSide !== undefined && opts.paddingSide !== "left" && opts.paddingSide !== "right") {
      throw new RangeError(`paddingSide must be "left" or "right", got ${JSON.stringify(opts.paddingSide)}`);
    }
    this.paddingSide = opts.paddingSide ?? defaultPaddingSide(dir, config);
    this.truncationSide = readSide(dir, config, "truncation_side") ?? "right";
    this.systemMessage = opts.systemMessage ?? DEV_SYSTEM_MESSAGE;
  }

  /**
   * Loads `tokenizer.json`, `tokenizer_config.json` (optional), `special_tokens_map.json` (optional)
   * and the chat template: `chat_template.jinja`, else `chat_template.json` (processor format),
   * else tokenizer_config.json's `chat_template`, else the documented built-in form.
   */
  static async load(dir: string, opts: MistralPromptOptions = {}): Promise<MistralPromptTokenizer> {
    const tokenizerJson = await readJson(dir, "tokenizer.json", true);
    const config = (await readJson(dir, "tokenizer_config.json", false)) ?? {};
    const specialMap = (await readJson(dir, "special_tokens_map.json", false)) ?? {};
    const template = opts.builtinTemplate ? { source: "builtin" as const, text: null } : await findChatTemplate(dir, config);
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(tokenizerJson!, config);
    } catch (e) {
      throw new TokenizerLoadError(
        `${path.join(dir, "tokenizer.json")}: the tokenizer could not be built (${(e as Error).message}); ` +
          `make sure the folder holds an unmodified Hugging Face tokenizer`,
      );
    }
    const specials: Record<string, string> = {};
    for (const key of SPECIAL_TOKEN_KEYS) {
      const content = tokenContent(config[key]) ?? tokenContent(specialMap[key]);
      if (content !== null) specials[key] = content;
    }
    // LlamaTokenizer(Fast) defaults, when neither file names them and the vocabulary has them.
    for (const [key, tok] of [["bos_token", "<s>"], ["eos_token", "</s>"], ["unk_token", "<unk>"]] as const) {
      if (specials[key] === undefined && tokenizer.token_to_id(tok) !== undefined) specials[key] = tok;
    }
    return new MistralPromptTokenizer(dir, tokenizer, specials, config, template, opts);
  }

  /**
   * The dev chat for one prompt ("[IMG]" removed) rendered as the processor does, not tokenised.
   * `generationPrompt`: the template's add_generation_prompt (false when encoding a prompt, true
   * for prompt upsampling, as diffusers' Flux2Pipeline.upsample_prompt). Mistral Small's template
   * adds nothing for it; the built-in form ends at [/INST] either way.
   */
  renderChat(prompt: string, generationPrompt = false): string {
    if (this.template === null) return renderDevChatBuiltin(prompt, this.systemMessage, this.bosToken ?? "");
    try {
      return this.template.render({
        ...this.templateVars,
        messages: devMessages(prompt, this.systemMessage),
        add_generation_prompt: generationPrompt,
      });
    } catch (e) {
      throw new Error(`${this.dir}: the chat template (${this.templateSource}) failed to render the dev chat: ${(e as Error).message}`);
    }
  }

  /**
   * Token ids of a rendered chat: special tokens are added only when the text does not already start
   * with the BOS string (transformers ProcessorMixin.apply_chat_template), so there is one BOS.
   */
  tokenize(rendered: string): number[] {
    const startsWithBos = this.bosToken !== null && this.bosToken !== "" && rendered.startsWith(this.bosToken);
    return this.tokenizer.encode(rendered, { add_special_tokens: !startsWithBos }).ids;
  }

  /** Token ids of plain text without any special token (e.g. "yes"). */
  tokenizePlain(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  /** Generated ids back to text, special tokens dropped (transformers' skip_special_tokens). */
  decode(ids: number[]): string {
    return this.tokenizer.decode(ids, { skip_special_tokens: true });
  }

  /** The id of a token string (e.g. "</s>"), or undefined when the vocabulary lacks it. */
  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token) ?? undefined;
  }

  /** Renders, tokenises, truncates and pads every prompt to exactly `maxLength` tokens (default 512). */
  encode(prompts: string[], maxLength: number = DEV_MAX_LENGTH): EncodedPrompts {
    return encodeBatch(prompts.map((p) => this.renderChat(p)), (t) => this.tokenize(t), maxLength, this);
  }

  /** Tokens of the rendered prompt before truncation or padding. */
  tokenCount(prompt: string): number {
    return this.tokenize(this.renderChat(prompt)).length;
  }

  /** Whether `encode` would cut this prompt at `maxLength` (losing its end and the closing [/INST]). */
  truncated(prompt: string, maxLength: number = DEV_MAX_LENGTH): boolean {
    checkLength(maxLength);
    return this.tokenCount(prompt) > maxLength;
  }
}

async function readText(file: string): Promise<string | null> {
  try {
    return await fs.readFile(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw e;
  }
}

async function readJson(dir: string, name: string, required: boolean): Promise<Config | null> {
  const file = path.join(dir, name);
  const text = await readText(file);
  if (text === null) {
    if (!required) return null;
    throw new TokenizerLoadError(
      `tokenizer folder ${dir} has no ${name}; point to the FLUX.2 dev checkpoint's tokenizer/ folder or download ${name} from the model repository`,
    );
  }
  try {
    const value: unknown = JSON.parse(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("not a JSON object");
    return value as Config;
  } catch (e) {
    throw new TokenizerLoadError(`${file} is not valid JSON (${(e as Error).message}); the file is damaged or incomplete, download it again`);
  }
}

async function findChatTemplate(dir: string, config: Config): Promise<{ source: TemplateSource; text: string | null }> {
  const jinja = await readText(path.join(dir, "chat_template.jinja"));
  if (jinja !== null) return { source: "chat_template.jinja", text: jinja };
  const processor = await readJson(dir, "chat_template.json", false);
  if (processor !== null) {
    const t = defaultTemplate(processor.chat_template);
    if (t === null) throw new TokenizerLoadError(`${path.join(dir, "chat_template.json")} has no "chat_template" string`);
    return { source: "chat_template.json", text: t };
  }
  const fromConfig = defaultTemplate(config.chat_template);
  if (fromConfig !== null) return { source: "tokenizer_config.json", text: fromConfig };
  return { source: "builtin", text: null };
}




function readSide(dir: string, config: Config, key: "padding_side" | "truncation_side"): PaddingSide | null {
  const value = config[key];
  if (value === undefined || value === null) return null;
  if (value !== "left" && value !== "right") {
    throw new TokenizerLoadError(`${path.join(dir, "tokenizer_config.json")}: ${key} must be "left" or "right", got ${JSON.stringify(value)}`);
  }
  return value;
}

/**
 * tokenizer_config.json's padding_side, else the class default: LlamaTokenizer / LlamaTokenizerFast
 * (and an unnamed class, the Mistral case) pad LEFT; any other named class (PreTrainedTokenizerFast,
 * …) pads right as transformers' base class does. [verify against the FLUX.2-dev tokenizer folder]
 */
function defaultPaddingSide(dir: string, config: Config): PaddingSide {
  const explicit = readSide(dir, config, "padding_side");
  if (explicit !== null) return explicit;
  const cls = typeof config.tokenizer_class === "string" ? config.tokenizer_class : null;
  if (cls === null || /llama|mistral/i.test(cls)) return "left";
  return "right";
}
