// Citations of the FLUX.2 specification point at the copy inside the repository
// (docs/FLUX2-spec.md), and every cited section exists there.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { repoRoot } from "./golden.js";

const SPEC = "docs/FLUX2-spec.md";
const SELF = path.join("test", "spec_refs.test.ts"); // its own examples cite on purpose

function files(dir: string, out: string[] = []): string[] {
  for (const e of fs.readdirSync(path.join(repoRoot, dir), { withFileTypes: true })) {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== "node_modules" && e.name !== "dist") files(rel, out);
    } else if (/\.(ts|tsx|md|py|mjs)$/.test(e.name) && rel !== SPEC && rel !== SELF) out.push(rel);
  }
  return out;
}

/** Section numbers cited on lines that contain "§": those without the spec's path are returned as bad. */
export function specCitations(text: string, file: string): { sections: string[]; bad: string[] } {
  const sections: string[] = [], bad: string[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.includes("§")) return;
    if (!line.includes(SPEC)) bad.push(`${file}:${i + 1}: ${line.trim()}`);
    for (const m of line.matchAll(/§(\d+(?:\.\d+)?)/g)) sections.push(m[1]);
  });
  return { sections, bad };
}

test("the citation check finds a bare section reference", () => {
  assert.deepEqual(specCitations("// see spec §4.2\n// docs/FLUX2-spec.md §5.1, §5.2", "x.ts"), { sections: ["4.2", "5.1", "5.2"], bad: ["x.ts:1: // see spec §4.2"] });
});

test("every § citation names docs/FLUX2-spec.md and a section it has", () => {
  const spec = fs.readFileSync(path.join(repoRoot, SPEC), "utf8");
  const headings = new Set([...spec.matchAll(/^#{2,3} (\d+(?:\.\d+)?)[. ]/gm)].map((m) => m[1]));
  assert.ok(headings.has("6.3") && headings.has("10"), "the spec's section headings were not found");
  const all = ["src", "test", "scripts", "studio", "docs"].flatMap((d) => files(d)).concat("README.md");
  let cited = 0;
  const bad: string[] = [];
  for (const f of all) {
    const { sections, bad: b } = specCitations(fs.readFileSync(path.join(repoRoot, f), "utf8"), f);
    bad.push(...b, ...sections.filter((s) => !headings.has(s)).map((s) => `${f}: §${s} is not a section of ${SPEC}`));
    cited += sections.length;
  }
  assert.ok(cited > 20, `only ${cited} citations found`);
  assert.deepEqual(bad, []);
});
