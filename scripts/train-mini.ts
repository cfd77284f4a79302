// Trains flux2-mini by running recipes/flux2-mini.json from start to end (docs/flux2-mini.md):
// build the data set, write the random initial model, train each stage with `flux2 train`
// (VAE, then transformer), train the LoRA demo, evaluate, and pack the result in bf16.
//
//   npx tsc -p tsconfig.json && node dist/scripts/train-mini.js [--recipe recipes/flux2-mini.json] [--dry-run] [--from STAGE]
//
// Every stage is resumable by flux2 train itself; --from skips the steps before a stage.

import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { readRecipe, toArgv } from "../src/mini/recipe.js";
import { packMiniModel } from "../src/mini/pack.js";

const HELP = `usage: node dist/scripts/train-mini.js [options]

  --recipe FILE     the recipe (default recipes/flux2-mini.json)
  --from STEP       start at: prepare (default), a stage name, lora, evaluate or pack
  --pack-to DIR     where the bf16 model goes (default models/flux2-mini)
  --dry-run         print the commands, run nothing
  -h, --help        this text`;

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const cli = path.join(root, "dist", "src", "cli", "main.js");

function main(argv: string[]): number {
  const { values: v } = parseArgs({
    args: argv, allowPositionals: false,
    options: { recipe: { type: "string" }, from: { type: "string" }, "pack-to": { type: "string" }, "dry-run": { type: "boolean" }, help: { type: "boolean", short: "h" } },
  });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const recipe = readRecipe(v.recipe ?? path.join(root, "recipes", "flux2-mini.json"));
  const last = recipe.stages[recipe.stages.length - 1];
  const steps: { name: string; argv: string[] | string }[] = [
    ...recipe.prepare.map((c) => ({ name: "prepare", argv: c })),
    ...recipe.stages.map((s) => ({ name: s.name, argv: [process.execPath, cli, "train", ...toArgv(s.args)] })),
    ...(recipe.lora_demo ? [{ name: "lora", argv: [process.execPath, cli, "train", ...toArgv(recipe.lora_demo.args)] }] : []),
    ...recipe.evaluate.map((c) => ({ name: "evaluate", argv: c })),
  ];
  const names = [...new Set([...steps.map((s) => s.name), "pack"])];
  const from = v.from ?? "prepare";
  if (!names.includes(from)) throw new Error(`--from must be one of ${names.join(", ")}, got "${from}"`);
  const start = from === "pack" ? steps.length : steps.findIndex((s) => s.name === from);
  for (const s of steps.slice(start)) {
    const shown = typeof s.argv === "string" ? s.argv : s.argv.slice(1).map((a) => (/[\s"'#]/.test(a) ? JSON.stringify(a) : a)).join(" ");
    console.log(`[${s.name}] ${shown}`);
    if (v["dry-run"]) continue;
    const r = typeof s.argv === "string"
      ? spawnSync(s.argv, { cwd: root, stdio: "inherit", shell: true })
      : spawnSync(s.argv[0], s.argv.slice(1), { cwd: root, stdio: "inherit" });
    if (r.status !== 0) throw new Error(`step "${s.name}" failed (exit ${r.status}); fix it and rerun with --from ${s.name}`);
  }
  const trained = path.join(root, String(last.args.out), "model");
  const packTo = v["pack-to"] ?? path.join(root, "models", "flux2-mini");
  console.log(`[pack] ${trained} → ${packTo} (bf16)`);
  if (!v["dry-run"]) {
    const bytes = packMiniModel(trained, packTo);
    console.log(`packed: ${(bytes / 1e6).toFixed(1)} MB of weights`);
  }
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (e) {
  console.error(`train-mini: ${(e as Error).message}`);
  process.exitCode = 1;
}
