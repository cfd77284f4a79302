// The studio's screenshots in docs/studio.md, made with the default model (flux2-mini) so that they
// show real pictures. Run by hand (not by CI: it takes minutes and its pictures are for people):
//
//   npm run build && node dist/scripts/studio-screenshots.js [--out docs] [--keep]
//
// It starts `flux2 serve` with no --model (so the default model), a fresh data folder and a LoRA
// folder holding models/flux2-mini-style.safetensors, drives the studio in Debian's Chromium
// (/usr/bin/chromium, or $CHROMIUM) through every page (generate, a batch in the gallery, PNG info,
// an inpainting edit with a painted mask, the LoRA picker, the JSON builder, the queue, the storyboard
// and fine-tune pages) and writes each as a small palette PNG into --out. Each step that fails is
// reported and the script exits 1; the other steps still run.

import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";
import type { Page } from "playwright-core";
import { launchStudioBrowser } from "../test/helpers/studio.js";
import { repoRoot } from "../test/golden.js";

const CLI = path.join(repoRoot, "dist", "src", "cli", "main.js");
const LORA = path.join(repoRoot, "models", "flux2-mini-style.safetensors");
const WIDTH = 1280;

const { values: args } = parseArgs({ options: { out: { type: "string", default: path.join(repoRoot, "docs") }, keep: { type: "boolean", default: false } } });
const out = path.resolve(args.out!);

/** `flux2 serve` as a user starts it (no --model), on a free port; resolves with its address. */
async function serve(dataDir: string, loraDir: string): Promise<{ url: string; proc: ChildProcess; log: () => string }> {
  const proc = spawn(process.execPath, [CLI, "serve", "--host", "127.0.0.1", "--port", "0", "--data", dataDir, "--lora-dir", loraDir], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  let text = "";
  const url = await new Promise<string>((resolve, reject) => {
    // Loading the model takes a while on a busy machine; a server that never comes up is stopped.
    const t = setTimeout(() => { proc.kill("SIGTERM"); reject(new Error(`flux2 serve printed no "listening on" line in 300 s:\n${text}`)); }, 300_000);
    const on = (b: Buffer) => { text += b; const m = /listening on (http:\/\/\S+)/.exec(text); if (m) { clearTimeout(t); resolve(m[1].replace(/\/$/, "")); } };
    proc.stdout!.on("data", on);
    proc.stderr!.on("data", on);
    proc.on("exit", (c) => { clearTimeout(t); reject(new Error(`flux2 serve exited (${c}):\n${text}`)); });
  });
  return { url, proc, log: () => text };
}

/** A screenshot, downscaled by `scale` and written as a palette PNG (UI colours survive 256 colours; the file stays small). */
async function save(png: Buffer, name: string, scale = 0.75): Promise<void> {
  const meta = await sharp(png).metadata();
  const file = path.join(out, name);
  await sharp(png).resize({ width: Math.round(meta.width! * scale) }).png({ palette: true, colours: 256, compressionLevel: 9, effort: 10 }).toFile(file);
  const st = fs.statSync(file);
  const m2 = await sharp(file).metadata();
  console.log(`  wrote ${path.relative(repoRoot, file)}: ${m2.width}×${m2.height}, ${(st.size / 1024).toFixed(0)} KB`);
}

/** The window grown to `height` (at most the page's height), scrolled to the top, captured; then the window as before. */
async function tall(page: Page, height: number): Promise<Buffer> {
  const vp = page.viewportSize()!;
  const full = await page.evaluate(() => document.documentElement.scrollHeight);
  await page.setViewportSize({ width: vp.width, height: Math.min(full, height) });
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.waitForTimeout(300);
  const png = await page.screenshot();
  await page.setViewportSize(vp);
  return png;
}

async function main(): Promise<number> {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
  if (!fs.existsSync(path.join(repoRoot, "dist", "studio", "index.html"))) throw new Error("dist/studio/ is missing: run npm run build first");
  fs.mkdirSync(out, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-studio-shots-"));
  const loraDir = path.join(work, "loras");
  fs.mkdirSync(loraDir);
  fs.copyFileSync(LORA, path.join(loraDir, "flux2-mini-style.safetensors"));
  const server = await serve(path.join(work, "data"), loraDir);
  console.log(`flux2 serve (no --model) at ${server.url}`);
  const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { models: { id: string; kind: string }[] };
  const local = models.models.filter((m) => m.kind === "local").map((m) => m.id);
  console.log(`  local models: ${local.join(", ")}`);
  const context = await launchStudioBrowser(path.join(work, "profile"), { viewport: { width: WIDTH, height: 900 } });
  const page = context.pages()[0] ?? await context.newPage();
  // A locator that matches nothing fails after a minute, naming itself, instead of waiting for ever.
  page.setDefaultTimeout(60_000);
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  const jobsDone = () => page.evaluate(() => Number(document.documentElement.dataset.jobsDone ?? 0));
  /** Click Generate and wait until that job (and any queued before it) has ended. */
  const generate = async (timeout = 300_000) => {
    const before = await jobsDone();
    const errorsBefore = await page.locator(".toast.error").count();
    await page.click("[data-testid=generate]");
    // Done, or refused: a blocked form or a refused request ends the step at once, saying why.
    await page.waitForFunction(([b, e]) => Number(document.documentElement.dataset.jobsDone ?? 0) > b
      || document.querySelectorAll(".toast.error").length > e || !!document.querySelector("[data-testid=submit-errors] [role=alert]"), [before, errorsBefore], { timeout });
    const refused = [...await page.locator(".toast.error").allTextContents()].slice(errorsBefore).concat(await page.locator("[data-testid=submit-errors] [role=alert]").allTextContents());
    if (refused.length) throw new Error(`not generated: ${refused.join("; ")}`);
    await page.locator("[data-testid=queue]").waitFor({ state: "detached", timeout });
    const status = (await page.locator("[data-testid=status-line]").textContent()) ?? "";
    if (!/Done/.test(status)) throw new Error(`the run did not end well: ${status}`);
  };
  const fixedSeed = async (seed: number) => {
    await page.locator("label", { hasText: /^\s*Fixed\s*$/ }).click();
    await page.fill("#seed", String(seed));
  };
  const textPrompt = async (text: string) => {
    await page.locator("label", { hasText: /^Text$/ }).click();
    await page.fill("#prompt", text);
  };
  const card = (text: string) => page.locator("[data-testid=gallery-item]", { hasText: text }).first();
  const sampleOf = async (text: string, file: string) => {
    const href = await card(text).locator("a", { hasText: "Download" }).getAttribute("href");
    const res = await fetch(new URL(href!, `${server.url}/`));
    fs.writeFileSync(path.join(work, file), Buffer.from(await res.arrayBuffer()));
    return path.join(work, file);
  };

  const failed: string[] = [];
  const step = async (name: string, f: () => Promise<void>) => {
    const t = Date.now();
    try {
      await f();
      console.log(`${name}: ${((Date.now() - t) / 1000).toFixed(1)} s`);
    } catch (e) {
      failed.push(name);
      console.error(`${name} FAILED: ${(e as Error).stack ?? e}`);
      await page.screenshot({ path: path.join(work, `failed-${name}.png`) }).catch(() => undefined);
    }
  };

  await page.goto(`${server.url}/`);
  await page.locator("[data-testid=model-limits]").waitFor();

  await step("generate", async () => {
    const model = await page.inputValue("#model");
    if (model !== "flux2-mini") throw new Error(`the studio chose ${model}, not the default flux2-mini`);
    // flux2-mini was trained at 64² (docs/flux2-mini.md); that is also the studio's default for it.
    await page.selectOption("#megapixels", { label: "64² px" });
    await fixedSeed(0);
    await textPrompt("a #1E90FF circle on a white background");
    await generate();
    await save(await tall(page, 900), "studio.png");
  });

  await step("gallery", async () => {
    await textPrompt("a red apple");
    await page.fill("#batch", "4");
    await generate();
    await page.fill("#batch", "1");
    const gallery = page.locator("section.gallery");
    await page.locator("[data-testid=gallery-item]").first().waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll("section.gallery img")].every((i) => (i as HTMLImageElement).complete));
    // The element's own screenshot (Playwright scrolls to it), cut to its first 760 px: the cards at the top.
    const whole = await gallery.screenshot();
    const meta = await sharp(whole).metadata();
    const png = await sharp(whole).extract({ left: 0, top: 0, width: meta.width!, height: Math.min(meta.height!, 760) }).png().toBuffer();
    await save(png, "studio-gallery.png", 0.8);
  });

  await step("png-info", async () => {
    await card("a red apple").locator("button", { hasText: "PNG info" }).click();
    const info = page.locator("[data-testid=png-info]");
    await page.locator("[data-testid=png-info-record]").waitFor();
    await info.scrollIntoViewIfNeeded();
    await save(await info.screenshot(), "studio-png-info.png", 0.8);
    await page.locator("[data-testid=png-info] button", { hasText: "Close" }).click();
  });

  await step("edit", async () => {
    await page.evaluate(() => window.scrollTo(0, 0));
    await card("#1E90FF circle").locator("button", { hasText: "Use as reference" }).click();
    await page.locator("[data-testid=ref-item]").first().waitFor();
    await page.locator("summary", { hasText: "Inpaint" }).click();
    // A stroke down the right third of the image: repaint it.
    const stage = page.locator("[data-testid=mask-stage] canvas").first();
    await stage.scrollIntoViewIfNeeded();
    const b = (await stage.boundingBox())!;
    await page.mouse.move(b.x + b.width * 0.8, b.y + b.height * 0.15);
    await page.mouse.down();
    for (let i = 1; i <= 10; i++) await page.mouse.move(b.x + b.width * 0.8, b.y + b.height * (0.15 + 0.07 * i));
    await page.mouse.up();
    await textPrompt("a #1E90FF circle and a red square, on a white background");
    await generate();
    await save(await tall(page, 1500), "studio-edit.png", 0.7);
    while (await page.locator("button[aria-label='Remove reference 1']").count()) await page.click("button[aria-label='Remove reference 1']");
  });

  await step("lora", async () => {
    const item = page.locator("[data-testid=lora-item][data-lora=flux2-mini-style]");
    await item.getByRole("checkbox").check();
    await textPrompt("a red apple");
    await generate();
    await page.locator("section[aria-labelledby=loras-h]").scrollIntoViewIfNeeded();
    await save(await tall(page, 1500), "studio-lora.png", 0.7);
    await item.getByRole("checkbox").uncheck();
  });

  await step("json-builder", async () => {
    await textPrompt(JSON.stringify({
      scene: "a large #E4572E triangle in the centre", subjects: [{ type: "triangle", description: "a large triangle", position: "centre", color: "#E4572E" }],
      style: "flat shapes", color_palette: ["#E4572E", "#FFFFFF"], background: "#FFFFFF", composition: "centred",
    }));
    await page.locator("label", { hasText: "JSON builder" }).click();
    await page.locator("[data-testid=json-builder]").waitFor();
    await generate();
    await page.locator("[data-testid=json-builder]").scrollIntoViewIfNeeded();
    await save(await tall(page, 1500), "studio-json-builder.png", 0.7);
    await textPrompt("a red apple");
  });

  await step("queue", async () => {
    await page.fill("#batch", "8");
    await textPrompt("a red star on the left, on a white background");
    await page.click("[data-testid=generate]");
    await page.locator("[data-testid=queue-item]").first().waitFor();
    await page.fill("#batch", "1");
    await textPrompt("a #1E90FF circle on a white background");
    await page.click("[data-testid=generate]");
    await page.locator("[data-testid=queue-item]").nth(1).waitFor();
    // Once the first job is in its steps, the bar shows the stage, percentage, time and estimate.
    await page.locator("[data-testid=progress] label", { hasText: /Step \d+ of \d+/ }).waitFor({ timeout: 120_000 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.waitForTimeout(500);
    await save(await page.screenshot(), "studio-queue.png");
    await page.locator("[data-testid=queue]").waitFor({ state: "detached", timeout: 300_000 });
  });

  await step("storyboard", async () => {
    const circle = await sampleOf("#1E90FF circle on a white", "circle.png");
    const apple = await sampleOf("a red apple", "apple.png");
    await page.goto(`${server.url}/#/storyboard`);
    await page.getByTestId("storyboard-page").waitFor();
    await page.locator("#sb-title").fill("Apple meets circle");
    await page.locator("#sb-brief").fill("A red apple and a blue circle meet on a white page.");
    await page.getByTestId("sb-width").fill("64");
    await page.getByTestId("sb-height").fill("64");
    for (const [name, file] of [["apple", apple], ["circle", circle]]) {
      await page.getByTestId("sb-add-ref").click();
      const ref = page.getByTestId("sb-ref").last();
      await ref.getByLabel("Reference name").fill(name);
      await ref.getByLabel("Kind").selectOption("prop");
      await ref.getByLabel("Reference image").setInputFiles(file);
      await ref.locator("img").waitFor();
    }
    await page.locator("#sb-shots").fill("1. a red apple on the left, on a white background\n2. a #1E90FF circle on the right, on a white background\n3. a red apple and a #1E90FF circle, on a white background");
    await page.getByTestId("sb-generate").click();
    await page.getByTestId("sb-contact-sheet").waitFor({ timeout: 300_000 });
    await page.waitForFunction(() => [...document.querySelectorAll("img")].every((i) => i.complete));
    await save(await tall(page, 1400), "studio-storyboard.png", 0.7);
  });

  await step("finetune", async () => {
    // Back to the Generate page, whose gallery has the images to train on.
    await page.goto(`${server.url}/`);
    await page.locator("[data-testid=gallery-item]").first().waitFor();
    const files = [await sampleOf("a red apple", "t0.png"), await sampleOf("#1E90FF circle on a white", "t1.png"), await sampleOf("red star", "t2.png")];
    await page.goto(`${server.url}/#/finetune`);
    await page.getByTestId("finetune-page").waitFor();
    await page.getByLabel("Training images").setInputFiles(files);
    await page.getByTestId("ft-item").nth(2).waitFor();
    await page.getByLabel("Caption of t0.png").fill("sks a red apple");
    await page.getByLabel("Caption of t1.png").fill("sks a #1E90FF circle on a white background");
    await page.getByLabel("Caption of t2.png").fill("sks a red star on the left, on a white background");
    await page.getByLabel("Trigger word").fill("sks");
    await page.getByLabel("LoRA name (file in the server's LoRA folder)").fill("shapes-demo");
    await page.getByTestId("ft-steps").fill("40");
    await page.getByTestId("ft-resolution").fill("64");
    await page.getByLabel("Samples every").fill("20");
    await page.getByTestId("ft-start").click();
    await page.getByTestId("ft-done").waitFor({ timeout: 600_000 });
    await page.getByTestId("ft-curve").waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll("img")].every((i) => i.complete));
    await save(await tall(page, 1400), "studio-finetune.png", 0.7);
  });

  await context.close();
  server.proc.kill("SIGTERM");
  await new Promise((r) => { if (server.proc.exitCode !== null) r(null); server.proc.once("exit", r); setTimeout(r, 15_000); });
  if (errors.length) console.error(`errors in the page:\n${errors.join("\n")}`);
  if (args.keep || failed.length) console.log(`work folder kept: ${work}`);
  else fs.rmSync(work, { recursive: true, force: true });
  if (failed.length) console.error(`failed: ${failed.join(", ")}`);
  return failed.length || errors.length ? 1 : 0;
}

main().then((code) => process.exit(code), (e) => { console.error(e); process.exit(1); });
