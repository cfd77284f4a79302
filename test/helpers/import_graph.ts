// The import graph of src/ between top-level folders, and the rules it must keep:
// arrows run one way, front ends → request layer (api/) → pipeline → models →
// backend → io, and no two folders import each other, directly or round a loop.
//
// Imports are read with the TypeScript compiler's own pre-processor
// (ts.preProcessFile), so static, `import type`, re-exports and dynamic import()
// all count; a type-only import is a dependency of the design too.

import * as fs from "node:fs";
import * as path from "node:path";
import ts from "typescript";

/**
 * Layers from the top. A folder may import folders of its own tier or below,
 * never above; within a tier the cycle check keeps arrows one way. The spine is
 * the order (cli/server → api → pipeline → models → backend → io); the
 * other folders sit where what they import and who imports them puts them.
 */
export const TIERS: readonly (readonly string[])[] = [
  ["cli", "(root)", "browser"], // the flux2 command (it starts the server: `flux2 serve`), src/index.ts; the browser bundle's front door
  ["server", "eval"], // the HTTP server; the evaluation runner
  ["mini"], // the flux2-mini recipe (data, model, training plan)
  ["bench"], // benchmarks and probes (they time the lower layers)
  ["api", "storyboard"], // the request layer: one GenerationRequest → pipeline options → written images; boards → requests
  ["moderation", "provenance", "conformance", "hub"],
  ["train"],
  ["loaders"], // assembling a pipeline from files: LoRAs, quantization (branch `pipeline` creates it)
  ["pipeline"],
  ["text", "lora", "quant"],
  ["models"],
  ["backend"],
  ["onnx"],
  ["io", "util"],
  ["platform"], // node:* for Node, in-memory files and POSIX paths for the browser bundle (the isomorphic layers import only this)
];

export type FolderGraph = Map<string, Map<string, string[]>>; // from → to → "file: specifier" examples

/** Top-level folder of a file under src/ ("(root)" for src/index.ts). */
export function folderOf(srcRelative: string): string {
  const parts = srcRelative.split(/[\\/]/);
  return parts.length > 1 ? parts[0] : "(root)";
}

/** Every .ts file under `srcDir`, as paths relative to it. */
export function sourceFiles(srcDir: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".ts") && !e.name.endsWith(".d.ts")) out.push(path.relative(srcDir, p));
    }
  };
  walk(srcDir);
  return out.sort();
}

/** Relative imports of one source text, resolved to src-relative paths (".js" specifiers name ".ts" files). */
export function importsOf(srcRelative: string, text: string): string[] {
  const info = ts.preProcessFile(text, true, true);
  return info.importedFiles.map((f) => f.fileName).filter((s) => s.startsWith("."))
    .map((s) => path.normalize(path.join(path.dirname(srcRelative), s)).replace(/\.js$/, ".ts"));
}

/** Folder → folder edges from files (src-relative path → source text). */
export function folderGraph(files: Map<string, string>): FolderGraph {
  const g: FolderGraph = new Map();
  for (const [file, text] of files) {
    const from = folderOf(file);
    for (const target of importsOf(file, text)) {
      if (target.startsWith("..")) continue; // outside src/ (none today; package.json for the version would be one)
      const to = folderOf(target);
      if (to === from) continue;
      const edges = g.get(from) ?? new Map<string, string[]>();
      g.set(from, edges);
      edges.set(to, [...(edges.get(to) ?? []), `${file} imports ${target}`]);
    }
  }
  return g;
}

export function readSourceTree(srcDir: string): Map<string, string> {
  return new Map(sourceFiles(srcDir).map((f) => [f, fs.readFileSync(path.join(srcDir, f), "utf8")]));
}

/** Arrows that point up the tiers, or touch a folder with no tier (a new folder must be placed). */
export function layerViolations(g: FolderGraph, tiers: readonly (readonly string[])[] = TIERS): string[] {
  const tierOf = new Map<string, number>();
  tiers.forEach((t, i) => t.forEach((f) => tierOf.set(f, i)));
  const problems: string[] = [];
  for (const [from, edges] of g) {
    for (const [to, where] of edges) {
      const a = tierOf.get(from), b = tierOf.get(to);
      if (a === undefined || b === undefined) {
        problems.push(`${a === undefined ? from : to}/ has no place in the layer order (test/helpers/import_graph.ts TIERS): add it (${where[0]})`);
      } else if (b < a) {
        problems.push(`${from}/ → ${to}/ points up the layers (${from} is below ${to}): ${where.join("; ")}`);
      }
    }
  }
  return problems;
}

/** Cycles between folders (each strongly connected group of two or more folders, with one edge of it as an example). */
export function folderCycles(g: FolderGraph): string[][] {
  // Tarjan's strongly connected components; small graph, recursion is fine.
  const index = new Map<string, number>(), low = new Map<string, number>(), onStack = new Set<string>();
  const stack: string[] = [];
  const groups: string[][] = [];
  let next = 0;
  const nodes = new Set<string>([...g.keys(), ...[...g.values()].flatMap((e) => [...e.keys()])]);
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of g.get(v)?.keys() ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const group: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        group.push(w);
      } while (w !== v);
      if (group.length > 1) groups.push(group.sort());
    }
  };
  for (const n of [...nodes].sort()) if (!index.has(n)) visit(n);
  return groups;
}

/** Each cycle as a readable line: the arrows of the group, each with one import that makes it. */
export function describeCycles(g: FolderGraph): string[] {
  return folderCycles(g).map((group) => {
    const arrows = group.flatMap((a) => group.filter((b) => g.get(a)?.has(b)).map((b) => `${a}/ → ${b}/ (${g.get(a)!.get(b)![0]})`));
    return `folders import each other: ${arrows.join(", ")}`;
  });
}
