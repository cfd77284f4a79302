// A throwaway redis-server on 127.0.0.1 (no persistence) for the queue tests.

import { spawn, spawnSync } from "node:child_process";
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

export async function startRedis(fixedPort?: number, extraArgs: string[] = []): Promise<TestRedis> {
  const port = fixedPort ?? (await freePort());
  const proc = spawn("redis-server", ["--save", "", "--appendonly", "no", "--port", String(port), "--bind", "127.0.0.1", ...extraArgs], { stdio: "ignore" });
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

/** A Redis Sentinel on loopback watching `master` under the name `name`. */
export async function startSentinel(masterPort: number, name: string, dir: string): Promise<TestRedis> {
  const port = await freePort();
  const conf = path.join(dir, "sentinel.conf");
  fs.writeFileSync(conf, `port ${port}\nbind 127.0.0.1\nsentinel monitor ${name} 127.0.0.1 ${masterPort} 1\n`);
  const proc = spawn("redis-server", [conf, "--sentinel"], { stdio: "ignore" });
  const exited = new Promise<void>((r) => proc.on("exit", () => r()));
  await waitFor("redis sentinel", () => accepts(port), 10_000);
  return {
    url: `redis+sentinel://127.0.0.1:${port}/${name}`, port,
    async stop() {
      if (proc.exitCode === null) proc.kill("SIGKILL");
      await exited;
    },
  };
}

/** A TLS-only redis-server with a fresh test CA (openssl); `ca` is the CA certificate file. */
export async function startTlsRedis(dir: string): Promise<TestRedis & { ca: string }> {
  const f = (n: string) => path.join(dir, n);
  const ssl = (args: string[]) => {
    const r = spawnSync("openssl", args, { cwd: dir, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`openssl ${args[0]}: ${r.stderr}`);
  };
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  ssl(["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=flux2 test CA"]);
  ssl(["req", ...ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost"]);
  fs.writeFileSync(f("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  ssl(["x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.crt", "-days", "1", "-extfile", "san.ext"]);
  const port = await freePort();
  const proc = spawn("redis-server", ["--save", "", "--appendonly", "no", "--port", "0", "--bind", "127.0.0.1", "--tls-port", String(port),
    "--tls-cert-file", f("srv.crt"), "--tls-key-file", f("srv.key"), "--tls-ca-cert-file", f("ca.crt"), "--tls-auth-clients", "no"], { stdio: "ignore" });
  const exited = new Promise<void>((r) => proc.on("exit", () => r()));
  await waitFor("redis-server (TLS)", () => accepts(port), 10_000);
  return {
    url: `rediss://localhost:${port}`, port, ca: f("ca.crt"),
    async stop() {
      if (proc.exitCode === null) proc.kill("SIGKILL");
      await exited;
    },
  };
}
