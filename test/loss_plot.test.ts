// The trainer's loss plot (src/train/loss_plot.ts): redraws never hold up training, a redraw
// that never finishes (a hang inside sharp/pango was seen once in a long run) or fails stops
// the redraws with one warning, and requests made while one is drawing collapse into the latest.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { LossPlotter } from "../src/train/loss_plot.js";

test("a redraw that never finishes: update returns at once, finish gives up after the stall time, one warning, no more redraws", async () => {
  const warnings: string[] = [];
  let calls = 0;
  const plotter = new LossPlotter("/nonexistent/loss.png", "t", (m) => warnings.push(m), 100, () => { calls++; return new Promise<void>(() => {}); });
  const t0 = performance.now();
  plotter.update([1, 2]);
  plotter.update([1, 2, 3]);
  assert.ok(performance.now() - t0 < 50, "update must not wait for the drawing");
  assert.equal(await plotter.finish([1, 2, 3, 4]), false);
  assert.ok(performance.now() - t0 < 2000);
  assert.equal(plotter.stalled, true);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /did not finish drawing in 0 s; it is no longer redrawn, and training goes on/);
  plotter.update([5]);
  assert.equal(calls, 1, "no redraw after a stall");
});

test("requests during a redraw collapse into the latest; finish draws the final losses last", async () => {
  const drawn: number[][] = [];
  let release: () => void = () => {};
  const plotter = new LossPlotter("x", "t", () => assert.fail("no warning expected"), 5_000, (_f, losses) => {
    drawn.push([...losses]);
    return new Promise<void>((r) => { release = r; });
  });
  plotter.update([1]);
  plotter.update([1, 2]);
  plotter.update([1, 2, 3]);
  assert.deepEqual(drawn, [[1]]);
  release();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(drawn, [[1], [1, 2, 3]]);
  const done = plotter.finish([1, 2, 3, 4]);
  release();
  await new Promise((r) => setImmediate(r));
  release();
  assert.equal(await done, true);
  assert.deepEqual(drawn, [[1], [1, 2, 3], [1, 2, 3, 4]]);
});

test("a failing redraw warns once and stops redrawing", async () => {
  const warnings: string[] = [];
  let calls = 0;
  const plotter = new LossPlotter("x", "t", (m) => warnings.push(m), 5_000, async () => { calls++; throw new Error("no fonts"); });
  plotter.update([1]);
  assert.equal(await plotter.finish([1, 2]), false);
  plotter.update([1, 2, 3]);
  assert.equal(calls, 1);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /could not be drawn \(no fonts\)/);
});

test("the real renderer writes an 800 × 400 PNG", async () => {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "flux2-lossplot-")), "loss.png");
  const plotter = new LossPlotter(file, "lora loss, run", () => assert.fail("no warning expected"));
  plotter.update([3, 2, 1.5]);
  assert.equal(await plotter.finish([3, 2, 1.5, 1.2, 1.1]), true);
  const meta = await sharp(file).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height], ["png", 800, 400]);
});
