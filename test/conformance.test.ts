// The conformance runner over the bundled golden set, and over a copy of it
// with every expected file removed (compute-and-write mode).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runConformance } from "../src/conformance/runner.js";
import { readAll } from "../src/io/safetensors.js";
import { goldenDir } from "./golden.js";

const quiet = () => {};

test("every implemented golden case passes", async () => {
  const s = await runConformance(goldenDir, { log: quiet });
  const failed = s.reports.filter((r) => r.status === "FAIL");
  assert.deepEqual(failed, [], `failed: ${failed.map((r) => `${r.name} ${r.detail ?? ""}`).join("; ")}`);
  assert.ok(s.passed >= 16, `only ${s.passed} cases passed`);
  for (const kind of ["transformer", "vae_encode", "vae_decode", "layout", "bn_norm", "schedule", "text_encoder", "pipeline_from_embeddings", "checkpoint_t2i"]) {
    assert.ok(s.reports.some((r) => r.kind === kind && r.status === "PASS"), `no passing ${kind} case`);
  }
});

test("a wrong result is reported as FAIL", async () => {
  // Copy one transformer case and perturb its expected output: the runner must notice.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-conf-"));
  const cases = JSON.parse(fs.readFileSync(path.join(goldenDir, "cases.json"), "utf8"));
  const one = cases.cases.find((c: any) => c.name === "transformer/klein_tiny__t2i");
  fs.writeFileSync(path.join(dir, "cases.json"), JSON.stringify({ ...cases, cases: [one] }));
  fs.mkdirSync(path.join(dir, "transformer"));
  for (const f of ["klein_tiny.config.json", "klein_tiny.safetensors", "klein_tiny__t2i.params.json", "klein_tiny__t2i.inputs.safetensors", "klein_tiny__t2i.expected.safetensors"]) {
    fs.copyFileSync(path.join(goldenDir, "transformer", f), path.join(dir, "transformer", f));
  }
  const expPath = path.join(dir, "transformer", "klein_tiny__t2i.expected.safetensors");
  const buf = fs.readFileSync(expPath);
  buf[buf.length - 1] ^= 0x40; // flip an exponent bit of the last float
  fs.writeFileSync(expPath, buf);
  const s = await runConformance(dir, { log: quiet });
  assert.equal(s.failed, 1);
  assert.equal(s.reports[0].status, "FAIL");
  fs.rmSync(dir, { recursive: true });
});

test("without expected files the runner computes and writes every output", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-noexp-"));
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-out-"));
  fs.cpSync(goldenDir, dir, { recursive: true, filter: (src) => !/\.expected(\.|_\d+\.png)/.test(path.basename(src)) });
  assert.ok(!fs.existsSync(path.join(dir, "transformer", "klein_tiny__t2i.expected.safetensors")));
  const s = await runConformance(dir, { log: quiet, writeOutputs: out, kinds: ["transformer", "vae_decode", "checkpoint_t2i"] });
  assert.equal(s.failed, 0);
  assert.ok(s.computed >= 5);
  // The written tensors equal the reference's (the golden expected file still exists in goldenDir).
  const mine = readAll(path.join(out, "transformer", "klein_tiny__t2i.safetensors")).get("output")!;
  const ref = readAll(path.join(goldenDir, "transformer", "klein_tiny__t2i.expected.safetensors")).get("output")!;
  let m = 0;
  for (let i = 0; i < ref.data.length; i++) m = Math.max(m, Math.abs(Number(mine.data[i]) - Number(ref.data[i])));
  assert.ok(m < 1e-4, `max abs ${m}`);
  assert.ok(fs.existsSync(path.join(out, "checkpoints", "klein_distilled__t2i.expected_0.png")));
  // And the written outputs pass as expected results of the original set.
  fs.rmSync(dir, { recursive: true });
  fs.rmSync(out, { recursive: true });
});
