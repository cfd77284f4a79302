// `node:os` for the browser bundle: what the engine asks (free memory for its memory plan, the CPU).
const GiB = 1024 ** 3;

/** The browser does not tell free memory; navigator.deviceMemory (GiB, rounded, capped at 8) is the best hint. */
export function freemem(): number {
  const dm = (globalThis.navigator as { deviceMemory?: number } | undefined)?.deviceMemory;
  return (dm ?? 4) * GiB;
}

export function totalmem(): number {
  return freemem();
}

export function arch(): string {
  return "wasm";
}

export function cpus(): { model: string }[] {
  const n = globalThis.navigator?.hardwareConcurrency ?? 1;
  return Array.from({ length: n }, () => ({ model: "browser" }));
}

export function homedir(): string {
  return "/";
}

export function tmpdir(): string {
  return "/tmp";
}
