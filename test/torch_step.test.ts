// The PyTorch transformer step of `flux2 bench --compare torch` (src/bench/torch_step.py) is the
// project's own implementation from the spec; for the comparison to be fair it must compute the
// same function as flux2.ts. Checked here against the golden transformer cases.
//
// Without PyTorch these tests are skipped and say so; CI (.ci/run) installs python3-torch and
// sets FLUX2_REQUIRE_TORCH=1, which turns a missing PyTorch into a failure.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { TORCH_INSTALL_HINT, findTorchPython, torchCheckGolden, torchStep } from "../src/bench/torch.js";
import { MODEL_SPECS, makeRandomModel } from "../src/bench/make_model.js";
import { goldenPath } from "./golden.js";

const py = findTorchPython();
const required = process.env.FLUX2_REQUIRE_TORCH === "1";
const skip = !py && !required ? `PyTorch not installed (${TORCH_INSTALL_HINT})` : false;

test("PyTorch is available where CI requires it", { skip: !required && "FLUX2_REQUIRE_TORCH is not set" }, () => {
  assert.ok(py, TORCH_INSTALL_HINT);
});

test("the PyTorch step matches every diffusers-layout golden transformer case (float32)", { skip }, async () => {
  const r = await torchCheckGolden(py!, goldenPath("."));
  const ran = r.cases.filter((c) => !c.skipped);
  assert.ok(ran.length >= 5, `${ran.length} cases ran`);
  for (const c of ran) assert.ok(c.pass && c.max_abs_error! <= c.tolerance!, `${c.name}: max |err| ${c.max_abs_error} > ${c.tolerance}`);
  // The BFL-layout case is the one it leaves out, by name (its weights use BFL keys).
  assert.deepEqual(r.cases.filter((c) => c.skipped).map((c) => c.name), ["bfl/transformer__forward"]);
});

test("the PyTorch bench step runs on a random checkpoint in bf16 and reports its times", { skip }, async () => {
  const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "flux2-torch-")), "quick");
  makeRandomModel(MODEL_SPECS.quick, dir);
  const r = await torchStep(py!, dir, { dtype: "bf16", resolution: 64, textLength: 16, repeats: 1, threads: 1 }, () => {});
  assert.equal(r.dtype, "bf16");
  assert.equal(r.runs.length, 1);
  assert.ok(r.runs[0] > 0 && r.first_run_seconds > 0 && r.peak_rss_bytes > 0);
  fs.rmSync(path.dirname(dir), { recursive: true, force: true });
});

test("without PyTorch the bench finds none and the hint says how to install it", () => {
  const saved = process.env.FLUX2_TORCH_PYTHON;
  process.env.FLUX2_TORCH_PYTHON = "/nonexistent/python3";
  try {
    assert.equal(findTorchPython(), null);
  } finally {
    if (saved === undefined) delete process.env.FLUX2_TORCH_PYTHON;
    else process.env.FLUX2_TORCH_PYTHON = saved;
  }
  assert.match(TORCH_INSTALL_HINT, /apt-get install python3-torch/);
});
