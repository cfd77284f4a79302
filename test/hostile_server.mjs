// Issue 16's hostile cases 1-3 against `flux2 serve`, rerun by hand (not part of
// `npm test`: it takes minutes and mounts a tmpfs, so it needs root):
//   npx tsc -p tsconfig.json && node test/hostile_server.mjs [1|2|3|all]
// 1: ten 8000×8000 PNGs in one 2.7 MB body, three at once, three single 64 MP
//    references, a DELETE and a SIGTERM while a reference is preprocessed;
// 2: a 4 MB tmpfs filled while jobs run: submits, /health, SIGTERM, restart on
//    the full disk, restart after freeing space, a read-only data folder;
// 3: 2,000 event streams on one job; 1,000 slow-body and 200 slow-header connections.
// Loopback only; every server it starts is stopped.
import { spawn, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";

const ROOT = path.resolve(new URL("..", import.meta.url).pathname);
const CLI = path.join(ROOT, "dist/test/helpers/cli.js");
const TINY = path.join(ROOT, "testdata/golden/checkpoints/klein_distilled");
const which = process.argv[2] ?? "all";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function serve(dataDir, extra = []) {
  const p = spawn(process.execPath, [CLI, "serve", "--port", "0", "--data", dataDir, "--model", `flux-2-klein-4b=${TINY}`, "--threads", "1", ...extra], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "", err = "";
  p.stdout.on("data", (d) => (out += d));
  p.stderr.on("data", (d) => (err += d));
  const exited = new Promise((r) => p.on("exit", (c, s) => r(c ?? s)));
  const url = (async () => {
    for (let i = 0; i < 600; i++) {
      const m = /listening on (\S+)/.exec(out);
      if (m) return m[1];
      if (p.exitCode !== null) return null;
      await sleep(50);
    }
    return null;
  })();
  return { p, url, exited, get err() { return err; } };
}

function rss(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  return { rss: Number(/VmRSS:\s+(\d+)/.exec(s)[1]) * 1024, hwm: Number(/VmHWM:\s+(\d+)/.exec(s)[1]) * 1024 };
}
const mb = (n) => `${(n / 2 ** 20).toFixed(0)} MB`;

async function post(url, model, body) {
  const t0 = Date.now();
  const r = await fetch(`${url}/v1/${model}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, ms: Date.now() - t0, body: text.slice(0, 300), retryAfter: r.headers.get("retry-after") };
}
const job = async (url, id) => (await (await fetch(`${url}/v1/jobs/${id}`)).json());

let hugeB64;
async function huge() {
  hugeB64 ??= (await sharp({ create: { width: 8000, height: 8000, channels: 3, background: "#808080" } }).png().toBuffer()).toString("base64");
  return hugeB64;
}

async function case1() {
  console.log("== 1. cheap denial of service");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hostile1-"));
  const s = serve(dir, ["--log"]);
  const url = await s.url;
  const img = await huge();
  const ten = { prompt: "ten", width: 64, height: 64 };
  for (let i = 0; i < 10; i++) ten[i === 0 ? "input_image" : `input_image_${i + 1}`] = img;
  console.log(`ten 8000x8000 PNGs: body ${(JSON.stringify(ten).length / 1e6).toFixed(1)} MB`);
  const r10 = await post(url, "flux-2-klein-4b", ten);
  console.log(`  → ${r10.status} in ${r10.ms} ms: ${r10.body}`);
  console.log(`  server RSS ${mb(rss(s.p.pid).rss)}, peak ${mb(rss(s.p.pid).hwm)}`);
  // three at once
  const three = await Promise.all([post(url, "flux-2-klein-4b", ten), post(url, "flux-2-klein-4b", ten), post(url, "flux-2-klein-4b", ten)]);
  console.log(`three ten-image submits at once: ${three.map((r) => `${r.status} ${r.ms} ms`).join(", ")}; server peak RSS ${mb(rss(s.p.pid).hwm)}`);
  let t0 = Date.now();
  const three1 = await Promise.all([0, 1, 2].map(() => post(url, "flux-2-klein-4b", { prompt: "one", width: 64, height: 64, input_image: img })));
  console.log(`three single-reference (64 MP) submits at once: ${three1.map((r) => `${r.status} ${r.ms} ms`).join(", ")}; server peak RSS ${mb(rss(s.p.pid).hwm)}`);
  const ids = three1.filter((r) => r.status === 200).map((r) => JSON.parse(r.body).id);
  let first;
  for (;;) { const js = await Promise.all(ids.map((i) => job(url, i))); first = js.find((j) => j.state === "running"); if (first) break; await sleep(50); }
  const rest = ids.filter((i) => i !== first.id);
  await sleep(1500);
  t0 = Date.now();
  const del = await fetch(`${url}/v1/jobs/${first.id}`, { method: "DELETE" });
  console.log(`DELETE 1.5 s into the first job (decoding/shrinking its reference) → ${del.status} in ${Date.now() - t0} ms`);
  for (;;) { const js = await Promise.all(rest.map((i) => job(url, i))); const n = js.find((j) => j.started_at); if (n) { console.log(`  next job started ${(n.started_at * 1000 - t0).toFixed(0)} ms after the DELETE`); break; } await sleep(20); }
  // SIGTERM while the second preprocesses
  await sleep(1500);
  t0 = Date.now();
  s.p.kill("SIGTERM");
  const code = await s.exited;
  console.log(`SIGTERM mid-preprocessing: exit ${code} after ${Date.now() - t0} ms; stderr: ${s.err.trim().split("\n").slice(-2).join(" | ")}`);
  const s2 = serve(dir);
  const url2 = await s2.url;
  const states = await Promise.all(ids.map((i) => job(url2, i)));
  console.log(`  after restart: ${states.map((j) => `${j.state}/attempts ${j.attempts}`).join(", ")}`);
  for (const i of ids.slice(1)) await fetch(`${url2}/v1/jobs/${i}`, { method: "DELETE" });
  s2.p.kill("SIGTERM");
  await s2.exited;
}

function mount(dir, opts) { execFileSync("mount", ["-t", "tmpfs", "-o", opts, "tmpfs", dir]); }
function fill(dir) {
  const fd = fs.openSync(path.join(dir, "filler"), "a");
  try { for (;;) fs.writeSync(fd, Buffer.alloc(16384, 1)); } catch {}
  try { for (;;) fs.writeSync(fd, Buffer.alloc(512, 1)); } catch {}
  fs.closeSync(fd);
}

async function case2() {
  console.log("== 2. a full disk");
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), "hostile2-"));
  mount(mnt, "size=4m");
  try {
    const data = path.join(mnt, "data");
    const s = serve(data, ["--min-free", "0"]);
    const url = await s.url;
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push(JSON.parse((await post(url, "flux-2-klein-4b", { prompt: "disk", width: 256, height: 256, seed: i })).body).id);
    while ((await job(url, ids[0])).state !== "running") await sleep(10);
    fill(mnt);
    const subs = [];
    for (let i = 0; i < 5; i++) subs.push(await post(url, "flux-2-klein-4b", { prompt: "full", width: 64, height: 64, input_image: (await sharp({ create: { width: 96, height: 96, channels: 3, background: "#000", noise: { type: "gaussian", mean: 128, sigma: 60 } } }).png().toBuffer()).toString("base64") }));
    console.log(`submits on the full disk: ${subs.map((r) => `${r.status} (Retry-After ${r.retryAfter})`).join(", ")}`);
    console.log(`  e.g. ${subs[0].body}`);
    const h = await fetch(`${url}/health`);
    console.log(`/health: ${h.status} ${(await h.text()).slice(0, 200)}`);
    await sleep(3000);
    console.log(`jobs while full: ${(await Promise.all(ids.map((i) => job(url, i)))).map((j) => j.state).join(", ")}; process alive: ${s.p.exitCode === null}`);
    const tmp = fs.readdirSync(data, { recursive: true }).filter((f) => String(f).endsWith(".tmp"));
    console.log(`.tmp files: ${tmp.length}`);
    let t0 = Date.now();
    s.p.kill("SIGTERM");
    console.log(`first SIGTERM on the full disk: exit ${await s.exited} after ${Date.now() - t0} ms`);
    const r = serve(data, ["--min-free", "0"]);
    console.log(`restart on the full disk: ${await r.url ? "LISTENING" : "did not listen"}, exit ${await r.exited}: ${r.err.trim()}`);
    fs.rmSync(path.join(mnt, "filler"));
    const s3 = serve(data, ["--min-free", "0"]);
    const url3 = await s3.url;
    t0 = Date.now();
    for (;;) {
      const js = await Promise.all(ids.map((i) => job(url3, i)));
      if (js.every((j) => j.state === "ready") || Date.now() - t0 > 90_000) { console.log(`after freeing space and restarting: ${js.map((j) => `${j.state}/attempts ${j.attempts}`).join(", ")}`); break; }
      await sleep(250);
    }
    s3.p.kill("SIGTERM");
    await s3.exited;
    execFileSync("mount", ["-o", "remount,ro", mnt]);
    const ro = serve(path.join(mnt, "data"));
    console.log(`read-only data folder: ${await ro.url ? "LISTENING" : "did not listen"}, exit ${await ro.exited}: ${ro.err.trim()}`);
  } finally {
    execFileSync("umount", ["-l", mnt]);
  }
}

function rawConn(port, text) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = net.connect(port, "127.0.0.1", () => s.write(text));
    let reply = "";
    s.on("data", (d) => (reply += d));
    s.on("error", () => {});
    s.on("close", () => resolve({ ms: Date.now() - t0, status: reply.slice(9, 12) || "closed" }));
  });
}

async function case3() {
  console.log("== 3. event streams and slow connections");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hostile3-"));
  const s = serve(dir);
  const url = await s.url;
  const port = Number(new URL(url).port);
  const id = JSON.parse((await post(url, "flux-2-klein-4b", { prompt: "sse", width: 512, height: 512 })).body).id;
  const before = rss(s.p.pid).rss;
  const codes = {};
  const ctl = [];
  await Promise.all(Array.from({ length: 2000 }, async () => {
    const ac = new AbortController();
    ctl.push(ac);
    try {
      const r = await fetch(`${url}/v1/jobs/${id}/events`, { signal: ac.signal });
      codes[r.status] = (codes[r.status] ?? 0) + 1;
      if (r.status !== 200) await r.text();
    } catch (e) { codes[e.name] = (codes[e.name] ?? 0) + 1; }
  }));
  await sleep(5000);
  console.log(`2000 streams on one job: ${JSON.stringify(codes)}; server RSS ${mb(before)} → ${mb(rss(s.p.pid).rss)} (peak ${mb(rss(s.p.pid).hwm)})`);
  ctl.forEach((a) => a.abort());
  await fetch(`${url}/v1/jobs/${id}`, { method: "DELETE" });
  const t0 = Date.now();
  const slowBody = Array.from({ length: 1000 }, () => rawConn(port, `POST /v1/flux-2-klein-4b HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"prompt":`));
  const slowHdr = Array.from({ length: 200 }, () => rawConn(port, "GET /health HTTP/1.1\r\nHost: x\r\nX-A: "));
  const hs = await Promise.all(slowHdr);
  console.log(`200 slow-header connections: all closed after ${Math.min(...hs.map((h) => h.ms))}–${Math.max(...hs.map((h) => h.ms))} ms; replies ${JSON.stringify(hs.reduce((a, h) => ((a[h.status] = (a[h.status] ?? 0) + 1), a), {}))}`);
  const bs = await Promise.all(slowBody);
  console.log(`1000 slow-body connections: all closed after ${Math.min(...bs.map((h) => h.ms))}–${Math.max(...bs.map((h) => h.ms))} ms; replies ${JSON.stringify(bs.reduce((a, h) => ((a[h.status] = (a[h.status] ?? 0) + 1), a), {}))} (total ${Date.now() - t0} ms)`);
  const h = await fetch(`${url}/health`);
  console.log(`/health afterwards: ${h.status}`);
  s.p.kill("SIGTERM");
  await s.exited;
}

if (which === "1" || which === "all") await case1();
if (which === "2" || which === "all") await case2();
if (which === "3" || which === "all") await case3();
