// Trains flux2-mini by running recipes/flux2-mini.json from start to end (docs/flux2-mini.md):
// build the data set, write the random initial model, train each stage with `flux2 train`
// (VAE, then transformer), train the LoRA demo, evaluate, and pack the result in bf16.
//
//   npx tsc -p tsconfig.json && node dist/scripts/train-mini.js [--recipe recipes/flux2-mini.json] [--dry-run] [--from STAGE]
//
// Every stage is resumable by flux2 train itself; --from skips the steps before a stage. A stage
// marked "with_next" runs at the same time as the next one; "vae_from" gives a stage another
// stage's VAE (see src/mini/recipe.ts).

import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { readRecipe, recipeBudgetMinutes, runGroups, toArgv } from "../src/mini/recipe.js";
import { packMiniModel } from "../src/mini/pack.js";

const HELP = `usage: node dist/scripts/train-mini.js [options]

  --recipe FILE     the recipe (default recipes/flux2-mini.json)
  --from STEP       start at: prepare (default), a stage name, lora, evaluate or pack
  --pack-to DIR     where the bf16 model goes (default models/flux2-mini)
  --dry-run         print the commands, run nothing
  -h, --help        this text`;

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const cli = path.join(root, "dist", "src", "cli", "main.js");

interface Step {
  name: string;
  argv: string[] | string;
  /** Start together with the next step and wait for both (a recipe stage's "with_next"). */
  withNext?: boolean;
  /** Before running: replace ARGS.model/vae with this folder's vae/ (a recipe stage's "vae_from"). */
  vaeFrom?: { from: string; into: string };
  /** The stage's run folder (ARGS.out); a pair's output goes to OUT.log beside it. */
  out?: string;
}

const shown = (s: Step) => (typeof s.argv === "string" ? s.argv : s.argv.slice(1).map((a) => (/[\s"'#]/.test(a) ? JSON.stringify(a) : a)).join(" "));

/** Runs one step to its end; resolves with its exit status. A pair's output goes to a log file each, so the two progress streams do not interleave. */
function run(s: Step, log?: string): Promise<number | null> {
  const out = log ? fs.openSync(log, "w") : "inherit";
  const child = typeof s.argv === "string"
    ? spawn(s.argv, { cwd: root, stdio: ["ignore", out, out], shell: true })
    : spawn(s.argv[0], s.argv.slice(1), { cwd: root, stdio: ["ignore", out, out] });
  return new Promise((resolve) => {
    // A child that fails to start emits "error" and may still emit "close": finish once.
    let finished = false;
    const done = (code: number | null) => {
      if (finished) return;
      finished = true;
      if (typeof out === "number") fs.closeSync(out);
      resolve(code);
    };
    child.once("error", () => done(null));
    child.once("close", done);
  });
}

/** The VAE a stage is to start from: the folder's own vae/ is replaced (unlinked first: trained folders hard-link unchanged files to their base). */
function swapVae(s: Step): void {
  if (!s.vaeFrom) return;
  const from = path.resolve(root, s.vaeFrom.from, "vae"), into = path.resolve(root, s.vaeFrom.into, "vae");
  if (!fs.existsSync(path.join(from, "config.json"))) throw new Error(`step "${s.name}": ${from} has no VAE (config.json) to take`);
  fs.rmSync(into, { recursive: true, force: true });
  fs.cpSync(from, into, { recursive: true });
}

async function main(argv: string[]): Promise<number> {
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
  const steps: Step[] = [
    ...recipe.prepare.map((c) => ({ name: "prepare", argv: c })),
    ...recipe.stages.map((s) => ({
      name: s.name, argv: [process.execPath, cli, "train", ...toArgv(s.args)], withNext: s.with_next === true,
      vaeFrom: s.vae_from ? { from: s.vae_from, into: String(s.args.model) } : undefined, out: String(s.args.out),
    })),
    ...(recipe.lora_demo ? [{ name: "lora", argv: [process.execPath, cli, "train", ...toArgv(recipe.lora_demo.args)] }] : []),
    ...recipe.evaluate.map((c) => ({ name: "evaluate", argv: c })),
  ];
  const names = [...new Set([...steps.map((s) => s.name), "pack"])];
  const from = v.from;
  if (from !== undefined && !names.includes(from)) throw new Error(`--from must be one of ${names.join(", ")}, got "${from}"`);
  const start = from === undefined ? 0 : from === "pack" ? steps.length : steps.findIndex((s) => s.name === from);
  const todo = steps.slice(start);
  console.log(`recipe ${recipe.name}: stages budgeted ${recipeBudgetMinutes(recipe)} min of wall time (a with_next pair counts once)`);
  const began = Date.now();
  // Always in minutes and seconds (0m03s, 81m03s), unlike the trainer's adaptive ETA, so that stage times line up in the log.
  const since = (t: number) => { const sec = Math.round((Date.now() - t) / 1000); return `${Math.floor(sec / 60)}m${String(sec % 60).padStart(2, "0")}s`; };
  for (const pair of runGroups(todo, (s) => s.withNext)) {
    for (const [k, p] of pair.entries()) {
      if (p.vaeFrom) console.log(`[${p.name}] vae/ from ${p.vaeFrom.from} into ${p.vaeFrom.into}`);
      const partner = pair.length > 1 ? pair[1 - k] : undefined;
      console.log(`[${p.name}] ${shown(p)}${partner ? `  (at the same time as [${partner.name}])` : ""}`);
    }
    if (v["dry-run"]) continue;
    for (const p of pair) swapVae(p);
    const logs = pair.length > 1 ? pair.map((p) => `${path.resolve(root, p.out ?? p.name)}.log`) : [undefined];
    if (pair.length > 1) {
      for (const l of logs) fs.mkdirSync(path.dirname(l!), { recursive: true });
      console.log(`running ${pair.map((p) => `[${p.name}]`).join(" and ")} at once; their output: ${logs.join(", ")}`);
    }
    const codes = await Promise.all(pair.map(async (p, k) => {
      const t0 = Date.now();
      const code = await run(p, logs[k]);
      if (code === 0) console.log(`[${p.name}] done in ${since(t0)} (${since(began)} since the start)`);
      return code;
    }));
    const failed = pair.findIndex((_, k) => codes[k] !== 0);
    if (failed >= 0) {
      const f = pair[failed];
      throw new Error(`step "${f.name}" failed (exit ${codes[failed]})${logs[failed] ? `; its output is in ${logs[failed]}` : ""}; fix it and rerun with --from ${f.name}`);
    }
  }
  const trained = path.resolve(root, String(last.args.out), "model");
  const packTo = v["pack-to"] ?? path.join(root, "models", "flux2-mini");
  console.log(`[pack] ${trained} → ${packTo} (bf16)`);
  if (!v["dry-run"]) {
    const bytes = packMiniModel(trained, packTo);
    console.log(`packed: ${(bytes / 1e6).toFixed(1)} MB of weights`);
  }
  return 0;
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e) => {
  console.error(`train-mini: ${(e as Error).message}`);
  process.exitCode = 1;
});
