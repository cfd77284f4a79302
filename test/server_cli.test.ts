// The command-line side of the server: `flux2 keys add|list|revoke`, the help
// texts, and flag errors (spawned as child processes).
import { test } from "node:test";
import assert from "node:assert/strict";
import { serveConfig } from "../src/cli/serve.js";
import { spawnCli, TINY } from "./helpers/net.js";
import { tempDir } from "./helpers/server.js";

async function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | string; out: string; err: string }> {
  const c = spawnCli(args, env);
  const code = await c.exited;
  await new Promise((r) => setImmediate(r));
  return { code, out: c.out.join("\n"), err: c.err.join("\n") };
}

test("flux2 keys add | list | revoke", { timeout: 30_000 }, async () => {
  const data = tempDir("flux2-keys-");
  const add = await run(["keys", "add", "--name", "ci", "--max-active", "3", "--data", data]);
  assert.equal(add.code, 0, add.err);
  const key = add.out.trim();
  assert.match(key, /^f2k_[A-Za-z0-9_-]{43}$/);
  assert.match(add.err, /cannot be shown again/);
  const list = await run(["keys", "list", "--data", data]);
  assert.equal(list.code, 0);
  const [id, prefix, name, , max, state] = list.out.split("\t");
  assert.match(id, /^k_[0-9a-f]{12}$/);
  assert.equal(prefix, key.slice(0, 10) + "…");
  assert.deepEqual([name, max, state], ["ci", "3", "active"]);
  assert.ok(!list.out.includes(key), "the key itself is never shown again");
  const revoke = await run(["keys", "revoke", id, "--data", data]);
  assert.equal(revoke.code, 0);
  assert.match((await run(["keys", "list", "--data", data])).out, /revoked/);
  assert.equal((await run(["keys", "revoke", id, "--data", data])).code, 1);
  assert.equal((await run(["keys", "frobnicate", "--data", data])).code, 2);
});

test("help texts explain the flags; bad flags fail clearly", { timeout: 30_000 }, async () => {
  const serve = await run(["serve", "--help"]);
  assert.equal(serve.code, 0);
  for (const flag of ["--port", "--host", "--model ID=DIR", "--data", "--queue", "--require-keys", "--bfl-key", "--max-active", "--body-limit", "--allow-private-urls", "x-flux2-signature"]) {
    assert.ok(serve.out.includes(flag), `serve --help mentions ${flag}`);
  }
  const worker = await run(["worker", "--help"]);
  assert.equal(worker.code, 0);
  for (const flag of ["--queue", "--model", "--data", "--store", "--lock"]) assert.ok(worker.out.includes(flag));
  assert.match((await run(["keys", "--help"])).out, /revoke ID/);

  // An S3 store with no region configured is refused before anything connects (test/server_s3 covers the store itself).
  const s3 = await run(["worker", "--queue", "redis://127.0.0.1:1", "--model", `m=${TINY}`, "--store", "s3://bucket/x"], { AWS_REGION: "", AWS_DEFAULT_REGION: "", AWS_PROFILE: "", AWS_CONFIG_FILE: "/nonexistent" });
  assert.equal(s3.code, 1);
  assert.match(s3.err, /S3 store s3:\/\/bucket\/x: no region: set AWS_REGION or --s3-region/);
  const badModel = await run(["serve", "--model", "no-equals-sign"]);
  assert.equal(badModel.code, 1);
  assert.match(badModel.err, /ID=DIR/);
});

test("serve flags map onto the configuration", () => {
  const cfg = serveConfig(["--port", "0", "--host", "127.0.0.1", "--model", `flux-2-klein-4b=${TINY}`, "--data", "/tmp/x", "--require-keys",
    "--max-active", "5", "--body-limit", "1.5", "--lease", "10", "--queue", "redis://127.0.0.1:6379", "--allow-private-urls"])!;
  assert.deepEqual(cfg.models, [{ id: "flux-2-klein-4b", dir: TINY }]);
  assert.equal(cfg.port, 0);
  assert.equal(cfg.requireKeys, true);
  assert.equal(cfg.maxActivePerKey, 5);
  assert.equal(cfg.bodyLimit, 1.5 * 1024 * 1024);
  assert.equal(cfg.leaseMs, 10_000);
  assert.equal(cfg.queue, "redis://127.0.0.1:6379");
  assert.equal(cfg.allowPrivateUrls, true);
  assert.throws(() => serveConfig(["--queue", "amqp://x"]), /redis:\/\//);
  assert.throws(() => serveConfig(["--max-active", "-1"]), /max-active/);
  assert.throws(() => serveConfig(["--model", "flux-2-pro=/x"]), /reserved/);
});
