// What the studio's browser suites share (studio.e2e, studio_daily.e2e, studio_pages.e2e) and the
// screenshot script (scripts/studio-screenshots.ts): Debian's Chromium with a fresh profile through
// playwright-core, the built studio, and a real server (startServer, what `flux2 serve` runs) on a
// free loopback port with a fresh data folder.

import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { chromium, type BrowserContext } from "playwright-core";
import { startServer, type RunningServer } from "../../src/server/app.js";
import { defaultConfig, type ServerConfig } from "../../src/server/config.js";
import { repoRoot } from "../golden.js";
import { TINY } from "./net.js";

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
/** Screenshots of the browser suites. */
export const STUDIO_ARTIFACTS = path.join(repoRoot, "test-artifacts", "studio");
export const STUDIO_INDEX = path.join(repoRoot, "dist", "studio", "index.html");
/** The model id the suites serve the tiny klein checkpoint as. */
export const STUDIO_MODEL = "flux-2-klein-4b";

/** The reason to skip a browser suite, or false. With `needBuilt`, a missing dist/studio/ is one too (else ensureStudioBuilt builds it). */
export function studioSkip(needBuilt = false): string | false {
  if (!fs.existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM}`;
  if (needBuilt && !fs.existsSync(STUDIO_INDEX)) return "the studio is not built (npm run build builds dist/studio/)";
  return false;
}

/** Build dist/studio/ with vite when it is missing (npm test's build step has normally made it). */
export function ensureStudioBuilt(): void {
  if (fs.existsSync(STUDIO_INDEX)) return;
  execFileSync(process.execPath, [path.join(repoRoot, "node_modules/vite/bin/vite.js"), "build", "--config", "studio/vite.config.ts"], { cwd: repoRoot, stdio: "inherit" });
}

/**
 * Chromium, headless, with a fresh profile in `userDataDir` (launchPersistentContext owns
 * --user-data-dir), nothing fetched in the background, light theme, 1280×1000 unless told.
 */
export function launchStudioBrowser(userDataDir: string, opts: { viewport?: { width: number; height: number }; colorScheme?: "light" | "dark" } = {}): Promise<BrowserContext> {
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
    viewport: opts.viewport ?? { width: 1280, height: 1000 },
    colorScheme: opts.colorScheme ?? "light",
  });
}

/** A real server on a free loopback port with a fresh data folder (removed by close()) and, unless told, the tiny klein checkpoint. */
export async function startStudioServer(overrides: Partial<ServerConfig> = {}): Promise<RunningServer & { dataDir: string }> {
  const dataDir = overrides.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), "flux2-studio-"));
  const own = overrides.dataDir === undefined;
  const s = await startServer(defaultConfig({ host: "127.0.0.1", port: 0, dataDir, models: [{ id: STUDIO_MODEL, dir: TINY }], ...overrides }), () => undefined);
  return {
    ...s, dataDir,
    close: async () => {
      await s.close();
      if (own) fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
