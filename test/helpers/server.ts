// An in-process flux2 server with the tiny checkpoint and a fresh data folder.

import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { defaultConfig, type ServerConfig } from "../../src/server/config.js";
import { startServer, type RunningServer } from "../../src/server/app.js";
import { TINY } from "./net.js";

export function tempDir(prefix = "flux2-server-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function testServer(overrides: Partial<ServerConfig> = {}): Promise<RunningServer & { dataDir: string }> {
  const dataDir = overrides.dataDir ?? tempDir();
  const cfg = defaultConfig({
    host: "127.0.0.1", port: 0, dataDir, models: [{ id: "flux-2-klein-4b", dir: TINY }], bflKey: undefined,
    allowPrivateUrls: true, webhookBaseDelayMs: 50, leaseMs: 5000, threads: 1, ...overrides,
  });
  const s = await startServer(cfg, () => {});
  return { ...s, dataDir };
}

/** A PNG of a colour gradient. */
export async function pngImage(width: number, height: number): Promise<Buffer> {
  const rgb = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) rgb.set([(x * 255) / width, (y * 255) / height, 128], (y * width + x) * 3);
  return sharp(rgb, { raw: { width, height, channels: 3 } }).png().toBuffer();
}
