// flux2 eval: the flux2-mini quality benchmark (src/eval/run.ts) against any model folder.

import { parseArgs } from "node:util";
import { InvalidRequestError } from "../util/errors.js";
import { GUIDANCE_RANGE, STEPS_RANGE } from "../pipeline/variants.js";
import { formatReport, runEval } from "../eval/run.js";
import { intOption, logger, numOption, parseLoraArg } from "./common.js";

const HELP = `usage: flux2 eval --model DIR [options]

Generates the flux2-mini evaluation prompts with a model and prints four numbers
(docs/flux2-mini.md explains each):
  hex-colour adherence  held-out hex colours, "a #RRGGBB circle on a white
                        background": shape mean colour within ΔE 15 (CIELAB) of
                        the hex code, and a white background
  layout adherence      held-out shape/position pairs: the named shape at the
                        named position
  emoji retrieval       100 emoji names: the named emoji among the 5 training
                        emoji nearest the picture (16×16 CIELAB thumbnails)
  LoRA style            fraction of pixels in the style set's palette (with
                        --lora, also without it)

Options:
  --model DIR           a FLUX.2 diffusers folder (required)
  --lora FILE[:S]       apply a LoRA (repeatable)
  --size PX             image side (default: the folder's flux2ts.resolution, else 64)
  --steps N             denoising steps (default: the model's)
  --guidance G          guidance scale (default: the model's)
  --seed S              case i uses seed S+i (default 0)
  --max-sequence-length N  text tokens (default: the folder's
                        flux2ts.max_sequence_length, else 512)
  --hex N --layout N --emoji N --style N
                        cases per measure (default: all: 72, 30, 100, 10; 0 skips)
  --batch N             images per pipeline call (default 8)
  --vae-ceiling         also score the ideal pictures after a round trip through
                        the model's VAE: the most any transformer could reach
  --out-dir DIR         also write every generated picture
  --threads N           ONNX Runtime intra-op threads (default: one per core; 1 keeps a
                        shared machine usable)
  --json                print the report (with every case) as JSON
  --quiet               no progress output
  -h, --help            this text`;

export async function runEvalCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv, allowPositionals: false,
    options: {
      model: { type: "string" }, lora: { type: "string", multiple: true }, size: { type: "string" }, steps: { type: "string" },
      guidance: { type: "string" }, seed: { type: "string" }, "max-sequence-length": { type: "string" },
      hex: { type: "string" }, layout: { type: "string" }, emoji: { type: "string" }, style: { type: "string" },
      batch: { type: "string" }, "vae-ceiling": { type: "boolean" }, "out-dir": { type: "string" }, threads: { type: "string" }, json: { type: "boolean" }, quiet: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  if (!v.model) throw new InvalidRequestError("--model DIR is required (see flux2 eval --help)");
  const size = intOption(v.size, "size", 32, 1024);
  if (size !== undefined && size % 16 !== 0) throw new InvalidRequestError(`--size must be a multiple of 16, got ${size}`);
  const threads = intOption(v.threads, "threads", 1, 1024);
  const report = await runEval({
    model: v.model, loras: (v.lora ?? []).map(parseLoraArg), size,
    steps: intOption(v.steps, "steps", STEPS_RANGE.min, STEPS_RANGE.max), guidance: numOption(v.guidance, "guidance", GUIDANCE_RANGE.min, GUIDANCE_RANGE.max),
    seed: intOption(v.seed, "seed", 0, Number.MAX_SAFE_INTEGER), maxSequenceLength: intOption(v["max-sequence-length"], "max-sequence-length", 1, 4096),
    limits: {
      hex: intOption(v.hex, "hex", 0, 1000), layout: intOption(v.layout, "layout", 0, 1000),
      emoji: intOption(v.emoji, "emoji", 0, 1000), style: intOption(v.style, "style", 0, 1000),
    },
    batch: intOption(v.batch, "batch", 1, 64), vaeCeiling: v["vae-ceiling"], outDir: v["out-dir"], threads, log: logger(v.quiet || v.json),
  });
  console.log(v.json ? JSON.stringify(report, null, 2) : formatReport(report));
  return 0;
}
