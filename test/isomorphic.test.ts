// The engine is isomorphic (issue 17): io, onnx, models, pipeline and text reach Node only
// through src/platform/, whose browser twins (src/platform/browser/) the browser bundle swaps in.
// This checks both halves: no layer imports `node:*` directly, and every platform call those
// layers (and the LoRA / quantization code the pipeline pulls in) make exists in the browser twin.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
// src/loaders assembles the pipeline the browser bundle loads (src/browser/index.ts), so it is held to the same rule.
const LAYERS = ["src/io", "src/onnx", "src/models", "src/pipeline", "src/text", "src/loaders"];

function sources(dir: string): string[] {
  return fs.readdirSync(path.join(ROOT, dir), { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".ts")).map((f) => path.join(dir, f));
}

describe("isomorphic engine", () => {
  it("io, onnx, models, pipeline, text and loaders import no node:* module directly", () => {
    const offenders: string[] = [];
    for (const dir of LAYERS) {
      for (const file of sources(dir)) {
        const text = fs.readFileSync(path.join(ROOT, file), "utf8");
        for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*|require\s*\(\s*)["'](node:[^"']+|fs|path|os|zlib|url|crypto|child_process|worker_threads)["']/g)) {
          offenders.push(`${file}: ${m[1]}`);
        }
      }
    }
    assert.deepEqual(offenders, [], "import these through src/platform/ instead");
  });

  it("every platform function the engine calls exists in the browser twin", async () => {
    const files = [...LAYERS.flatMap(sources), ...sources("src/lora"), ...sources("src/quant")];
    const missing: string[] = [];
    let checked = 0;
    for (const file of files) {
      const text = fs.readFileSync(path.join(ROOT, file), "utf8");
      for (const m of text.matchAll(/import \* as (\w+) from "\.\.\/platform\/(\w+)\.js"/g)) {
        const [, alias, mod] = m;
        const twin = await import(new URL(`../src/platform/browser/${mod}.js`, import.meta.url).href) as Record<string, unknown>;
        const node = await import(new URL(`../src/platform/${mod}.js`, import.meta.url).href) as Record<string, unknown>;
        for (const use of text.matchAll(new RegExp(`(?<![\\w/.])${alias}\\.(\\w+)`, "g"))) {
          const name = use[1];
          checked++;
          assert.ok(name in node, `${file}: ${alias}.${name} is not in src/platform/${mod}.ts`);
          // zlib.crc32 is optional by design (src/pipeline/image.ts falls back to its own table).
          if (!(name in twin) && !(mod === "zlib" && name === "crc32")) missing.push(`${file}: ${alias}.${name}`);
        }
      }
    }
    assert.ok(checked > 50, `found only ${checked} platform calls; the import pattern changed?`);
    assert.deepEqual(missing, [], "add these to src/platform/browser/");
  });

  it("the browser file system serves positioned reads and folder listings of mounted files", async () => {
    const vfs = await import("../src/platform/browser/fs.js");
    const bpath = await import("../src/platform/browser/path.js");
    vfs.mount("/models/m/transformer/config.json", new TextEncoder().encode('{"a":1}'));
    vfs.mount("/models/m/transformer/w.safetensors", Uint8Array.from([1, 2, 3, 4, 5]));
    assert.deepEqual(vfs.readdirSync("/models/m"), ["transformer"]);
    assert.deepEqual(vfs.readdirSync("/models/m/transformer"), ["config.json", "w.safetensors"]);
    assert.equal(vfs.readFileSync("/models/m/transformer/config.json", "utf8"), '{"a":1}');
    assert.ok(vfs.statSync("/models/m")!.isDirectory());
    assert.equal(vfs.statSync("/models/x", { throwIfNoEntry: false }), undefined);
    assert.throws(() => vfs.statSync("/models/x"), /ENOENT/);
    const fd = vfs.openSync("/models/m/transformer/w.safetensors", "r");
    const buf = new Uint8Array(4);
    assert.equal(vfs.readSync(fd, buf, 1, 3, 3), 2, "a read past the end returns what is there");
    assert.deepEqual([...buf], [0, 4, 5, 0]);
    vfs.closeSync(fd);
    vfs.unmount("/models/m");
    assert.equal(vfs.existsSync("/models/m/transformer/config.json"), false);
    assert.equal(bpath.join("/a/b", "../c", "d.json"), "/a/c/d.json");
    assert.equal(bpath.dirname("/a/b/c"), "/a/b");
    assert.equal(bpath.resolve("x", "y"), "/x/y");
  });
});
