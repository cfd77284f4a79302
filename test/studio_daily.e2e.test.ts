// The studio as a daily tool (issue 14), end to end in Debian's Chromium against one real server
// (startServer with the tiny klein checkpoint and a LoRA folder): honest edit sizes, the mask
// painter's aspect ratio (mouse and touch), the queue (also across a reload), the sticky bar's
// stages and notices, gallery delete / hide / filter / PNG info, complete reuse, opening a PNG
// replaces the form, the LoRA picker, the JSON builder's round trip of BFL's schema, and the
// studio behind a reverse proxy's path prefix.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import { type BrowserContext, type Page } from "playwright-core";
import { type RunningServer } from "../src/server/app.js";
import { launchStudioBrowser, startStudioServer, STUDIO_ARTIFACTS as ARTIFACTS, STUDIO_MODEL as MODEL, studioSkip } from "./helpers/studio.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const PREFIX = "/flux/";
const skip = studioSkip(true);

/** A reverse proxy that serves the server under PREFIX (strips it), as nginx's `location /flux/ { proxy_pass http://up/; }`. */
function prefixProxy(upstream: string): Promise<{ url: string; seen: string[]; close: () => Promise<void> }> {
  const up = new URL(upstream);
  const seen: string[] = [];
  const srv = http.createServer((req, res) => {
    seen.push(req.url ?? "");
    if (!req.url?.startsWith(PREFIX)) { res.writeHead(404).end("outside the prefix"); return; }
    const p = http.request({ host: up.hostname, port: up.port, method: req.method, path: `/${req.url.slice(PREFIX.length)}`, headers: { ...req.headers, host: up.host } }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    p.on("error", () => res.writeHead(502).end());
    req.pipe(p);
  });
  return new Promise((resolve) => srv.listen(0, "127.0.0.1", () => {
    const a = srv.address() as { port: number };
    resolve({ url: `http://127.0.0.1:${a.port}`, seen, close: () => new Promise<void>((r) => { srv.closeAllConnections(); srv.close(() => r()); }) });
  }));
}

describe("studio as a daily tool (Chromium, real server)", { skip }, () => {
  let loraDir: string, userDataDir: string;
  let server: RunningServer & { dataDir: string };
  let context: BrowserContext;
  let page: Page;
  let multipleOf = 16;
  const posts: Record<string, unknown>[] = [];
  const consoleErrors: string[] = [];
  const api = async (p: string) => (await fetch(`${server.url}${p}`)).json() as Promise<any>;
  const shot = (name: string) => page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
  const statusLine = () => page.locator("[data-testid=status-line]");
  const jobsDone = () => page.evaluate(() => Number(document.documentElement.dataset.jobsDone ?? 0));
  /** Click Generate and wait for that job to end (the page counts finished jobs), then check it made `n` images. */
  const generateAndWait = async (n = 1) => {
    const before = await jobsDone();
    await page.click("[data-testid=generate]");
    await page.waitForFunction((b) => Number(document.documentElement.dataset.jobsDone ?? 0) > b, before, { timeout: 120_000 });
    const t = await statusLine().textContent() ?? "";
    assert.match(t, new RegExp(`Done: ${n} image`), t);
  };
  const png = (w: number, h: number) => sharp({ create: { width: w, height: h, channels: 3, background: { r: 40, g: 120, b: 200 } } }).png().toBuffer();
  const addReference = async (name: string, buf: Buffer) => {
    const before = await page.locator("[data-testid=ref-item]").count();
    await page.locator("[data-testid=ref-file]").setInputFiles({ name, mimeType: "image/png", buffer: buf });
    await page.locator("[data-testid=ref-item]").nth(before).waitFor();
  };
  const clearReferences = async () => {
    while (await page.locator("button[aria-label='Remove reference 1']").count()) await page.click("button[aria-label='Remove reference 1']");
  };
  /** Set a range input as a user dragging it would (fill() does not take ranges). */
  const setRange = (selector: string, v: number) => page.locator(selector).evaluate((el: HTMLInputElement, value) => {
    Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value")!.set!.call(el, String(value));
    el.dispatchEvent(new Event("input", { bubbles: true }));
  }, v);
  const customSize = async (w: number, h: number) => {
    await page.locator("label", { hasText: "Custom" }).click();
    await page.fill("#width", String(w));
    await page.fill("#height", String(h));
  };

  before(async () => {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    loraDir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-studio2-loras-"));
    fs.copyFileSync(path.join(ROOT, "testdata/golden/lora/lora_kohya.safetensors"), path.join(loraDir, "style.safetensors"));
    server = await startStudioServer({ loraDir });
    multipleOf = (await api("/v1/models")).models.find((m: any) => m.id === MODEL).limits.multiple_of;
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-chromium2-"));
    context = await launchStudioBrowser(userDataDir);
    context.on("request", (r) => {
      if (r.method() === "POST" && /\/v1\/[^/]+$/.test(new URL(r.url()).pathname) && !/gallery/.test(r.url())) {
        try { posts.push(r.postDataJSON() as Record<string, unknown>); } catch { /* not JSON */ }
      }
    });
    page = context.pages()[0] ?? await context.newPage();
    page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
    page.on("pageerror", (e) => consoleErrors.push(String(e)));
    await page.goto(`${server.url}/`);
    await page.locator("[data-testid=model-limits]").waitFor();
  });

  after(async () => {
    await context?.close().catch(() => undefined);
    await server?.close();
    for (const d of [loraDir, userDataDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  it("outpainting: the size panel shows and locks the first image + expansion, and the request carries no width/height", async () => {
    await page.fill("#prompt", "continue the beach to both sides");
    await customSize(8 * multipleOf, 8 * multipleOf);
    const w = 24 * multipleOf, h = 16 * multipleOf, add = 4 * multipleOf;
    await addReference("wide.png", await png(w, h));
    await page.locator("summary", { hasText: "Inpaint" }).click();
    await page.getByLabel("Right").fill(String(add));
    await page.getByLabel("Left").fill(String(add));
    await page.locator("[data-testid=size-locked]").waitFor();
    await page.locator("[data-testid=size-locked]").scrollIntoViewIfNeeded();
    await shot("10-outpaint-size-locked");
    assert.match(await page.locator("[data-testid=size-summary]").textContent() ?? "", new RegExp(`^${w + 2 * add}×${h}`));
    assert.equal(await page.locator("#width").count(), 0, "no width field while editing");
    const n = posts.length;
    await generateAndWait();
    const body = posts[n];
    assert.deepEqual(body.expand, [0, add, 0, add]);
    assert.equal(body.width, undefined, "the size panel's width is not sent with an edit");
    assert.equal(body.height, undefined, "the size panel's height is not sent with an edit");
    // The server derives the size from the first image and the expansion: the proportions are kept, nothing is stretched.
    const job = await api(`/v1/jobs/${await page.locator("[data-testid=gallery-item]").first().getAttribute("data-job")}`);
    assert.deepEqual([job.result.width, job.result.height], [w + 2 * add, h]);
    const out = await sharp(Buffer.from(await (await fetch(job.result.sample)).arrayBuffer())).metadata();
    assert.deepEqual([out.width, out.height], [w + 2 * add, h]);
    // Back to plain generation: the panel is the user's again, with the size chosen before.
    await page.getByLabel("Right").fill("0");
    await page.getByLabel("Left").fill("0");
    assert.equal(await page.inputValue("#width"), String(8 * multipleOf));
  });

  it("the mask painter keeps the image's aspect ratio (wide and narrow windows) and paints where the pointer is, also by touch", async () => {
    const ref = page.locator("[data-testid=ref-item]").first();
    const dims = (await ref.textContent() ?? "").match(/(\d+)×(\d+)/)!;
    const ratio = Number(dims[1]) / Number(dims[2]);
    const stage = page.locator("[data-testid=mask-stage]");
    for (const width of [1280, 360]) {
      await page.setViewportSize({ width, height: 900 });
      const box = (await stage.boundingBox())!;
      assert.ok(Math.abs(box.width / box.height - ratio) < 0.02, `at ${width} px the painter is ${box.width}×${box.height}, ratio ${box.width / box.height}, image ${ratio}`);
    }
    // A touch stroke on the left quarter (pointer events with pointerType "touch", as a phone sends).
    const canvas = page.locator("[data-testid=mask-painter] canvas");
    await canvas.evaluate((el) => el.scrollIntoView({ block: "center" }));
    await canvas.evaluate((el: HTMLCanvasElement) => {
      const r = el.getBoundingClientRect();
      const at = (fx: number, fy: number) => ({ clientX: r.left + r.width * fx, clientY: r.top + r.height * fy, pointerId: 7, pointerType: "touch", isPrimary: true, bubbles: true });
      el.dispatchEvent(new PointerEvent("pointerdown", at(0.2, 0.5)));
      el.dispatchEvent(new PointerEvent("pointermove", at(0.3, 0.5)));
      el.dispatchEvent(new PointerEvent("pointerup", at(0.3, 0.5)));
    });
    await page.locator("text=The mask is sent with the request").waitFor();
    const alphaAt = (fx: number, fy: number) => canvas.evaluate((el: HTMLCanvasElement, [x, y]) =>
      el.getContext("2d")!.getImageData(Math.floor(el.width * x), Math.floor(el.height * y), 1, 1).data[3], [fx, fy]);
    assert.ok(await alphaAt(0.25, 0.5) > 0, "painted under the stroke, in image pixels");
    assert.equal(await alphaAt(0.75, 0.5), 0, "nothing painted on the other side");
    assert.equal(await alphaAt(0.25, 0.05), 0, "a stroke across the middle does not reach the top edge");
    await page.locator("[data-testid=mask-painter] button", { hasText: "Invert" }).click();
    assert.equal(await alphaAt(0.25, 0.5), 0);
    assert.ok(await alphaAt(0.75, 0.5) > 0);
    await page.getByRole("radio", { name: "Erase" }).check();
    await setRange("#brush", 3);
    assert.equal(await page.locator("[data-testid=brush-size]").textContent(), "3 px");
    await page.getByRole("radio", { name: "Paint" }).check();
    await page.locator("[data-testid=mask-painter] button", { hasText: "Clear" }).click();
    await page.locator("text=No mask: the whole image is used").waitFor();
    await page.setViewportSize({ width: 1280, height: 1000 });
  });

  let maskedJob = "";
  it("reuse restores the references and the mask (and the rest of the form)", async () => {
    // An inpainting job: the reference from the first test, a mask painted with the mouse.
    await page.locator("[data-testid=mask-painter] button", { hasText: "Fill" }).click();
    await page.fill("#prompt", "repaint everything");
    const n = posts.length;
    await generateAndWait();
    assert.match(String(posts[n].mask_image), /^data:image\/png;base64,/);
    maskedJob = await page.locator("[data-testid=gallery-item]").first().getAttribute("data-job") ?? "";
    // Gallery thumbnails are square (the pages' own .thumb rule once made them 64 px high strips).
    const thumb = (await page.locator("[data-testid=gallery-item] .thumb").first().boundingBox())!;
    assert.ok(thumb.width > 100 && Math.abs(thumb.width - thumb.height) < 2, `thumbnail ${thumb.width}×${thumb.height}`);
    // Change everything, then reuse.
    await clearReferences();
    await page.fill("#prompt", "something else");
    await page.locator(`[data-job="${maskedJob}"] button`, { hasText: "Reuse parameters" }).click();
    await statusLine().filter({ hasText: /Loaded the parameters|Could not reuse/ }).waitFor();
    assert.match(await statusLine().textContent() ?? "", /with 1 reference image and its mask\.$/);
    assert.equal(await page.inputValue("#prompt"), "repaint everything");
    assert.equal(await page.locator("[data-testid=ref-item]").count(), 1);
    assert.match(await page.locator("[data-testid=ref-item]").textContent() ?? "", new RegExp(`${24 * multipleOf}×${16 * multipleOf}`));
    await page.locator("summary", { hasText: "Inpaint" }).click();
    await page.locator("text=The mask is sent with the request").waitFor();
    // The restored request equals the original one, images included.
    const n2 = posts.length;
    await generateAndWait();
    const pixels = async (u: unknown) => (await sharp(Buffer.from(String(u).split(",")[1], "base64")).greyscale().raw().toBuffer());
    assert.ok((await pixels(posts[n2].input_image)).equals(await pixels(posts[n].input_image)), "the same first image");
    assert.ok((await pixels(posts[n2].mask_image)).equals(await pixels(posts[n].mask_image)), "the same mask");
    assert.equal(posts[n2].seed, posts[n].seed);
    // A mask and an expansion together are refused in the form (the server refuses them: the
    // expansion makes its own mask), not sent and refused.
    await page.getByLabel("Right").fill(String(multipleOf));
    const blocked = posts.length;
    const gen = page.locator("[data-testid=generate]");
    assert.equal(await gen.getAttribute("aria-disabled"), "true");
    assert.match(await gen.getAttribute("title") ?? "", /mask and an expansion cannot be combined/);
    await gen.click({ force: true }); // aria-disabled, so Playwright would wait for it to be enabled
    await page.locator("[data-testid=submit-errors]", { hasText: /mask and an expansion cannot be combined/ }).waitFor();
    assert.equal(posts.length, blocked, "nothing was sent");
    await page.getByLabel("Right").fill("0");
  });

  it("a queued second job runs after the first; the queue is listed with cancels and survives a reload", async () => {
    await clearReferences();
    // Long enough (8 images) that the second job is still queued after a reload.
    await customSize(32 * multipleOf, 32 * multipleOf);
    await page.fill("#batch", "8");
    await page.fill("#prompt", "first in line");
    await page.click("[data-testid=generate]");
    await page.locator("[data-testid=queue-item]").first().waitFor();
    await page.fill("#batch", "1");
    await page.fill("#prompt", "second in line");
    assert.equal(await page.locator("[data-testid=generate]").textContent(), "Add to queue");
    await page.click("[data-testid=generate]");
    await page.locator("[data-testid=queue-item]").nth(1).waitFor();
    await page.evaluate(() => window.scrollTo(0, 0));
    await shot("11-queue-and-bar");
    const ids = await page.locator("[data-testid=queue-item]").evaluateAll((els) => els.map((e) => e.getAttribute("data-job")!));
    assert.equal(ids.length, 2);
    await page.locator("[data-testid=toast]", { hasText: "Added to the queue (1 ahead)" }).waitFor();
    // The server keeps the queue: a reload lists the same jobs.
    await page.reload();
    await page.locator("[data-testid=model-limits]").waitFor();
    const after = await page.locator("[data-testid=queue-item]").evaluateAll((els) => els.map((e) => e.getAttribute("data-job")!));
    assert.ok(after.length >= 1 && ids.slice(ids.length - after.length).join() === after.join(), `queue after reload ${after} (before ${ids})`);
    // Both end, the second after the first.
    await page.locator("[data-testid=queue-item]").first().waitFor({ state: "detached", timeout: 120_000 });
    await page.locator("[data-testid=queue]").waitFor({ state: "detached", timeout: 120_000 });
    const [a, b] = await Promise.all(ids.map((id) => api(`/v1/jobs/${id}`)));
    assert.equal(a.state, "ready");
    assert.equal(b.state, "ready");
    assert.ok(b.started_at >= a.ended_at, `second started ${b.started_at}, first ended ${a.ended_at}`);
    // The batch is one gallery card with its 8 images.
    const card = page.locator(`[data-testid=gallery-item][data-job="${ids[0]}"]`);
    await card.waitFor();
    assert.equal(await card.getAttribute("data-images"), "8");
    assert.match(await card.locator("[data-testid=gallery-params]").textContent() ?? "", /images8/);
  });

  it("shows the stage, percentage and time on the sticky bar, and notices as toasts", async () => {
    // Large enough that each step renders on its own.
    await customSize(64 * multipleOf, 64 * multipleOf);
    await page.fill("#prompt", "stages");
    await page.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { seen: string[] }).seen = seen;
      new MutationObserver(() => {
        const label = document.querySelector("[data-testid=progress] label")?.textContent;
        const nums = document.querySelector("[data-testid=progress-numbers]")?.textContent;
        const s = `${label} | ${nums}`;
        if (label && seen[seen.length - 1] !== s) seen.push(s);
      }).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    await generateAndWait();
    const seen = await page.evaluate(() => (window as unknown as { seen: string[] }).seen);
    assert.ok(seen.some((s) => /^Step [1-4] of 4 \| \d+% · \d/.test(s)), `bar states: ${JSON.stringify(seen)}`);
    assert.ok(seen.some((s) => /^(Loading model|Encoding prompt|Decoding|Waiting for the server|Starting)/.test(s)), `bar states: ${JSON.stringify(seen)}`);
    assert.ok(seen.every((s) => !/ 100%/.test(s)), "never 100 % while running");
    // A notice as a toast near the bar: "Seed set".
    const first = page.locator("[data-testid=gallery-item]").first();
    await first.locator("button", { hasText: "Reuse seed" }).click();
    await page.locator("[data-testid=toast]", { hasText: /Seed set to \d+/ }).waitFor();
  });

  it("a LoRA chosen in the picker is sent and recorded in the image", async () => {
    const item = page.locator("[data-testid=lora-item][data-lora=style]");
    assert.match(await item.textContent() ?? "", /kohya, rank \d+, \d+ weights/);
    await item.getByRole("checkbox").check();
    await setRange("#lora-style", 0.8);
    await page.fill("#prompt", "with a lora");
    const n = posts.length;
    await generateAndWait();
    assert.deepEqual(posts[n].loras, [{ name: "style", strength: 0.8 }]);
    const card = page.locator("[data-testid=gallery-item]").first();
    assert.match(await card.locator("[data-testid=gallery-params]").textContent() ?? "", /lorasstyle:0\.8/);
    // The PNG itself records it: the PNG-info view shows every recorded field.
    await card.locator("button", { hasText: "PNG info" }).click();
    const info = page.locator("[data-testid=png-info-record]");
    await info.waitFor();
    await page.locator("[data-testid=png-info]").scrollIntoViewIfNeeded();
    await shot("12-png-info");
    const text = await info.textContent() ?? "";
    assert.match(text, /loras\[\{"name":"style","strength":0\.8\}\]/);
    for (const field of ["prompt", "seed", "width", "height", "steps", "model", "variant"]) assert.match(text, new RegExp(field));
    await page.locator("[data-testid=png-info] button", { hasText: "Close" }).click();
  });

  it("opening a PNG replaces the form and lists what it could not apply", async () => {
    // The form now has a LoRA, batch 1 and a fixed seed; set a batch and a reference as well.
    await page.fill("#batch", "3");
    await addReference("ref.png", await png(64, 64));
    const a1111 = pngText("parameters", "a castle on a hill\nSteps: 20, Sampler: Euler, CFG scale: 3.5, Seed: 1234, Size: 128x96, Model: other");
    await page.locator("[data-testid=settings-file]").setInputFiles({ name: "castle.png", mimeType: "image/png", buffer: a1111 });
    await statusLine().filter({ hasText: "the form was replaced" }).waitFor();
    const msg = await statusLine().textContent() ?? "";
    assert.equal(await page.inputValue("#prompt"), "a castle on a hill");
    assert.equal(await page.inputValue("#seed"), "1234");
    assert.equal(await page.inputValue("#batch"), "1", "batch back to the default");
    assert.equal(await page.locator("[data-testid=ref-item]").count(), 0, "references cleared");
    assert.equal(await page.locator("[data-testid=lora-item] input:checked").count(), 0, "LoRAs cleared");
    assert.match(msg, /Not applied: .*model other.*steps 20.*guidance 3\.5.*Sampler: Euler/);
  });

  it("deletes an image (gone after a reload, its file too) and hides one; filters by prompt text and model", async () => {
    const card = page.locator("[data-testid=gallery-item]").first();
    const id = await card.getAttribute("data-job") ?? "";
    const sample = (await api(`/v1/jobs/${id}`)).result.sample as string;
    await card.locator("button", { hasText: "Delete…" }).click();
    await card.locator("button", { hasText: "Delete for good" }).click();
    await page.locator(`[data-testid=gallery-item][data-job="${id}"]`).waitFor({ state: "detached" });
    assert.equal((await fetch(sample)).status, 404, "the image file is gone");
    // Hide another.
    const hideId = await page.locator("[data-testid=gallery-item]").first().getAttribute("data-job") ?? "";
    await page.locator(`[data-job="${hideId}"] button`, { hasText: "Hide" }).click();
    await page.locator(`[data-testid=gallery-item][data-job="${hideId}"]`).waitFor({ state: "detached" });
    await page.reload();
    await page.locator("[data-testid=gallery-item]").first().waitFor();
    assert.equal(await page.locator(`[data-job="${id}"]`).count(), 0, "deleted: gone after a reload");
    assert.equal(await page.locator(`[data-job="${hideId}"]`).count(), 0, "hidden: not in the default view");
    await page.locator("[data-testid=filter-hidden]").check();
    await page.locator(`[data-testid=gallery-item][data-job="${hideId}"]`).waitFor();
    await page.locator("[data-testid=filter-hidden]").uncheck();
    // Filters.
    await page.fill("[data-testid=filter-q]", "second in line");
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=gallery-item]").length === 1);
    assert.match(await page.locator("[data-testid=gallery-item] .card-prompt").textContent() ?? "", /second in line/);
    await page.fill("[data-testid=filter-q]", "");
    await page.locator("[data-testid=filter-since]").fill("2099-01-01");
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=gallery-item]").length === 0);
    await page.locator("[data-testid=filter-since]").fill("");
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=gallery-item]").length > 1);
  });

  it("the JSON builder round-trips every field of BFL's schema and unknown ones; the palette comes from the colour picker", async () => {
    const prompt = {
      scene: "a harbour at dawn",
      subjects: [{ description: "an old fisherman", position: "left", action: "mending a net", pose: "kneeling", color_palette: ["#112233"] }, { type: "boat", description: "a red boat" }],
      style: "oil painting", color_palette: ["#1B3A5C", "#FF8800"], lighting: "soft backlight", mood: "calm",
      background: "foggy hills", composition: "rule of thirds",
      camera: { angle: "eye level", lens: "35mm", depth_of_field: "shallow", distance: "medium", "f-number": "f/2.8", ISO: 200 },
      weather: { rain: "light" }, seed_note: 7,
    };
    await page.locator("label", { hasText: /^Text$/ }).click();
    await page.fill("#prompt", JSON.stringify(prompt));
    await page.locator("label", { hasText: "JSON builder" }).click();
    assert.equal(await page.inputValue("#b-background"), "foggy hills");
    assert.equal(await page.inputValue("#b-composition"), "rule of thirds");
    assert.match(await page.locator("[data-testid=palette]").textContent() ?? "", /#1B3A5C.*#FF8800/);
    await page.locator("[data-testid=palette]").scrollIntoViewIfNeeded();
    await shot("13-json-builder-palette");
    await page.locator("label", { hasText: /^Text$/ }).click();
    assert.deepEqual(JSON.parse(await page.inputValue("#prompt")), prompt);
    // The palette from the colour picker, then back to text.
    await page.locator("label", { hasText: "JSON builder" }).click();
    await page.fill("#colour-hex", "#00AA55");
    await page.locator("button", { hasText: "Add #00AA55 to the palette" }).click();
    await page.click("button[aria-label='Remove #FF8800 from the palette']");
    await page.locator("label", { hasText: /^Text$/ }).click();
    assert.deepEqual(JSON.parse(await page.inputValue("#prompt")).color_palette, ["#1B3A5C", "#00AA55"]);
  });

  it("the form is remembered across a reload", async () => {
    await page.fill("#prompt", "remember me");
    await page.fill("#seed", "31337");
    await page.reload();
    await page.locator("[data-testid=model-limits]").waitFor();
    assert.equal(await page.inputValue("#prompt"), "remember me");
    assert.equal(await page.inputValue("#seed"), "31337");
  });

  it("works behind a path prefix (every call relative to the page)", async () => {
    const proxy = await prefixProxy(server.url);
    try {
      await page.goto(`${proxy.url}${PREFIX}`);
      await page.locator("[data-testid=model-limits]").waitFor();
      const src = await page.locator("[data-testid=gallery-item] img").first().getAttribute("src");
      assert.match(src ?? "", /^v1\/images\//);
      assert.equal(await page.evaluate((u) => fetch(u).then((r) => r.status), src!), 200, "a gallery image through the prefix");
      await customSize(16 * multipleOf, 16 * multipleOf);
      await page.fill("#prompt", "behind a proxy");
      await generateAndWait();
      const outside = proxy.seen.filter((u) => !u.startsWith(PREFIX));
      assert.deepEqual(outside, [], "no request went around the prefix");
      assert.ok(proxy.seen.some((u) => u.startsWith(`${PREFIX}v1/jobs/`) && u.endsWith("/events")), "events through the prefix");
    } finally {
      await page.goto(`${server.url}/`);
      await proxy.close();
    }
  });

  it("logged no errors in the page", () => {
    assert.deepEqual(consoleErrors.filter((e) => !/favicon/.test(e)), []);
  });
});

/** A 1×1 PNG with one tEXt chunk. */
function pngText(keyword: string, text: string): Buffer {
  const table = Array.from({ length: 256 }, (_, n) => { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; return c >>> 0; });
  const crc = (b: Buffer) => { let c = 0xffffffff; for (const x of b) c = table[(c ^ x) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, "latin1"), data]);
    const c = Buffer.alloc(4); c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const idat = Buffer.from([0x78, 0x01, 0x01, 0x02, 0x00, 0xfd, 0xff, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01]);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk("IHDR", Buffer.from([0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0])),
    chunk("tEXt", Buffer.concat([Buffer.from(keyword, "latin1"), Buffer.from([0]), Buffer.from(text, "latin1")])), chunk("IDAT", idat), chunk("IEND", Buffer.alloc(0))]);
}
