// Reading recipes/flux2-mini.json and turning its stages into command lines, so that training
// flux2-mini is one command (scripts/train-mini.ts) and the docs' commands cannot drift from it.

import * as fs from "node:fs";

export type ArgValue = string | number | boolean | string[];

export interface Stage {
  name: string;
  what?: string;
  budget_minutes?: number;
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
