// The studio's storyboard and fine-tuning pages in Debian's Chromium against a
// real server (tiny checkpoints): a storyboard with 3 shots and 2 named
// references produces 3 panels and a contact sheet, and a re-made panel changes
// alone; a fine-tuning run from dropped images shows its progress and loss
// curve and ends with the LoRA in the server's LoRA folder. Screenshots go to
// test-artifacts/studio/.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { type BrowserContext, type Page } from "playwright-core";
import { type RunningServer } from "../src/server/app.js";
import { TINY, TINY_BASE } from "./helpers/net.js";
import { ensureStudioBuilt, launchStudioBrowser, startStudioServer, STUDIO_ARTIFACTS as ARTIFACTS, STUDIO_MODEL, studioSkip } from "./helpers/studio.js";

const skip = studioSkip();

describe("studio storyboard and fine-tuning pages (Chromium, real server)", { skip }, () => {
  let server: RunningServer;
  let context: BrowserContext;
  let page: Page;
  let work: string;
  let loraDir: string;

  before(async () => {
    ensureStudioBuilt();
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    work = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-studio-pages-"));
    loraDir = path.join(work, "loras");
    server = await startStudioServer({ dataDir: path.join(work, "data"), loraDir, models: [{ id: STUDIO_MODEL, dir: TINY }, { id: "klein-base", dir: TINY_BASE }] });
    const colours: [string, [number, number, number]][] = [["mara", [200, 30, 30]], ["harbour", [30, 60, 200]], ["t0", [0, 200, 0]], ["t1", [200, 200, 0]]];
    for (const [n, [r, g, b]] of colours) await sharp({ create: { width: 64, height: 64, channels: 3, background: { r, g, b } } }).png().toFile(path.join(work, `${n}.png`));
    context = await launchStudioBrowser(path.join(work, "profile"));
    page = context.pages()[0] ?? await context.newPage();
  });

  after(async () => {
    await context?.close();
    await server?.close();
  });

  it("a storyboard with 3 shots and 2 named references produces 3 panels and a contact sheet; Re-make changes one panel", async () => {
    await page.goto(`${server.url}/#/storyboard`);
    await page.getByTestId("storyboard-page").waitFor();
    await page.getByLabel("Title").fill("The harbour job");
    await page.getByTestId("sb-width").fill("64");
    await page.getByTestId("sb-height").fill("64");
    for (const [name, file] of [["Mara", "mara.png"], ["Harbour", "harbour.png"]]) {
      await page.getByTestId("sb-add-ref").click();
      const ref = page.getByTestId("sb-ref").last();
      await ref.getByLabel("Reference name").fill(name);
      await ref.getByLabel("Reference image").setInputFiles(path.join(work, file));
      await ref.locator("img").waitFor();
    }
    await page.locator("#sb-shots").fill("1. Mara waits on the Harbour wall.\n2. Close-up of Mara's hands.\n3. The Harbour at dawn, empty.");
    await page.getByTestId("sb-generate").click();
    await page.getByTestId("sb-contact-sheet").waitFor({ timeout: 120_000 });
    const panels = page.getByTestId("sb-panel");
    assert.equal(await panels.count(), 3);
    const srcs = await panels.locator("img").evaluateAll((els) => els.map((e) => (e as HTMLImageElement).src));
    assert.equal(srcs.length, 3);
    assert.match(await panels.nth(0).innerText(), /Mara, Harbour/);
    // The sheet's <img> is in the page before its picture has loaded (naturalWidth is 0 until then):
    // on a loaded machine the width was read too early (CI, session 7). Wait for the load, then check.
    await page.waitForFunction(() => {
      const img = document.querySelector("[data-testid=sb-contact-sheet]") as HTMLImageElement | null;
      return !!img && img.complete && img.naturalWidth > 0;
    }, undefined, { timeout: 30_000 });
    assert.ok(await page.getByTestId("sb-contact-sheet").evaluate((img) => (img as HTMLImageElement).naturalWidth > 900));
    await page.screenshot({ path: path.join(ARTIFACTS, "storyboard.png"), fullPage: true });

    await panels.nth(1).getByTestId("sb-remake").click();
    await page.waitForFunction((old) => {
      const imgs = [...document.querySelectorAll("[data-testid=sb-panel] img")] as HTMLImageElement[];
      return imgs.length === 3 && imgs[1].src !== old && !!document.querySelector("[data-testid=sb-contact-sheet]");
    }, srcs[1], { timeout: 120_000 });
    const after2 = await panels.locator("img").evaluateAll((els) => els.map((e) => (e as HTMLImageElement).src));
    assert.deepEqual([after2[0], after2[2]], [srcs[0], srcs[2]], "the other panels keep their images");
  });

  it("fine-tuning from dropped images shows step, loss curve and ends with the LoRA", async () => {
    await page.goto(`${server.url}/#/finetune`);
    await page.getByTestId("finetune-page").waitFor();
    await page.getByLabel("Training images").setInputFiles([path.join(work, "t0.png"), path.join(work, "t1.png")]);
    await page.getByTestId("ft-item").nth(1).waitFor();
    await page.getByLabel("Caption of t0.png").fill("a green square");
    await page.getByLabel("Caption of t1.png").fill("a yellow square");
    assert.equal(await page.locator("#ft-model").inputValue(), "klein-base", "the base model made for training is chosen first");
    await page.getByLabel("Trigger word").fill("sqr");
    await page.getByLabel("LoRA name (file in the server's LoRA folder)").fill("squares");
    await page.getByTestId("ft-steps").fill("6");
    await page.getByTestId("ft-resolution").fill("64");
    await page.getByTestId("ft-ema").fill("0.9");
    const submitted = page.waitForRequest((r) => r.method() === "POST" && new URL(r.url()).pathname === "/v1/finetune");
    await page.getByTestId("ft-start").click();
    assert.equal(JSON.parse((await submitted).postData() ?? "{}").ema_decay, 0.9, "the weight average is sent as ema_decay");
    await page.getByTestId("ft-done").waitFor({ timeout: 180_000 });
    assert.match(await page.getByTestId("ft-progress").innerText(), /Step 6 \/ 6 · loss \d/);
    await page.getByTestId("ft-curve").waitFor();
    await page.screenshot({ path: path.join(ARTIFACTS, "finetune.png"), fullPage: true });
    assert.ok(fs.existsSync(path.join(loraDir, "squares.safetensors")));
  });
});
