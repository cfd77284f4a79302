// Small networking helpers for the server tests (loopback only).

import { spawn, type ChildProcess } from "node:child_process";
import * as net from "node:net";
import * as path from "node:path";
import { repoRoot } from "../golden.js";

export const CLI = path.join(repoRoot, "dist", "test", "helpers", "cli.js");
export const TINY = path.join(repoRoot, "testdata", "golden", "checkpoints", "klein_distilled");
export const TINY_BASE = path.join(repoRoot, "testdata", "golden", "checkpoints", "klein_base");

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Resolves with `value` after `ms`, for the losing side of a Promise.race. Its timer is unref'd: a
 * plain sleep there keeps the test file's process alive until it fires, long after the race is won
 * (a 120 s guard held server_redis's process for 110 s after its last test).
 */
export const resolveAfter = <T>(ms: number, value: T) => new Promise<T>((r) => setTimeout(() => r(value), ms).unref());

/** Poll `fn` until it returns a truthy value, or fail after `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs = 20_000, everyMs = 25): Promise<T> {
  // A monotonic clock, so that a step of the wall clock (NTP, a VM resumed) cannot end or stretch a
  // wait. None was seen here: a clock watch over the rest of the session found no step.
  const end = performance.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ""}`);
    await sleep(everyMs);
  }
}

export interface Json {
  status: number;
  body: any;
  headers: Headers;
}

export async function api(base: string, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<Json> {
  const res = await fetch(base + p, {
    method,
    headers: { ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch { /* not JSON */ }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** Poll get_result until the status is no longer Pending. */
export async function untilDone(base: string, id: string, headers: Record<string, string> = {}, timeoutMs = 30_000): Promise<any> {
  return waitFor(`job ${id}`, async () => {
    const r = await api(base, "GET", `/v1/get_result?id=${id}`, undefined, headers);
    return r.body.status !== "Pending" ? r.body : null;
  }, timeoutMs);
}

export interface Child {
  proc: ChildProcess;
  out: string[];
  err: string[];
  /** Resolves with the exit code (or signal). */
  exited: Promise<number | string>;
}

/** Spawn node with the test CLI; stdout/stderr are collected line by line. */
export function spawnCli(args: string[], env: Record<string, string> = {}): Child {
  const proc = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const out: string[] = [], err: string[] = [];
  const collect = (into: string[]) => {
    let buf = "";
    return (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split("\n");
      buf = lines.pop()!;
      into.push(...lines);
    };
  };
  proc.stdout!.on("data", collect(out));
  proc.stderr!.on("data", collect(err));
  const exited = new Promise<number | string>((resolve) => proc.on("exit", (code, sig) => resolve(code ?? sig ?? -1)));
  return { proc, out, err, exited };
}

/** Wait for a `flux2 serve` child to print its URL. */
export async function serverUrl(c: Child, timeoutMs = 20_000): Promise<string> {
  return waitFor("the server to listen", () => {
    const line = c.out.find((l) => l.includes("listening on "));
    if (!line && c.proc.exitCode !== null) throw new Error(`server exited: ${c.err.join("\n")}`);
    return line ? /listening on (\S+)/.exec(line)![1] : null;
  }, timeoutMs);
}

/** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
export async function stop(c: Child, graceMs = 5000): Promise<void> {
  if (c.proc.exitCode !== null || c.proc.signalCode !== null) return;
  c.proc.kill("SIGTERM");
  const t = setTimeout(() => c.proc.kill("SIGKILL"), graceMs);
  await c.exited;
  clearTimeout(t);
}
