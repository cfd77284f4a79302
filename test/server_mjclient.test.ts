// A second, independent BFL client against `flux2 serve` (issue 20):
// MemberJunction's Black Forest Labs generator (`@memberjunction/ai-blackforestlabs`
// from the npm registry), used as its README shows, with its own BFL key and
// our base URL (its constructor's second argument). It was written against
// api.bfl.ai, not against this server:
// its own endpoint names (FLUX.1 [dev] is POST /v1/flux-dev), `X-Key` spelled
// its way, polling `{base}/get_result?id=`, downloading `result.sample` without
// a key. The smoke test: text to image with a size and a seed, the same seed
// again, a task cancelled on the server, and a refusal.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import sharp from "sharp";
import { FLUXImageGenerator } from "@memberjunction/ai-blackforestlabs";
import { api, TINY, waitFor } from "./helpers/net.js";
import { testServer } from "./helpers/server.js";

type Server = Awaited<ReturnType<typeof testServer>>;

describe("MemberJunction's BFL client against flux2 serve", () => {
  let s: Server;
  let flux: FLUXImageGenerator;

  before(async () => {
    // Any id can be mapped to a checkpoint: this client's FLUX.1 [dev] endpoint serves the tiny klein here.
    s = await testServer({ models: [{ id: "flux-dev", dir: TINY }] });
    flux = new FLUXImageGenerator("bfl_4f1c9a7e-user-own-key", `${s.url}/v1`);
    flux.setPollingConfig({ pollInterval: 50, maxWaitTime: 60_000 });
  });
  after(async () => {
    await s?.close();
  });

  test("text to image with a size and a seed; the same seed gives the same image", async () => {
    const r = await flux.GenerateImage({ prompt: "a red fox in the snow", model: "flux-dev", size: "256x192", seed: 7 });
    assert.equal(r.success, true, r.errorMessage);
    const img = r.images[0];
    const meta = await sharp(img.data!).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ["png", 256, 192]);
    assert.match(img.url!, new RegExp(`^${s.url}/v1/images/[0-9a-f]{64}\\.png$`), "result.sample is an absolute URL the client downloaded");
    assert.deepEqual(r.metadata, { seed: 7 });

    const again = await flux.GenerateImage({ prompt: "a red fox in the snow", model: "flux-dev", size: "256x192", seed: 7 });
    assert.ok(again.images[0].data!.equals(img.data!));
  });

  test("a task cancelled on the server: the client reports the failure", async () => {
    const call = flux.GenerateImage({ prompt: "to cancel", model: "flux-dev", size: "512x512" });
    const id = await waitFor("the task to run", async () => {
      const j = (await api(s.url, "GET", "/v1/jobs?limit=1")).body.jobs[0];
      return j?.request.prompt === "to cancel" && j.state === "running" ? j.id as string : null;
    });
    assert.equal((await api(s.url, "DELETE", `/v1/jobs/${id}`)).status, 200);
    const r = await call;
    assert.equal(r.success, false);
    assert.match(r.errorMessage ?? "", /Generation failed: Error/);
  });

  test("a model this server does not have is refused with BFL's 404, which the client reports", async () => {
    // Unknown names go to FLUX1.1 [pro]'s endpoint in this client.
    const quiet = console.error;
    console.error = () => {}; // the client logs every failure itself
    try {
      const r = await flux.GenerateImage({ prompt: "x", model: "flux-1.1-pro", size: "256x192" });
      assert.equal(r.success, false);
      assert.match(r.errorMessage ?? "", /BFL API error \(404\).*Model not found: flux-pro-1\.1/);
    } finally {
      console.error = quiet;
    }
  });
});
