// A provider batch in the studio (Debian's Chromium, a real server, a fake of BFL's API): a provider
// model makes one image per job, so a batch of 3 is 3 jobs; they carry one x-flux2-batch id and the
// gallery shows them as one card with 3 images, also after a reload. Reuse brings back the batch of 3
// from its first seed; Hide and Delete act on every job of the card.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { type BrowserContext, type Page } from "playwright-core";
import { type RunningServer } from "../src/server/app.js";
import { FakeBfl } from "./fake_bfl.js";
import { launchStudioBrowser, startStudioServer, studioSkip } from "./helpers/studio.js";

const PROVIDER = "flux-2-pro";

describe("studio: a provider batch is one gallery card (Chromium, real server, fake BFL)", { skip: studioSkip(true) }, () => {
  let fake: FakeBfl;
  let server: RunningServer & { dataDir: string };
  let context: BrowserContext;
  let page: Page;
  let profile: string;
  const batchHeaders: (string | undefined)[] = [];
  const gallery = async () => (await (await fetch(`${server.url}/v1/gallery?limit=50`)).json() as { jobs: { id: string; batch: string | null; hidden: boolean; request: Record<string, unknown> }[] }).jobs;
  const jobsDone = () => page.evaluate(() => Number(document.documentElement.dataset.jobsDone ?? 0));

  before(async () => {
    fake = await new FakeBfl().start();
    fake.pendingPolls = 1;
    server = await startStudioServer({ bflKey: fake.apiKey, bflBaseUrl: fake.url, providerPollMs: 20, providerBackoffMs: 20, allowPrivateUrls: true });
    profile = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-chromium-provider-"));
    context = await launchStudioBrowser(profile);
    context.on("request", (r) => {
      if (r.method() === "POST" && new URL(r.url()).pathname === `/v1/${PROVIDER}`) batchHeaders.push(r.headers()["x-flux2-batch"]);
    });
    page = context.pages()[0] ?? await context.newPage();
    await page.goto(`${server.url}/`);
    await page.locator("[data-testid=model-limits]").waitFor();
  });

  after(async () => {
    await context?.close().catch(() => undefined);
    await server?.close();
    await fake?.close();
    if (profile) fs.rmSync(profile, { recursive: true, force: true });
  });

  it("a batch of 3 on a provider model is 3 jobs with one batch id, shown as one card of 3 images (also after a reload)", async () => {
    await page.selectOption("#model", PROVIDER);
    await page.locator("label", { hasText: /^\s*Fixed\s*$/ }).click();
    await page.fill("#seed", "40");
    await page.fill("#prompt", "three owls on a branch");
    await page.fill("#batch", "3");
    const before = await jobsDone();
    await page.click("[data-testid=generate]");
    await page.waitForFunction((b) => Number(document.documentElement.dataset.jobsDone ?? 0) >= b + 3, before, { timeout: 60_000 });
    assert.equal(batchHeaders.length, 3, "one job per image");
    assert.ok(batchHeaders[0] && batchHeaders.every((h) => h === batchHeaders[0]), `x-flux2-batch headers: ${batchHeaders}`);
    assert.deepEqual(fake.submitted.map((s) => s.body.seed), [40, 41, 42], "image i has seed S + i");
    const jobs = (await gallery()).filter((j) => j.batch === batchHeaders[0]);
    assert.equal(jobs.length, 3);
    for (const reload of [false, true]) {
      if (reload) {
        await page.reload();
        await page.locator("[data-testid=model-limits]").waitFor();
      }
      const cards = page.locator("[data-testid=gallery-item]", { hasText: "three owls" });
      await cards.first().waitFor();
      assert.equal(await cards.count(), 1, `one card for the batch${reload ? " after a reload" : ""}`);
      assert.equal(await cards.getAttribute("data-jobs"), "3");
      assert.equal(await cards.getAttribute("data-images"), "3");
      assert.equal(await cards.locator(".thumb img").count(), 3);
      assert.equal(await cards.getAttribute("data-job"), jobs[jobs.length - 1].id, "the card is the first job's (the oldest)");
    }
  });

  it("Reuse parameters brings back the batch of 3 from its first seed", async () => {
    await page.fill("#batch", "1");
    await page.fill("#seed", "7");
    const card = page.locator("[data-testid=gallery-item]", { hasText: "three owls" });
    await card.locator("button", { hasText: "Reuse parameters" }).click();
    await page.locator("[data-testid=toast]", { hasText: "Loaded the parameters" }).waitFor();
    assert.equal(await page.inputValue("#batch"), "3");
    assert.equal(await page.inputValue("#seed"), "40");
  });

  it("Hide and Delete act on every job of the card", async () => {
    const card = page.locator("[data-testid=gallery-item]", { hasText: "three owls" });
    await card.locator("button", { hasText: "Hide" }).click();
    await card.waitFor({ state: "detached" });
    const batch = batchHeaders[0];
    assert.deepEqual((await gallery()).filter((j) => j.batch === batch), [], "all 3 hidden from the default view");
    await page.getByTestId("filter-hidden").check();
    await card.waitFor();
    assert.equal(await card.getAttribute("data-jobs"), "3");
    await card.locator("button", { hasText: "Delete…" }).click();
    await card.locator("button", { hasText: "Delete for good" }).click();
    await card.waitFor({ state: "detached" });
    const left = (await (await fetch(`${server.url}/v1/gallery?limit=50&hidden=include`)).json() as { jobs: { batch: string | null }[] }).jobs;
    assert.deepEqual(left.filter((j) => j.batch === batch), [], "all 3 jobs deleted");
    await page.reload();
    await page.locator("[data-testid=model-limits]").waitFor();
    assert.equal(await page.locator("[data-testid=gallery-item]", { hasText: "three owls" }).count(), 0);
  });
});
