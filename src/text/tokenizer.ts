// Prompt tokenisation for the FLUX.2 [klein] text encoder (Qwen3).
//
// Mirrors diffusers `Flux2KleinPipeline._get_qwen3_prompt_embeds`: each prompt
// is wrapped in a one-turn chat, rendered with the tokenizer folder's own chat
// template, tokenised with the folder's tokenizer.json, then truncated and padded
// to a fixed length. The BPE work is done by @huggingface/tokenizers and the
// template by @huggingface/jinja, so a real Hub tokenizer folder drops in as is.

import * as fs from "../platform/fs_promises.js";
import * as path from "../platform/path.js";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";

export type PaddingSide = "left" | "right";

export interface EncodedPrompts {
  /** The chat-template string rendered for each prompt. */
  rendered: string[];
  /** Token ids, row-major (batch, length). */
  inputIds: BigInt64Array;
  /** 1 on real tokens, 0 on padding, row-major (batch, length). */
  attentionMask: BigInt64Array;
  batch: number;
  length: number;
}

export class TokenizerLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TokenizerLoadError";
  }
}

type Config = Record<string, unknown>;

/** Special-token strings a chat template may refer to (transformers passes them all). */
const SPECIAL_TOKEN_KEYS = [
  "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
] as const;

export class PromptTokenizer {
  readonly dir: string;
  readonly padToken: string;
  readonly padId: number;
  readonly paddingSide: PaddingSide;
  readonly truncationSide: PaddingSide;
  private readonly tokenizer: Tokenizer;
  private readonly template: Template;
  private readonly templateVars: Record<string, unknown>;

  private constructor(dir: string, tokenizerJson: object, config: Config, templateText: string) {
    this.dir = dir;
    this.tokenizer = new Tokenizer(tokenizerJson, config);
    this.template = parseTemplate(dir, templateText);
    this.templateVars = specialTokenVars(config);
    this.padToken = requirePadToken(dir, config);
    this.padId = requireTokenId(dir, this.tokenizer, this.padToken);
    this.paddingSide = readSide(dir, config, "padding_side");
    this.truncationSide = readSide(dir, config, "truncation_side");
  }

  /** Loads `tokenizer.json`, `tokenizer_config.json` and, if present, `chat_template.jinja` from `dir`. */
  static async load(dir: string): Promise<PromptTokenizer> {
    const tokenizerJson = await readJson(dir, "tokenizer.json", "a Hugging Face fast-tokenizer file");
    const config = await readJson(dir, "tokenizer_config.json", "the tokenizer settings");
    const templateText = await findChatTemplate(dir, config);
    try {
      return new PromptTokenizer(dir, tokenizerJson, config, templateText);
    } catch (e) {
      if (e instanceof TokenizerLoadError) throw e;
      throw new TokenizerLoadError(
        `${path.join(dir, "tokenizer.json")}: the tokenizer could not be built (${(e as Error).message}); ` +
          `make sure the folder holds an unmodified Hugging Face tokenizer`,
      );
    }
  }

  /** The one-turn user chat rendered as the pipeline does (generation prompt on, thinking off). */
  renderChat(prompt: string): string {
    return this.template.render({
      ...this.templateVars,
      messages: [{ role: "user", content: prompt }],
      add_generation_prompt: true,
      enable_thinking: false,
    });
  }

  /** A chat of several turns (e.g. system + user, for prompt upsampling), ready for the assistant's answer. */
  renderMessages(messages: { role: "system" | "user"; content: string }[]): string {
    return this.template.render({ ...this.templateVars, messages, add_generation_prompt: true, enable_thinking: false });
  }

  /** Token ids of an already rendered string, with the tokenizer's normal special-token handling. */
  tokenize(text: string): number[] {
    return this.tokenizer.encode(text).ids;
  }

  /** Generated ids back to text, special tokens dropped (transformers' skip_special_tokens). */
  decode(ids: number[]): string {
    return this.tokenizer.decode(ids, { skip_special_tokens: true });
  }

  /** The id of a token string (e.g. "<|im_end|>"), or undefined when the vocabulary lacks it. */
  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token) ?? undefined;
  }

  /** The eos_token of tokenizer_config.json, when set. */
  get eosToken(): string | undefined {
    return this.templateVars.eos_token as string | undefined;
  }

  /** Renders, tokenises, truncates and pads every prompt to exactly `maxLength` tokens. */
  encode(prompts: string[], maxLength: number): EncodedPrompts {
    return encodeBatch(prompts.map((p) => this.renderChat(p)), (t) => this.tokenize(t), maxLength, this);
  }

  /** Tokens of the rendered prompt before truncation or padding (for a length indicator). */
  tokenCount(prompt: string): number {
    return this.tokenize(this.renderChat(prompt)).length;
  }

  /** Whether `encode` would cut this prompt (and with it the assistant header) at `maxLength`. */
  truncated(prompt: string, maxLength: number): boolean {
    checkLength(maxLength);
    return this.tokenCount(prompt) > maxLength;
  }
}

/** How a tokenizer pads and truncates to a fixed length. */
export interface PaddingRules {
  padId: number;
  paddingSide: PaddingSide;
  truncationSide: PaddingSide;
}

/**
 * Tokenize rendered prompts, truncate each to `maxLength` on the truncation
 * side and pad it with the pad id on the padding side: row-major B×L ids and
 * the attention mask (1 on tokens, 0 on padding).
 */
export function encodeBatch(rendered: string[], tokenize: (text: string) => number[], maxLength: number, rules: PaddingRules): EncodedPrompts {
  checkLength(maxLength);
  const batch = rendered.length;
  const inputIds = new BigInt64Array(batch * maxLength).fill(BigInt(rules.padId));
  const attentionMask = new BigInt64Array(batch * maxLength);
  rendered.forEach((text, b) => {
    let ids = tokenize(text);
    if (ids.length > maxLength) ids = rules.truncationSide === "right" ? ids.slice(0, maxLength) : ids.slice(ids.length - maxLength);
    const start = b * maxLength + (rules.paddingSide === "right" ? 0 : maxLength - ids.length);
    ids.forEach((id, i) => {
      inputIds[start + i] = BigInt(id);
      attentionMask[start + i] = 1n;
    });
  });
  return { rendered, inputIds, attentionMask, batch, length: maxLength };
}

export function checkLength(maxLength: number): void {
  if (!Number.isInteger(maxLength) || maxLength < 1) {
    throw new RangeError(`maxLength must be a positive integer, got ${maxLength}`);
  }
}

async function readText(file: string): Promise<string | null> {
  try {
    return await fs.readFile(file, "utf8");
  } catch (e) {
    // A missing folder reads as a missing file, so the caller names both in one message.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw e;
  }
}

async function readJson(dir: string, name: string, what: string): Promise<Config> {
  const file = path.join(dir, name);
  const text = await readText(file);
  if (text === null) {
    throw new TokenizerLoadError(
      `tokenizer folder ${dir} has no ${name} (${what}); point to the checkpoint's tokenizer/ folder ` +
        `or download ${name} from the model repository`,
    );
  }
  try {
    const value: unknown = JSON.parse(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("not a JSON object");
    return value as Config;
  } catch (e) {
    throw new TokenizerLoadError(
      `${file} is not valid JSON (${(e as Error).message}); the file is damaged or incomplete, download it again`,
    );
  }
}

// A separate chat_template.jinja wins over the config's entry, as in transformers.
async function findChatTemplate(dir: string, config: Config): Promise<string> {
  const fromFile = await readText(path.join(dir, "chat_template.jinja"));
  if (fromFile !== null) return fromFile;
  const fromConfig = defaultTemplate(config.chat_template);
  if (fromConfig !== null) return fromConfig;
  throw new TokenizerLoadError(
    `tokenizer folder ${dir} has no chat template: neither chat_template.jinja nor a "chat_template" entry ` +
      `in tokenizer_config.json; copy the model repository's chat template into the folder`,
  );
}

// Older configs store several named templates (a list of {name, template} or a map); the pipeline uses "default".
export function defaultTemplate(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const entry = value.find((t) => t?.name === "default");
    return typeof entry?.template === "string" ? entry.template : null;
  }
  if (value !== null && typeof value === "object") {
    const entry = (value as Record<string, unknown>).default;
    return typeof entry === "string" ? entry : null;
  }
  return null;
}

export function parseTemplate(dir: string, text: string): Template {
  try {
    return new Template(text);
  } catch (e) {
    throw new TokenizerLoadError(`the chat template in ${dir} does not parse: ${(e as Error).message}`);
  }
}

// Special tokens appear either as plain strings or as serialised AddedToken objects ({content, ...}).
export function tokenContent(value: unknown): string | null {
  if (typeof value === "string") return value;
  if (value !== null && typeof value === "object" && typeof (value as Config).content === "string") {
    return (value as Config).content as string;
  }
  return null;
}

function specialTokenVars(config: Config): Record<string, unknown> {
  const vars: Record<string, unknown> = {};
  for (const key of SPECIAL_TOKEN_KEYS) {
    const content = tokenContent(config[key]);
    if (content !== null) vars[key] = content;
  }
  return vars;
}

function requirePadToken(dir: string, config: Config): string {
  const pad = tokenContent(config.pad_token);
  if (pad === null) {
    throw new TokenizerLoadError(
      `${path.join(dir, "tokenizer_config.json")} sets no pad_token; padding to a fixed length needs one ` +
        `(Qwen uses "<|endoftext|>")`,
    );
  }
  return pad;
}

function requireTokenId(dir: string, tokenizer: Tokenizer, token: string): number {
  const id = tokenizer.token_to_id(token);
  if (id === undefined) {
    throw new TokenizerLoadError(`pad token ${JSON.stringify(token)} is not in the vocabulary of ${path.join(dir, "tokenizer.json")}`);
  }
  return id;
}

// Qwen2Tokenizer's class default is right for both; a config may override either.
function readSide(dir: string, config: Config, key: "padding_side" | "truncation_side"): PaddingSide {
  const value = config[key] ?? "right";
  if (value !== "left" && value !== "right") {
    throw new TokenizerLoadError(`${path.join(dir, "tokenizer_config.json")}: ${key} must be "left" or "right", got ${JSON.stringify(value)}`);
  }
  return value;
}
