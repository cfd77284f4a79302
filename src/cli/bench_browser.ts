// `flux2 bench --browser`: one model's time per image and peak memory in headless Chromium
// (ONNX Runtime Web, WASM) next to the same model in Node (onnxruntime-node), measured in the
// same run so the ratio holds even on a loaded machine (issue 17).
//
// Each engine runs in its own process, so each peak is its own: Node in a child process
// (VmHWM at the end), Chromium in its renderer process (the tab's VmHWM, read from /proc). Both
// make one warm-up image (which also loads the model) and then time `repeats` more. The browser
// runs once per WASM thread count asked for (`--threads 1,2`), each in a fresh browser; the
// served page is cross-origin isolated (src/server/static.ts), which threads need.

import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { runForJson } from "../bench/child.js";

export interface BrowserBenchOptions {
  modelDir: string;
  size: number;
  steps: number;
  repeats: number;
  /** WASM thread counts to run the browser engine with, one fresh browser each (the page is cross-origin isolated). */
  threads: number[];
  chromium: string;
  log: (s: string) => void;
}

export interface EngineResult {
  engine: string;
  /** First image: model load (download / session creation) included. */
  first_image_seconds: number;
  /** Median of the timed images after it. */
  seconds_per_image: number;
  peak_rss_mb: number;
  /** The browser's first pixels against Node's (the same seed), max |difference|. */
  max_pixel_difference_vs_node?: number;
  /** WASM threads the browser engine ran with (ort.env.wasm.numThreads). */
  threads?: number;
  /** This engine's seconds per image / Node's. */
  over_node?: number;
}

export interface BrowserBenchReport {
  model: string;
  size: number;
  steps: number;
  repeats: number;
  results: EngineResult[];
  /** Chromium WASM seconds per image / Node (onnxruntime-node) seconds per image, for the first thread count. */
  browser_over_node: number;
}

const RESULT = "FLUX2_BROWSER_BENCH ";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function peakMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

/** In the child process: generate with onnxruntime-node (`engine` "node") and print times + VmHWM. */
export async function nodeChild(req: { modelDir: string; size: number; steps: number; repeats: number }): Promise<void> {
  const { loadPipeline } = await import("../loaders/pretrained.js");
  const pipe = loadPipeline(req.modelDir, { keepLoaded: true });
  const opts = { prompt: "a red fox in the snow", width: req.size, height: req.size, steps: req.steps, seed: 7 };
  const times: number[] = [];
  let t = performance.now();
  const first = await pipe.generate(opts);
  const firstSeconds = (performance.now() - t) / 1000;
  for (let i = 0; i < req.repeats; i++) {
    t = performance.now();
    await pipe.generate(opts);
    times.push((performance.now() - t) / 1000);
  }
  const out = { first_image_seconds: firstSeconds, times, peak_rss_mb: peakMb(process.pid), rgb: Buffer.from(first.images[0].rgb).toString("base64") };
  process.stdout.write(`${RESULT}${JSON.stringify(out)}\n`);
}

export async function runBrowserBench(o: BrowserBenchOptions): Promise<BrowserBenchReport> {
  const results: EngineResult[] = [];
  o.log(`Node (onnxruntime-node), ${o.size}², ${o.steps} steps...`);
  const here = path.dirname(fileURLToPath(import.meta.url));
  const node = await runForJson<{ first_image_seconds: number; times: number[]; peak_rss_mb: number; rgb: string }>(process.execPath,
    [path.join(here, "bench_browser_child.js"), JSON.stringify({ modelDir: o.modelDir, size: o.size, steps: o.steps, repeats: o.repeats })],
    "browser bench (node)", o.log, (s) => s.split("\n").find((l) => l.startsWith(RESULT))?.slice(RESULT.length));
  results.push({ engine: "node onnxruntime-node (CPU)", first_image_seconds: node.first_image_seconds, seconds_per_image: median(node.times), peak_rss_mb: node.peak_rss_mb });

  let playwright: typeof import("playwright-core");
  try {
    playwright = await import("playwright-core");
  } catch {
    throw new Error("the browser bench needs playwright-core (a dev dependency): run it from a clone with `npm ci`");
  }
  const { startServer } = await import("../server/app.js");
  const { defaultConfig } = await import("../server/config.js");
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-bench-browser-"));
  const server = await startServer(defaultConfig({ host: "127.0.0.1", port: 0, dataDir, models: [{ id: "bench", dir: o.modelDir }] }), () => undefined);
  try {
    for (const threads of o.threads) {
      o.log(`Chromium (onnxruntime-web WASM, ${threads} thread${threads === 1 ? "" : "s"}), ${o.size}², ${o.steps} steps...`);
      // A fresh profile and browser per thread count: ORT fixes its threads when its WASM starts, and each run's renderer peak is its own.
      const profile = fs.mkdtempSync(path.join(os.tmpdir(), "flux2-bench-chromium-"));
      const context = await playwright.chromium.launchPersistentContext(profile, { executablePath: o.chromium, args: ["--headless", "--no-sandbox", "--disable-gpu"] });
      try {
        const page = context.pages()[0] ?? await context.newPage();
        await page.goto(`${server.url}/`);
        const r = await page.evaluate(async ({ size, steps, repeats, threads }) => {
          if (threads > 1 && !crossOriginIsolated) throw new Error("the page is not cross-origin isolated: no WASM threads");
          const m = await import("/browser/flux2.js" as string);
          let t = performance.now();
          const { pipeline } = await m.loadModel("/v1/files/bench", { backend: { threads } });
          const opts = { prompt: "a red fox in the snow", width: size, height: size, steps, seed: 7 };
          const first = await pipeline.generate(opts);
          const firstSeconds = (performance.now() - t) / 1000;
          const times: number[] = [];
          for (let i = 0; i < repeats; i++) {
            t = performance.now();
            await pipeline.generate(opts);
            times.push((performance.now() - t) / 1000);
          }
          return { firstSeconds, times, rgb: Array.from(first.images[0].rgb as Uint8Array) };
        }, { size: o.size, steps: o.steps, repeats: o.repeats, threads });
        // The tab's renderer: the Chromium child whose command line says --type=renderer and holds the most memory.
        const renderers = fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).filter((p) => {
          try {
            const cmd = fs.readFileSync(`/proc/${p}/cmdline`, "utf8");
            return cmd.includes("--type=renderer") && cmd.includes(profile);
          } catch {
            return false;
          }
        });
        const peak = Math.max(...renderers.map((p) => peakMb(Number(p))));
        const ref = Buffer.from(node.rgb, "base64");
        let maxDiff = 0;
        for (let i = 0; i < ref.length; i++) maxDiff = Math.max(maxDiff, Math.abs(ref[i] - r.rgb[i]));
        const perImage = median(r.times);
        results.push({ engine: `chromium onnxruntime-web (WASM, ${threads} thread${threads === 1 ? "" : "s"})`, first_image_seconds: r.firstSeconds, seconds_per_image: perImage, peak_rss_mb: peak, max_pixel_difference_vs_node: maxDiff, threads, over_node: perImage / results[0].seconds_per_image });
      } finally {
        await context.close();
        fs.rmSync(profile, { recursive: true, force: true });
      }
    }
  } finally {
    await server.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
  return { model: o.modelDir, size: o.size, steps: o.steps, repeats: o.repeats, results, browser_over_node: results[1].seconds_per_image / results[0].seconds_per_image };
}

export function formatBrowserReport(r: BrowserBenchReport): string {
  const lines = [`${r.model}: ${r.size}², ${r.steps} steps, median of ${r.repeats} images after one warm-up`,
    "engine                                      first image   per image   peak RSS   max |Δpixel| vs Node"];
  for (const e of r.results) {
    lines.push(`${e.engine.padEnd(44)}${`${e.first_image_seconds.toFixed(2)} s`.padStart(11)}${`${e.seconds_per_image.toFixed(2)} s`.padStart(12)}${`${e.peak_rss_mb} MB`.padStart(11)}   ${e.max_pixel_difference_vs_node ?? "—"}`);
  }
  for (const e of r.results) if (e.over_node !== undefined) lines.push(`browser (${e.threads} thread${e.threads === 1 ? "" : "s"}) / Node time per image: ${e.over_node.toFixed(2)}×`);
  const one = r.results.find((e) => e.threads === 1);
  for (const e of r.results) if (one && e.threads && e.threads > 1) lines.push(`browser ${e.threads} threads / 1 thread: ${(e.seconds_per_image / one.seconds_per_image).toFixed(2)}×`);
  return lines.join("\n");
}
