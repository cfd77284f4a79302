#!/usr/bin/env node
// The `flux2` command line. Each subcommand lives in its own file and exports
// `run(argv)`; this file only dispatches and prints errors the same way.

import { runConformanceCommand } from "./conformance.js";
import { runWithTrainingHeap } from "./training_heap.js";
import { runEvalCommand } from "./eval.js";
import { runGenerateCommand } from "./generate.js";
import { runEditCommand } from "./edit.js";
import { runPullCommand } from "./pull.js";
import { runKvBenchCommand } from "./kv_bench.js";
import { runServeCommand } from "./serve.js";
import { runWorkerCommand } from "./worker.js";
import { runKeysCommand } from "./keys.js";
import { runBenchCommand } from "./bench.js";
import { runQuantizeCommand } from "./quantize.js";
import { runTrainCommand } from "./train.js";
import { runStoryboardCommand } from "./storyboard.js";
import { runWatermarkCommand } from "./watermark.js";

const COMMANDS: Record<string, { summary: string; run: (argv: string[]) => Promise<number> }> = {
  generate: { summary: "generate images from a prompt with a FLUX.2 checkpoint", run: runGenerateCommand },
  edit: { summary: "edit with reference images, img2img, inpaint (--mask) or outpaint (--expand)", run: runEditCommand },
  eval: { summary: "score a model on the flux2-mini benchmark (hex colour, layout, emoji, LoRA style)", run: runEvalCommand },
  serve: { summary: "run the HTTP API (BFL-compatible) and the web studio", run: runServeCommand },
  worker: { summary: "pull generation jobs from a shared Redis queue", run: runWorkerCommand },
  keys: { summary: "manage API keys: add, list, revoke", run: runKeysCommand },
  pull: { summary: "download a FLUX.2 repository from the Hugging Face Hub", run: runPullCommand },
  train: { summary: "fine-tune on a folder of captioned images: LoRA, --full or --vae", run: runTrainCommand },
  storyboard: { summary: "storyboard panels from a brief, named references and a shot list; contact sheet and frames", run: runStoryboardCommand },
  quantize: { summary: "write an 8-bit or 4-bit copy of a checkpoint (MatMulNBits)", run: runQuantizeCommand },
  bench: { summary: "measure speed and memory (npm run bench; --quick, --json)", run: runBenchCommand },
  "bench-kv": { summary: "measure the speed-up of KV-cached references", run: runKvBenchCommand },
  watermark: { summary: "detect the invisible watermark in images (watermark detect FILE)", run: runWatermarkCommand },
  conformance: { summary: "run a golden reference set through the engine and compare", run: runConformanceCommand },
};

function usage(): string {
  const lines = ["usage: flux2 <command> [options]", "", "commands:"];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(14)}${c.summary}`);
  lines.push("", "Run `flux2 <command> --help` for a command's options.");
  return lines.join("\n");
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === "--help" || cmd === "-h" || cmd === "help") {
    console.log(usage());
    return cmd ? 0 : 1;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    console.error(`flux2: unknown command "${cmd}"\n\n${usage()}`);
    return 2;
  }
  if (cmd === "train") {
    const code = await runWithTrainingHeap();
    if (code !== null) return code;
  }
  return c.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: Error) => {
    console.error(`flux2: ${e.message}`);
    if (process.env.FLUX2_DEBUG) console.error(e.stack);
    process.exitCode = 1;
  },
);
