// `flux2 train --workers N` (src/train/parallel.ts): the micro-batches of a step computed side by
// side in worker threads give the very weights that the same run computes one after another, in
// every mode (LoRA, full, VAE, text encoder); settings it cannot honour are refused. One worker
// runs one thread and two workers one thread each, so every session computes alike.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { readAll } from "../src/io/safetensors.js";

const CLI = path.resolve("dist/src/cli/main.js");
const MODEL = "testdata/golden/checkpoints/klein_base";
const ROOT = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-train-parallel-"));

/** 6 captioned 64×64 pictures: a coloured square on a coloured ground. */
async function makeData(): Promise<string> {
  const dir = path.join(ROOT, "data");
  if (fs.existsSync(dir)) return dir;
  fs.mkdirSync(dir);
  const colours = [[220, 20, 60], [30, 144, 255], [50, 205, 50], [255, 215, 0], [128, 0, 128], [255, 140, 0]];
  for (const [i, c] of colours.entries()) {
    const px = Buffer.alloc(64 * 64 * 3, 255);
    for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) {
      const inside = x >= 8 * (i % 3) + 8 && x < 8 * (i % 3) + 40 && y >= 16 && y < 48;
      if (inside) px.set(c, (y * 64 + x) * 3);
    }
    await sharp(px, { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(path.join(dir, `img${i}.png`));
    fs.writeFileSync(path.join(dir, `img${i}.txt`), `a square number ${i}`);
  }
  return dir;
}

function train(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, "train", "--model", MODEL, "--resolution", "64", "--max-sequence-length", "32", "--save-every", "0", ...args],
    { encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function losses(stdout: string): number[] {
  return stdout.trim().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)).filter((l) => "loss" in l).map((l) => l.loss);
}

/** Every tensor of a .safetensors file, or of every one under a folder, as base64 bytes. */
function tensors(at: string): Map<string, string> {
  const out = new Map<string, string>();
  const files = fs.statSync(at).isDirectory() ? (fs.readdirSync(at, { recursive: true }) as string[]).filter((f) => f.endsWith(".safetensors")) : [""];
  for (const f of files) {
    for (const [name, t] of readAll(path.join(at, f))) {
      const d = t.data as ArrayBufferView;
      out.set(`${f}:${name}`, Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString("base64"));
    }
  }
  return out;
}

const MODES: [string, string[], string][] = [
  ["LoRA", ["--rank", "4", "--alpha", "4", "--lr", "1e-3"], "lora.safetensors"],
  ["--full", ["--full", "--lr", "1e-4", "--caption-dropout", "0.2"], "model/transformer"],
  ["--vae", ["--vae", "--lr", "1e-3"], "model/vae"],
  ["--text-encoder", ["--text-encoder", "--align-pool", "mean", "--lr", "1e-3", "--weight-decay", "0"], "model/text_encoder"],
];

for (const [name, extra, output] of MODES) {
  test(`flux2 train ${name} --workers 2 computes the same weights and losses as one worker`, async () => {
    const data = await makeData();
    const common = ["--data", data, "--steps", "3", "--batch-size", "2", "--grad-accum", "2", "--seed", "5", "--json", ...extra];
    const tag = name.replace(/\W/g, "");
    const one = train([...common, "--out", path.join(ROOT, `${tag}-1`), "--threads", "1", "--workers", "1"]);
    assert.equal(one.code, 0, one.stderr);
    const two = train([...common, "--out", path.join(ROOT, `${tag}-2`), "--threads", "2", "--workers", "2"]);
    assert.equal(two.code, 0, two.stderr);
    assert.match(two.stderr, /starting 1 worker thread\(s\): 2 micro-batches at once, 1 thread\(s\) each/);
    assert.match(two.stderr, /workers {8}1 more thread\(s\)/, "the memory plan counts the worker");
    const l1 = losses(one.stdout), l2 = losses(two.stdout);
    assert.equal(l1.length, 3);
    assert.deepEqual(l2, l1, "the same losses, step by step");
    const a = path.join(ROOT, `${tag}-1`, output), b = path.join(ROOT, `${tag}-2`, output);
    const ta = tensors(a), tb = tensors(b);
    assert.ok(ta.size > 0);
    assert.deepEqual([...tb.keys()].sort(), [...ta.keys()].sort());
    const differ = [...ta].filter(([k, v]) => tb.get(k) !== v).map(([k]) => k);
    assert.deepEqual(differ, [], "every trained tensor is bit for bit the same");
  });
}

test("flux2 train --workers refuses what it cannot honour", async () => {
  const data = await makeData();
  const r = train(["--data", data, "--out", path.join(ROOT, "bad"), "--steps", "1", "--batch-size", "4", "--workers", "2"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--workers 2 computes 2 micro-batches of a step at once, but a step has --grad-accum 1: give --grad-accum 2 .*--batch-size 2 --grad-accum 2 --workers 2/);
  const z = train(["--data", data, "--out", path.join(ROOT, "bad0"), "--steps", "1", "--workers", "0"]);
  assert.notEqual(z.code, 0);
  assert.match(z.stderr, /--workers/);
});
