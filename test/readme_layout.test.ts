// The README's "How the engine is laid out" matches the tree: every path it lists exists, and
// every folder of src/ (and src/index.ts) is listed, so a new folder or a move shows up here.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { repoRoot } from "./golden.js";

/** The first-column paths of the README's layout block ("src/models/vae.ts, vae_weights.ts" gives both). */
function layoutPaths(readme: string): string[] {
  const start = readme.indexOf("## How the engine is laid out");
  assert.ok(start >= 0, 'README.md has no "## How the engine is laid out" section');
  const open = readme.indexOf("```", start), close = readme.indexOf("```", open + 3);
  const out: string[] = [];
  for (const line of readme.slice(open + 3, close).split("\n")) {
    const m = /^(\S+(?:, \S+)*)\s{2,}/.exec(line) ?? /^(\S+(?:, \S+)*)$/.exec(line);
    if (!m) continue;
    const [first, ...rest] = m[1].split(", ");
    out.push(first, ...rest.map((r) => path.posix.join(path.posix.dirname(first), r)));
  }
  return out;
}

test("every path in the README's layout exists, and every folder of src/ is in it", () => {
  const paths = layoutPaths(fs.readFileSync(path.join(repoRoot, "README.md"), "utf8"));
  assert.ok(paths.length > 20, `only ${paths.length} paths read from the layout block`);
  const missing = paths.filter((p) => !fs.existsSync(path.join(repoRoot, p)));
  assert.deepEqual(missing, [], `the README lists paths that do not exist: ${missing.join(", ")}`);
  const tops = fs.readdirSync(path.join(repoRoot, "src"), { withFileTypes: true })
    .filter((e) => e.isDirectory() || e.name === "index.ts").map((e) => `src/${e.name}${e.isDirectory() ? "/" : ""}`);
  const unlisted = tops.filter((t) => !paths.some((p) => p === t || p === t.replace(/\/$/, "") || p.startsWith(t)));
  assert.deepEqual(unlisted, [], `src/ has entries the README's layout does not mention: ${unlisted.join(", ")}`);
});
