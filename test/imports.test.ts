// The import graph of src/ (a lint step): arrows run one way, front ends →
// request layer → pipeline → models → backend → io, with no cycle between
// folders. The checker is also run on small made-up trees, so a break of each
// rule is shown to fail.

import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { describeCycles, folderGraph, importsOf, layerViolations, readSourceTree } from "./helpers/import_graph.js";

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "src");

test("imports: src/ folders import only down the layers, with no cycles", () => {
  const files = readSourceTree(SRC);
  assert.ok(files.size > 100, `expected the source tree under ${SRC}, found ${files.size} files`);
  const g = folderGraph(files);
  assert.deepEqual(layerViolations(g), []);
  assert.deepEqual(describeCycles(g), []);
  // The spine of the order is really used (a graph read wrongly would pass vacuously).
  for (const [a, b] of [["cli", "api"], ["server", "api"], ["api", "pipeline"], ["pipeline", "models"], ["models", "backend"], ["models", "io"]]) {
    assert.ok(g.get(a)?.has(b), `expected ${a}/ to import ${b}/`);
  }
});

test("imports: nothing in server/ imports cli/", () => {
  const g = folderGraph(readSourceTree(SRC));
  assert.equal(g.get("server")?.has("cli") ?? false, false, `server/ imports cli/: ${g.get("server")?.get("cli")?.join("; ")}`);
});

test("imports: static, type-only, re-export and dynamic imports are all read", () => {
  const text = [
    `import { a } from "../models/a.js";`,
    `import type { B } from "../backend/b.js";`,
    `export { c } from "./c.js";`,
    `const d = await import("../io/d.js");`,
    `import sharp from "sharp";`,
  ].join("\n");
  assert.deepEqual(importsOf("pipeline/x.ts", text), ["models/a.ts", "backend/b.ts", "pipeline/c.ts", "io/d.ts"]);
});

test("imports: the checker fails on an upward arrow, a cycle and an unplaced folder", () => {
  const bad = new Map<string, string>([
    ["server/job.ts", `import { expandCanvas } from "../cli/edit.js";`], // up: server → cli
    ["cli/edit.ts", `import { x } from "../server/job.js";`],
    ["models/qwen3.ts", `import { Q } from "../quant/format.js";`], // up, and a cycle with quant
    ["quant/format.ts", `import type { W } from "../models/qwen3.js";`],
    ["newthing/a.ts", `import { p } from "../pipeline/p.js";`],
  ]);
  const g = folderGraph(bad);
  const layers = layerViolations(g);
  assert.ok(layers.some((p) => p.startsWith("server/ → cli/ points up")), layers.join("\n"));
  assert.ok(layers.some((p) => p.startsWith("models/ → quant/ points up")), layers.join("\n"));
  assert.ok(layers.some((p) => p.startsWith("newthing/ has no place")), layers.join("\n"));
  const cycles = describeCycles(g);
  assert.equal(cycles.length, 2, cycles.join("\n"));
  assert.ok(cycles.some((c) => c.includes("models/ → quant/") && c.includes("quant/ → models/")), cycles.join("\n"));
  // And a clean made-up tree passes.
  const good = folderGraph(new Map([["cli/a.ts", `import "../api/b.js";`], ["api/b.ts", `import "../pipeline/c.js";`], ["pipeline/c.ts", ""]]));
  assert.deepEqual([...layerViolations(good), ...describeCycles(good)], []);
});

test("imports: the studio takes only types from src/, and only from files that touch neither Node nor the models", () => {
  const studio = path.resolve(SRC, "..", "studio", "src");
  const fromSrc: string[] = [];
  for (const f of fs.readdirSync(studio, { recursive: true }).map(String).filter((n) => /\.tsx?$/.test(n))) {
    const text = fs.readFileSync(path.join(studio, f), "utf8");
    for (const m of text.matchAll(/^import\s+(type\s+)?[^;]*?from\s+"(\.\.\/)+src\/([^"]+)"/gm)) {
      assert.ok(m[1], `studio/src/${f}: imports a value from src/${m[3]} (only \`import type\` keeps Node code out of the bundle)`);
      fromSrc.push(m[3]);
    }
  }
  // The request schema is the studio's contract with the server; it must stay importable by a browser-only tsconfig.
  assert.ok(fromSrc.includes("api/request_schema"), `expected the studio to type its request with src/api/request_schema: ${fromSrc.join(", ")}`);
  const files = readSourceTree(SRC);
  for (const target of new Set(fromSrc)) {
    const seen = new Set<string>();
    const visit = (rel: string) => {
      if (seen.has(rel)) return;
      seen.add(rel);
      const text = files.get(rel);
      assert.ok(text !== undefined, `src/${rel} is not in the source tree`);
      assert.doesNotMatch(text!, /from\s+"node:/, `src/${rel} (reached from the studio through src/${target}) imports a Node module`);
      for (const dep of importsOf(rel, text!)) visit(dep);
    };
    visit(`${target}.ts`);
    assert.ok(![...seen].some((r) => r.startsWith("models/")), `src/${target} reaches the models: ${[...seen].join(", ")}`);
  }
});
