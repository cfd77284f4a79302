// A throwaway redis-server on 127.0.0.1 (no persistence) for the queue tests.

import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { freePort, waitFor } from "./net.js";

export interface TestRedis {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** Is redis-server on PATH? (CI installs it; tests skip without it.) */
export function redisAvailable(): boolean {
  return (process.env.PATH ?? "").split(path.delimiter).some((d) => d && fs.existsSync(path.join(d, "redis-server")));
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port }, () => { s.destroy(); resolve(true); });
    s.on("error", () => resolve(false));
  });
}

export async function startRedis(fixedPort?: number): Promise<TestRedis> {
  const port = fixedPort ?? (await freePort());
  const proc = spawn("redis-server", ["--save", "", "--appendonly", "no", "--port", String(port), "--bind", "127.0.0.1"], { stdio: "ignore" });
  const exited = new Promise<void>((r) => proc.on("exit", () => r()));
  await waitFor("redis-server", () => accepts(port), 10_000);
  return {
    url: `redis://127.0.0.1:${port}`, port,
    async stop() {
      if (proc.exitCode === null) proc.kill("SIGKILL");
      await exited;
    },
  };
}
