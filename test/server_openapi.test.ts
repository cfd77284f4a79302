// /openapi.json documents every route the server registers (and nothing it does not): the routes are
// taken from fastify's onRoute hook (RunningServer.routes), so a route added without its documentation
// fails here. Two servers cover every registration: one with a local model, a provider key and a LoRA
// folder, and one with no model (its POST /v1/finetune only answers 503).

import { after, test } from "node:test";
import assert from "node:assert/strict";
import { api } from "./helpers/net.js";
import { tempDir, testServer } from "./helpers/server.js";

const full = testServer({ loraDir: tempDir(), bflKey: "unused-key", bflBaseUrl: "http://127.0.0.1:9" });
const bare = testServer({ models: [] });
after(async () => { await (await full).close(); await (await bare).close(); });

/** fastify's pattern as an OpenAPI path: ":id" → "{id}", a trailing wildcard → "{path}". */
const openApiPath = (url: string) => url.replace(/:(\w+)/g, "{$1}").replace(/\*$/, "{path}");
/** GET routes get a HEAD twin from fastify (exposeHeadRoutes): documented with the GET. */
const documentable = (routes: { method: string; url: string }[]) => routes.filter((r) => !(r.method === "HEAD" && routes.some((g) => g.method === "GET" && g.url === r.url)));

for (const [name, server] of [["local model, provider and LoRA folder", full], ["no model", bare]] as const) {
  test(`every registered route is in /openapi.json (${name}), and every documented one is registered`, async () => {
    const s = await server;
    const doc = (await api(s.url, "GET", "/openapi.json")).body as { paths: Record<string, Record<string, unknown>> };
    const models = ((await api(s.url, "GET", "/v1/models")).body.models as { id: string }[]).map((m) => m.id);
    const routes = documentable(s.routes);
    assert.ok(routes.length >= 20, `the onRoute hook saw the routes: ${routes.length}`);
    const missing: string[] = [];
    for (const r of routes) {
      const method = r.method.toLowerCase();
      // BFL's own document has one path per model: /v1/:model is documented as each model's path.
      const paths = r.url === "/v1/:model" ? models.map((m) => `/v1/${m}`) : [openApiPath(r.url)];
      for (const p of paths) if (!doc.paths[p]?.[method]) missing.push(`${r.method} ${p} (registered as ${r.url})`);
    }
    assert.deepEqual(missing, [], "routes missing from /openapi.json");
    const registered = new Set(routes.map((r) => `${r.method} ${openApiPath(r.url)}`));
    const stale: string[] = [];
    for (const [p, item] of Object.entries(doc.paths)) {
      for (const method of Object.keys(item)) {
        const key = `${method.toUpperCase()} ${p}`;
        const perModel = method === "post" && models.some((m) => p === `/v1/${m}`) && registered.has("POST /v1/{model}");
        if (!registered.has(key) && !perModel) stale.push(key);
      }
    }
    assert.deepEqual(stale, [], "documented paths the server does not register");
  });
}

test("the studio's routes carry their parameters and response schemas", async () => {
  const s = await full;
  const doc = (await api(s.url, "GET", "/openapi.json")).body;
  const gallery = doc.paths["/v1/gallery"].get;
  assert.deepEqual(gallery.parameters.map((p: any) => p.name).sort(), ["before", "hidden", "limit", "model", "q", "since", "until"]);
  const job = gallery.responses["200"].content["application/json"].schema.properties.jobs.items;
  assert.ok(job.properties.hidden && job.properties.batch, "gallery jobs document hidden and batch");
  const loras = doc.paths["/v1/loras"].get.responses["200"].content["application/json"].schema;
  assert.deepEqual(Object.keys(loras.properties).sort(), ["lora_dir", "loras", "max_loras", "strength"]);
  const submit = doc.paths["/v1/flux-2-klein-4b"].post.parameters.map((p: any) => p.name);
  assert.ok(submit.includes("x-flux2-batch"), `submit parameters: ${submit}`);
});
