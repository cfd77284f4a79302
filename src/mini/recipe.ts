// Reading recipes/flux2-mini.json and turning its stages into command lines, so that training
// flux2-mini is one command (scripts/train-mini.ts) and the docs' commands cannot drift from it.

import * as fs from "node:fs";
import * as path from "node:path";

export type ArgValue = string | number | boolean | string[];

export interface Stage {
  name: string;
  what?: string;
  budget_minutes?: number;
  /**
   * Run this stage at the same time as the next one (the runner waits for both). For two stages
   * that do not read each other's output and run on one thread each, such as the VAE and the text
   * encoder: on a 2-core machine the pair takes the time of the longer one.
   */
  with_next?: boolean;
  /** A model folder whose `vae/` replaces the one in `args.model` before this stage runs. */
  vae_from?: string;
  args: Record<string, ArgValue>;
}

export interface MiniRecipe {
  name: string;
  resolution: number;
  max_sequence_length: number;
  prepare: string[];
  stages: Stage[];
  lora_demo?: { what?: string; args: Record<string, ArgValue> };
  evaluate: string[];
}

export function readRecipe(file: string): MiniRecipe {
  let r: any;
  try {
    r = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new Error(`${file}: cannot read the recipe (${(e as Error).message})`);
  }
  const bad = (why: string) => new Error(`${file}: ${why}`);
  if (!Array.isArray(r.stages) || r.stages.length === 0) throw bad(`"stages" must be a non-empty list`);
  for (const s of r.stages) {
    if (typeof s.name !== "string" || !s.args || typeof s.args !== "object") throw bad(`every stage needs a "name" and an "args" object`);
    for (const k of ["model", "data", "out"]) if (typeof s.args[k] !== "string") throw bad(`stage "${s.name}" needs args.${k}`);
  }
  for (const s of r.stages) if (s.vae_from !== undefined && typeof s.vae_from !== "string") throw bad(`stage "${s.name}": "vae_from" must be a model folder path`);
  r.stages.forEach((s: Stage, i: number) => {
    if (s.with_next === undefined) return;
    if (typeof s.with_next !== "boolean") throw bad(`stage "${s.name}": "with_next" must be true or false`);
    if (!s.with_next) return;
    const next: Stage | undefined = r.stages[i + 1];
    if (!next) throw bad(`stage "${s.name}" is the last one, so it has no next stage to run with`);
    if (next.with_next) throw bad(`stages "${s.name}" and "${next.name}" both say "with_next": only two stages run at once`);
    // Compared as paths, so that runs/x/vae2 is not taken for a folder inside runs/x/vae.
    const out = path.resolve(String(s.args.out));
    const inside = (p: string) => path.resolve(p) === out || path.resolve(p).startsWith(out + path.sep);
    if ([String(next.args.model), next.vae_from ?? ""].some((p) => p && inside(p))) throw bad(`stage "${next.name}" starts from "${s.name}"'s output, so the two cannot run at the same time`);
  });
  if (!Array.isArray(r.prepare) || !Array.isArray(r.evaluate)) throw bad(`"prepare" and "evaluate" must be lists of commands`);
  return r as MiniRecipe;
}

/** `{"steps": 10, "full": true, "sample-prompt": ["a", "b"]}` → `--steps 10 --full --sample-prompt a --sample-prompt b`. */
export function toArgv(args: Record<string, ArgValue>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(args)) {
    if (v === false) continue;
    if (v === true) out.push(`--${k}`);
    else if (Array.isArray(v)) for (const x of v) out.push(`--${k}`, String(x));
    else out.push(`--${k}`, String(v));
  }
  return out;
}

/**
 * Items in the order they run: an item marked "with_next" together with the one after it, every
 * other item alone. The recipe's stages for its budget, and the runner's steps, group the same way.
 */
export function runGroups<T>(items: readonly T[], withNext: (item: T) => boolean | undefined): T[][] {
  const groups: T[][] = [];
  for (let i = 0; i < items.length; i++) groups.push(withNext(items[i]) && i + 1 < items.length ? [items[i], items[++i]] : [items[i]]);
  return groups;
}

/**
 * The wall-clock minutes the recipe's stages are budgeted: one after another, except that a
 * "with_next" pair runs at once and so counts as the longer of its two. Stages without a budget
 * count as 0.
 */
export function recipeBudgetMinutes(r: MiniRecipe): number {
  return runGroups(r.stages, (s) => s.with_next)
    .reduce((total, group) => total + Math.max(...group.map((s) => s.budget_minutes ?? 0)), 0);
}
