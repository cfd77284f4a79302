// `flux2 train` runs in a child process with a larger initial old-generation heap
// (src/cli/training_heap.ts): the child must get the flag, the parent must pass on the child's
// exit code and a Ctrl-C exactly once, and FLUX2_TRAIN_HEAP_MB must be checked.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HEAP = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "cli", "training_heap.js")).href;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-heap-"));
// A stand-in for the CLI: the child prints its V8 flags, counts SIGINTs for a moment, and exits 7
// (or 130 after a SIGINT).
const script = path.join(dir, "cli.mjs");
fs.writeFileSync(script, `
import { runWithTrainingHeap } from ${JSON.stringify(HEAP)};
const code = await runWithTrainingHeap().catch((e) => { console.log("error: " + e.message); return 2; });
if (code !== null) process.exit(code);
let sigints = 0;
process.on("SIGINT", () => { sigints++; });
console.log(JSON.stringify({ execArgv: process.execArgv, pid: process.pid }));
setTimeout(() => { console.log(JSON.stringify({ sigints })); process.exit(sigints ? 130 : 7); }, Number(process.env.WAIT_MS ?? 0));
`);

function run(env: Record<string, string>, interrupt = false): Promise<{ code: number | null; lines: string[] }> {
  const child = spawn(process.execPath, [script], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
    if (interrupt && out.includes("execArgv")) child.kill("SIGINT");
  });
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, lines: out.trim().split("\n") })));
}

test("the training process is a child started with --initial-old-space-size, its exit code passed on", async () => {
  const r = await run({ FLUX2_TRAIN_HEAP_MB: "" });
  assert.equal(r.code, 7);
  const info = JSON.parse(r.lines[0]);
  assert.ok(info.execArgv.includes("--initial-old-space-size=256"), r.lines[0]);
  const sized = await run({ FLUX2_TRAIN_HEAP_MB: "384" });
  assert.ok(JSON.parse(sized.lines[0]).execArgv.includes("--initial-old-space-size=384"), sized.lines[0]);
});

test("FLUX2_TRAIN_HEAP_MB=0 trains in the same process; a value that is not a whole number is refused", async () => {
  const r = await run({ FLUX2_TRAIN_HEAP_MB: "0" });
  assert.equal(r.code, 7);
  assert.deepEqual(JSON.parse(r.lines[0]).execArgv, []);
  const bad = await run({ FLUX2_TRAIN_HEAP_MB: "lots" });
  assert.equal(bad.code, 2);
  assert.match(bad.lines[0], /FLUX2_TRAIN_HEAP_MB must be a whole number of megabytes \(0 turns the training heap off\), got "lots"/);
});

test("a Ctrl-C sent to the parent reaches the training child once", async () => {
  const r = await run({ FLUX2_TRAIN_HEAP_MB: "", WAIT_MS: "1500" }, true);
  assert.equal(r.code, 130);
  assert.deepEqual(JSON.parse(r.lines.at(-1)!), { sigints: 1 });
});
