// Tests of `flux2 pull` (src/hub/, src/cli/pull.ts) against the fake Hub of
// fake_hub.ts on 127.0.0.1: full pull, cheap re-runs, resume with Range,
// checksum failures, gated repositories, unknown repositories, no network,
// full disk, stalls, file selection and the progress output.
import { test, describe, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Writable } from "node:stream";
import { FakeHub, closedPort, type FakeFileSpec } from "./fake_hub.js";
import { pull, PullError, MANIFEST_NAME, type PullOptions } from "../src/hub/index.js";
import { selectFiles, globToRegExp, matchesAnyGlob } from "../src/hub/select.js";
import { gitBlobSha1 } from "../src/hub/verify.js";
import { runPullCommand } from "../src/cli/pull.js";

const REPO = "acme/FLUX.2-tiny";
const BIG = "transformer/diffusion_pytorch_model.safetensors";
const MiB = 1 << 20;

/** Deterministic pseudo-random bytes. */
function bytes(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

const json = (v: unknown) => Buffer.from(JSON.stringify(v, null, 2));

const FILES: FakeFileSpec[] = [
  { path: ".gitattributes", content: Buffer.from("*.safetensors filter=lfs diff=lfs merge=lfs -text\n") },
  { path: "README.md", content: Buffer.from("# FLUX.2 tiny\nA test repository.\n") },
  { path: "model_index.json", content: json({ _class_name: "Flux2KleinPipeline", is_distilled: true }) },
  { path: "scheduler/scheduler_config.json", content: json({ _class_name: "FlowMatchEulerDiscreteScheduler" }) },
  { path: "transformer/config.json", content: json({ _class_name: "Flux2Transformer2DModel" }) },
  { path: BIG, content: bytes(3 * MiB + 123, 1), lfs: true },
  { path: "vae/config.json", content: json({ _class_name: "AutoencoderKLFlux2" }) },
  { path: "vae/diffusion_pytorch_model.safetensors", content: bytes(200_000, 2), lfs: true },
  { path: "text_encoder/config.json", content: json({ model_type: "qwen3" }) },
  { path: "text_encoder/model.safetensors", content: bytes(150_000, 3), lfs: true },
  { path: "text_encoder/pytorch_model.bin", content: bytes(150_000, 4), lfs: true },
  { path: "tokenizer/tokenizer.json", content: json({ model: { type: "BPE" } }) },
  { path: "tokenizer/added_tokens.txt", content: Buffer.alloc(0) },
  { path: "flux-2-tiny.safetensors", content: bytes(400_000, 5), lfs: true },
];
const DEFAULT_SKIPPED = ["flux-2-tiny.safetensors", "text_encoder/pytorch_model.bin"];
const fileContent = (p: string) => FILES.find((f) => f.path === p)!.content;

let hub: FakeHub;
let tmp = "";
let savedEnv: Record<string, string | undefined> = {};
let caseNo = 0;

/** A Writable that keeps what is written. */
function sink(): Writable & { text: () => string } {
  const chunks: string[] = [];
  const w = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  }) as Writable & { text: () => string };
  w.text = () => chunks.join("");
  return w;
}

function newDir(): string {
  return path.join(tmp, `case-${++caseNo}`);
}

function opts(dir: string, extra: Partial<PullOptions> = {}): PullOptions & { progress: Writable & { text: () => string } } {
  return {
    repo: REPO,
    dir,
    hubUrl: hub.url,
    retries: 0,
    retryDelayMs: 0,
    requestTimeoutMs: 5000,
    idleTimeoutMs: 5000,
    tty: false,
    ...extra,
    progress: sink(),
  };
}

async function rejectsWith(p: Promise<unknown>, kind: string, ...fragments: string[]): Promise<PullError> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof PullError, `expected a PullError, got ${err === undefined ? "success" : String(err)}`);
  assert.equal(err.kind, kind, `kind of: ${err.message}`);
  for (const f of fragments) assert.ok(err.message.includes(f), `message lacks ${JSON.stringify(f)}: ${err.message}`);
  return err;
}

function assertPulled(dir: string, paths: string[]): void {
  for (const p of paths) {
    const got = fs.readFileSync(path.join(dir, p));
    assert.ok(got.equals(fileContent(p)), `${p} differs`);
    assert.ok(!fs.existsSync(path.join(dir, p + ".incomplete")), `${p}.incomplete left behind`);
  }
}

/** Every file of the repository except the default-skipped ones. */
const DEFAULT_PATHS = FILES.map((f) => f.path).filter((p) => !DEFAULT_SKIPPED.includes(p)).sort();

/** Content requests (not the listing) made since `since`. */
function contentRequests(since: number) {
  return hub.requests.slice(since).filter((r) => r.url.includes("/resolve/") || r.url.startsWith("/cdn/"));
}

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-pull-"));
  for (const k of ["HF_TOKEN", "HF_ENDPOINT"]) {
    savedEnv[k] = process.env[k];
    delete process.env[k];
  }
  hub = await FakeHub.start();
  hub.addRepo(REPO, FILES);
  hub.addRepo("acme/FLUX.2-gated", FILES, { gated: ["hf_goodtoken"] });
});

after(async () => {
  await hub.close();
  fs.rmSync(tmp, { recursive: true, force: true });
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

beforeEach(() => {
  hub.failOnce.clear();
  hub.corrupt.clear();
  hub.stall.clear();
  hub.ignoreRange = false;
  hub.pageSize = 100;
  delete process.env.HF_TOKEN;
  delete process.env.HF_ENDPOINT;
});

describe("file selection", () => {
  test("globs follow fnmatch: * crosses folders, a folder glob takes the folder", () => {
    assert.ok(globToRegExp("*.json").test("transformer/config.json"));
    assert.ok(globToRegExp("transformer").test("transformer/config.json"));
    assert.ok(globToRegExp("transformer/").test("transformer/a/b.safetensors"));
    assert.ok(!globToRegExp("transformer").test("transformer2/config.json"));
    assert.ok(globToRegExp("vae/*.safetensors").test("vae/diffusion_pytorch_model.safetensors"));
    assert.ok(globToRegExp("model-0000[1-3]-of-*.safetensors").test("model-00002-of-00004.safetensors"));
    assert.ok(!globToRegExp("model-0000[!1-3]-of-*").test("model-00002-of-00004.safetensors"));
    assert.ok(globToRegExp("?.txt").test("a.txt") && !globToRegExp("?.txt").test("ab.txt"));
    assert.ok(globToRegExp("a+b(c).json").test("a+b(c).json"));
    assert.ok(matchesAnyGlob("README.md", ["*.json", "README*"]));
  });

  test("default: a diffusers repo leaves out root single files and non-safetensors duplicates", () => {
    const files = FILES.map((f) => ({ path: f.path, size: f.content.byteLength }));
    const { selected, skipped } = selectFiles(files);
    assert.deepEqual(skipped.map((s) => s.file.path).sort(), DEFAULT_SKIPPED.slice().sort());
    assert.deepEqual(selected.map((f) => f.path).sort(), DEFAULT_PATHS);
    // No model_index.json: a plain BFL repository, everything is taken.
    const bfl = files.filter((f) => f.path !== "model_index.json");
    assert.equal(selectFiles(bfl).skipped.length, 0);
    // --include replaces the rules.
    const inc = selectFiles(files, ["flux-2-tiny.safetensors", "vae"]);
    assert.deepEqual(inc.selected.map((f) => f.path).sort(), ["flux-2-tiny.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]);
  });
});

describe("flux2 pull against a fake Hub", () => {
  test("full pull downloads and verifies every needed file (paginated listing)", async () => {
    hub.pageSize = 4;
    const dir = newDir();
    const since = hub.requests.length;
    const o = opts(dir);
    const r = await pull(o);
    assert.deepEqual(r.files.map((f) => f.path), DEFAULT_PATHS);
    assert.ok(r.files.every((f) => f.status === "downloaded"));
    assert.deepEqual(r.skipped.map((s) => s.path).sort(), DEFAULT_SKIPPED.slice().sort());
    assertPulled(dir, DEFAULT_PATHS);
    for (const p of DEFAULT_SKIPPED) assert.ok(!fs.existsSync(path.join(dir, p)), `${p} should be left out`);
    assert.equal(fs.statSync(path.join(dir, "tokenizer/added_tokens.txt")).size, 0);
    assert.ok(fs.existsSync(path.join(dir, MANIFEST_NAME)));
    const tree = hub.requests.slice(since).filter((q) => q.url.startsWith(`/api/models/${REPO}/tree/main`));
    assert.ok(tree.length >= 4, `listing should be paginated, saw ${tree.length} pages`);
    assert.ok(tree.every((q) => q.url.includes("recursive=true")));
    assert.ok(contentRequests(since).some((q) => q.url.startsWith("/cdn/")), "LFS files come through the CDN redirect");
    const log = o.progress.text();
    assert.match(log, /downloading transformer\/diffusion_pytorch_model\.safetensors \(3\.15 MB\)/);
    assert.match(log, /done transformer\/diffusion_pytorch_model\.safetensors \(3\.15 MB, sha256 ok/);
    assert.match(log, /done model_index\.json \(\d+ B, git sha1 ok/);
    assert.match(log, /leaving out 2 files/);
    assert.ok(!log.includes("\r"), "plain lines when not a TTY");
  });

  test("re-running skips everything; a changed or unrecorded file is checked", async () => {
    const dir = newDir();
    await pull(opts(dir));
    let since = hub.requests.length;
    const again = await pull(opts(dir));
    assert.ok(again.files.every((f) => f.status === "present"), JSON.stringify(again.files));
    assert.equal(again.downloadedBytes, 0);
    assert.equal(contentRequests(since).length, 0, "a re-run only lists the repository");

    // Without the manifest the files are hashed once, not downloaded.
    fs.rmSync(path.join(dir, MANIFEST_NAME));
    since = hub.requests.length;
    const checked = await pull(opts(dir));
    assert.ok(checked.files.every((f) => f.status === "verified"));
    assert.equal(contentRequests(since).length, 0);

    // A file damaged in place (same size) is noticed and fetched again.
    const vae = path.join(dir, "vae/diffusion_pytorch_model.safetensors");
    const damaged = fs.readFileSync(vae);
    damaged[10] ^= 1;
    fs.writeFileSync(vae, damaged);
    const fixed = await pull(opts(dir));
    assert.deepEqual(fixed.files.filter((f) => f.status !== "present").map((f) => [f.path, f.status]), [["vae/diffusion_pytorch_model.safetensors", "downloaded"]]);
    assertPulled(dir, DEFAULT_PATHS);
  });

  test("--include overrides the default selection", async () => {
    const dir = newDir();
    const r = await pull(opts(dir, { include: ["flux-2-tiny.safetensors", "vae/"] }));
    assert.deepEqual(r.files.map((f) => f.path), ["flux-2-tiny.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]);
    assertPulled(dir, r.files.map((f) => f.path));
    assert.ok(!fs.existsSync(path.join(dir, "model_index.json")));
    await rejectsWith(pull(opts(newDir(), { include: ["nothing/*"] })), "usage", "no file of acme/FLUX.2-tiny matches --include nothing/*");
  });

  test("an interrupted download resumes from the partial file with a Range request", async () => {
    const dir = newDir();
    const cut = 1 * MiB;
    hub.failOnce.set(BIG, cut);
    const err = await rejectsWith(pull(opts(dir)), "interrupted", BIG, "run pull again to continue");
    assert.match(err.message, /1\.05 MB of 3\.15 MB kept/);
    const inc = path.join(dir, BIG + ".incomplete");
    assert.equal(fs.statSync(inc).size, cut, "the bytes that arrived are kept");
    assert.ok(!fs.existsSync(path.join(dir, BIG)));

    const since = hub.requests.length;
    const o = opts(dir);
    const r = await pull(o);
    const size = fileContent(BIG).byteLength;
    const ranged = contentRequests(since).filter((q) => q.url.startsWith("/cdn/") && q.range === `bytes=${cut}-${size - 1}`);
    assert.equal(ranged.length, 1, `expected one Range request from ${cut}: ${JSON.stringify(contentRequests(since))}`);
    assert.equal(r.files.find((f) => f.path === BIG)?.status, "resumed");
    assert.ok(r.downloadedBytes < size + 10_000, "only the rest of the big file came over again");
    assertPulled(dir, DEFAULT_PATHS);
    assert.equal(createHash("sha256").update(fs.readFileSync(path.join(dir, BIG))).digest("hex"), createHash("sha256").update(fileContent(BIG)).digest("hex"));
    assert.match(o.progress.text(), /resuming transformer\/diffusion_pytorch_model\.safetensors at 1\.05 MB of 3\.15 MB/);
  });

  test("a broken transfer is resumed automatically within the run (bounded retries)", async () => {
    const dir = newDir();
    hub.failOnce.set(BIG, 1_500_000);
    const since = hub.requests.length;
    const o = opts(dir, { retries: 2 });
    const r = await pull(o);
    assert.equal(r.files.find((f) => f.path === BIG)?.status, "downloaded");
    assert.ok(contentRequests(since).some((q) => q.range === `bytes=1500000-${fileContent(BIG).byteLength - 1}`));
    assert.match(o.progress.text(), /resuming \(attempt 1 of 2\)/);
    assertPulled(dir, DEFAULT_PATHS);
  });

  test("a server that ignores Range gets the file from the start", async () => {
    const dir = newDir();
    fs.mkdirSync(path.join(dir, "transformer"), { recursive: true });
    fs.writeFileSync(path.join(dir, BIG + ".incomplete"), fileContent(BIG).subarray(0, 700_000));
    hub.ignoreRange = true;
    const o = opts(dir, { include: [BIG] });
    await pull(o);
    assertPulled(dir, [BIG]);
    assert.match(o.progress.text(), /ignored Range/);
  });

  test("a stale partial file from another version is discarded once", async () => {
    const dir = newDir();
    fs.mkdirSync(path.join(dir, "transformer"), { recursive: true });
    fs.writeFileSync(path.join(dir, BIG + ".incomplete"), bytes(500_000, 99));
    const o = opts(dir, { include: [BIG] });
    const r = await pull(o);
    assert.equal(r.files[0].status, "downloaded");
    assertPulled(dir, [BIG]);
    assert.match(o.progress.text(), /checksum mismatch after resuming an earlier partial download/);
  });

  test("a checksum mismatch fails and removes the file (sha256 and git sha1)", async () => {
    const dir = newDir();
    hub.corrupt.add(BIG);
    const err = await rejectsWith(pull(opts(dir, { include: ["transformer/"] })), "checksum", `checksum mismatch for ${BIG}`, "expected sha256", "deleted");
    assert.ok(!fs.existsSync(path.join(dir, BIG)));
    assert.ok(!fs.existsSync(path.join(dir, BIG + ".incomplete")));
    assert.ok(err.message.includes(createHash("sha256").update(fileContent(BIG)).digest("hex")));

    hub.corrupt.clear();
    hub.corrupt.add("model_index.json");
    await rejectsWith(pull(opts(dir)), "checksum", "checksum mismatch for model_index.json", `expected git blob sha1 ${gitBlobSha1(fileContent("model_index.json"))}`);
    assert.ok(!fs.existsSync(path.join(dir, "model_index.json")));
    assert.ok(!fs.existsSync(path.join(dir, "model_index.json.incomplete")));
  });

  test("a gated repository fails clearly without a token and works with HF_TOKEN", async () => {
    const dir = newDir();
    const gated = "acme/FLUX.2-gated";
    await rejectsWith(pull(opts(dir, { repo: gated })), "gated", "HTTP 401", "this repository is gated: accept its license on the Hub and set HF_TOKEN", "no token was sent");
    await rejectsWith(pull(opts(dir, { repo: gated, token: "hf_wrong" })), "gated", "HTTP 403", "this repository is gated", "a token was sent");
    await rejectsWith(pull(opts(dir, { repo: gated, token: "not-a-token" })), "usage", 'start with "hf_"');

    // Through the CLI, with the token and the endpoint from the environment.
    process.env.HF_TOKEN = "hf_goodtoken";
    process.env.HF_ENDPOINT = hub.url;
    const since = hub.requests.length;
    const code = await runPullCommand([gated, "--dir", dir, "--quiet"]);
    assert.equal(code, 0);
    assertPulled(dir, DEFAULT_PATHS);
    const resolves = hub.requests.slice(since).filter((q) => q.url.includes("/resolve/"));
    assert.ok(resolves.length > 0 && resolves.every((q) => q.authorization === "Bearer hf_goodtoken"));
  });

  test("an unknown repository or revision is a clear error", async () => {
    await rejectsWith(pull(opts(newDir(), { repo: "acme/does-not-exist" })), "not_found", 'repository "acme/does-not-exist" not found', hub.url);
    await rejectsWith(pull(opts(newDir(), { revision: "v9" })), "not_found", 'revision "v9" not found in acme/FLUX.2-tiny');
    await rejectsWith(pull(opts(newDir(), { repo: "not a repo" })), "usage", "is not a Hub repository id");
  });

  test("connection refused is a clear error", async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    await rejectsWith(pull(opts(newDir(), { hubUrl: url })), "network", `cannot reach the Hub at ${url}`, "ECONNREFUSED");
    // The CLI prints it and exits 1.
    const errors: string[] = [];
    const orig = console.error;
    console.error = (...a: unknown[]) => void errors.push(a.join(" "));
    try {
      assert.equal(await runPullCommand([REPO, "--dir", newDir(), "--endpoint", url, "--quiet"]), 1);
    } finally {
      console.error = orig;
    }
    assert.match(errors.join("\n"), /flux2 pull: cannot reach the Hub at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
  });

  test("a full disk (ENOSPC) fails clearly and keeps the .incomplete file", { skip: !fs.existsSync("/dev/full") && "no /dev/full" }, async () => {
    const dir = newDir();
    fs.mkdirSync(path.join(dir, "vae"), { recursive: true });
    const inc = path.join(dir, "vae/diffusion_pytorch_model.safetensors.incomplete");
    fs.symlinkSync("/dev/full", inc); // every write to it fails with ENOSPC
    await rejectsWith(pull(opts(dir, { include: ["vae/diffusion_pytorch_model.safetensors"], retries: 2 })), "disk_full", "no space left on the device", inc, "run pull again");
    assert.ok(fs.lstatSync(inc).isSymbolicLink(), "the .incomplete file is kept");
  });

  test("a stalled transfer times out instead of hanging", async () => {
    const dir = newDir();
    hub.stall.set(BIG, 1000);
    const t0 = Date.now();
    await rejectsWith(pull(opts(dir, { include: [BIG], idleTimeoutMs: 300 })), "interrupted", "no data for 0.3 s", "run pull again");
    assert.ok(Date.now() - t0 < 4000);
    assert.equal(fs.statSync(path.join(dir, BIG + ".incomplete")).size, 1000);
  });

  test("stopping a pull (Ctrl-C) keeps the partial file for the next run", async () => {
    const dir = newDir();
    hub.stall.set(BIG, 5000);
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(new PullError("interrupted", "stopped by Ctrl-C")), 200);
    await rejectsWith(pull(opts(dir, { include: [BIG], retries: 3, signal: stop.signal })), "interrupted", "stopped by Ctrl-C", "run pull again");
    clearTimeout(timer);
    assert.equal(fs.statSync(path.join(dir, BIG + ".incomplete")).size, 5000);
    hub.stall.clear();
    const since = hub.requests.length;
    await pull(opts(dir, { include: [BIG] }));
    assert.ok(contentRequests(since).some((q) => q.range?.startsWith("bytes=5000-")));
    assertPulled(dir, [BIG]);
  });

  test("on a TTY the progress is one redrawn line with a bar", async () => {
    const dir = newDir();
    const o = opts(dir, { include: [BIG], tty: true });
    await pull(o);
    const out = o.progress.text();
    assert.ok(out.includes("\r\x1b[K"), "redraws in place");
    assert.match(out, /\[1\/1\] transformer\/diffusion_pytorch_model\.safetensors [█░]{24} \d+% /);
    assert.match(out, /done transformer\/diffusion_pytorch_model\.safetensors/);
  });

  test("CLI: help, bad arguments, dry run", async () => {
    const logs: string[] = [];
    const origLog = console.log;
    const origErr = console.error;
    console.log = (...a: unknown[]) => void logs.push(a.join(" "));
    console.error = (...a: unknown[]) => void logs.push(a.join(" "));
    try {
      assert.equal(await runPullCommand(["--help"]), 0);
      assert.match(logs.join("\n"), /--include GLOB/);
      assert.match(logs.join("\n"), /single-file checkpoints/);
      assert.equal(await runPullCommand([]), 2);
      assert.equal(await runPullCommand([REPO, "other/repo"]), 2);
      assert.equal(await runPullCommand([REPO, "--retries", "x"]), 2);
      assert.equal(await runPullCommand([REPO, "--bogus"]), 2);
      const dir = newDir();
      assert.equal(await runPullCommand([REPO, "--dir", dir, "--endpoint", hub.url, "--dry-run", "--include", "vae/*", "README.md"]), 0);
      assert.ok(!fs.existsSync(dir), "a dry run writes nothing");
    } finally {
      console.log = origLog;
      console.error = origErr;
    }
  });
});
