// The pipeline stays readable: no function in src/pipeline/ runs past MAX_LINES lines, and
// the pipeline does not reach up into LoRA or quantization code (the loader, src/loaders/,
// assembles those and hands the pipeline plain component factories).

import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import ts from "typescript";
import { repoRoot } from "./golden.js";

const MAX_LINES = 60;
const PIPELINE = path.join(repoRoot, "src", "pipeline");

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => f.endsWith(".ts")).map((f) => path.join(dir, f));
}

/** Every function-like node of a file with its name and length in lines (first to last line, inclusive). */
export function functionLengths(file: string, text = fs.readFileSync(file, "utf8")): { name: string; lines: number }[] {
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true);
  const out: { name: string; lines: number }[] = [];
  const visit = (node: ts.Node) => {
    if (ts.isFunctionLike(node) && "body" in node && node.body) {
      const first = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line;
      const last = sf.getLineAndCharacterOfPosition(node.getEnd()).line;
      const name = (node as ts.FunctionLikeDeclaration).name?.getText(sf) ?? `(anonymous at line ${first + 1})`;
      out.push({ name: `${path.basename(file)}:${name}`, lines: last - first + 1 });
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

test("the length measure counts a function's lines and can exceed the limit", () => {
  const body = Array.from({ length: MAX_LINES + 5 }, (_, i) => `  const v${i} = ${i};`).join("\n");
  const lengths = functionLengths("probe.ts", `function long() {\n${body}\n}\nconst short = () => 1;\n`);
  assert.deepEqual(lengths.map((l) => l.lines), [MAX_LINES + 7, 1]);
});

test(`every function in src/pipeline/ is at most ${MAX_LINES} lines`, () => {
  const all = sourceFiles(PIPELINE).flatMap((f) => functionLengths(f));
  assert.ok(all.length > 50, `found only ${all.length} functions: is ${PIPELINE} the pipeline folder?`);
  const long = all.filter((l) => l.lines > MAX_LINES).map((l) => `${l.name} (${l.lines} lines)`);
  assert.deepEqual(long, [], `split these functions: ${long.join(", ")}`);
});

test("generate() reads in one screen (at most 25 lines)", () => {
  const gen = functionLengths(path.join(PIPELINE, "flux2.ts")).find((l) => l.name === "flux2.ts:generate");
  assert.ok(gen, "Flux2Pipeline.generate not found");
  assert.ok(gen.lines <= 25, `generate() is ${gen.lines} lines`);
});

test("src/pipeline/ imports nothing from src/lora/ or src/quant/", () => {
  const bad: string[] = [];
  for (const f of sourceFiles(PIPELINE)) {
    const sf = ts.createSourceFile(f, fs.readFileSync(f, "utf8"), ts.ScriptTarget.ES2022, false);
    for (const st of sf.statements) {
      const spec = (ts.isImportDeclaration(st) || ts.isExportDeclaration(st)) && st.moduleSpecifier && ts.isStringLiteral(st.moduleSpecifier) ? st.moduleSpecifier.text : null;
      if (spec && /^\.\.\/(lora|quant)\//.test(spec)) bad.push(`${path.basename(f)} → ${spec}`);
    }
  }
  assert.deepEqual(bad, []);
});

test("BFL's hosted models (pro, max, flex) are not in src/pipeline/: their cards live with the provider", async () => {
  const hosted = /["'](pro|max|flex)["']|flux-2-(pro|max|flex)/;
  const found = sourceFiles(PIPELINE).filter((f) => hosted.test(fs.readFileSync(f, "utf8").replace(/\/\/.*$/gm, "")));
  assert.deepEqual(found.map((f) => path.basename(f)), []);
  const { VARIANTS } = await import("../src/pipeline/variants.js");
  assert.deepEqual(VARIANTS.filter((v: string) => ["pro", "max", "flex"].includes(v)), []);
  const { hostedCapabilities } = await import("../src/server/providers/hosted.js");
  for (const v of ["pro", "max", "flex"] as const) assert.equal(hostedCapabilities(v).maxReferences, 8);
});
