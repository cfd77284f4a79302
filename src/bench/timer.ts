// The one stopwatch of the benchmarks (flux2 bench, bench-kv, the LoRA bench): wall time in
// seconds from performance.now(), and the median of repeated runs (robust to one run slowed
// by other work on a shared machine).

/** Run `fn` once: its result and its wall time in seconds. */
export async function timed<T>(fn: () => Promise<T> | T): Promise<[T, number]> {
  const t0 = performance.now();
  const v = await fn();
  return [v, (performance.now() - t0) / 1000];
}

/** The middle value (the upper middle for an even count). */
export function median(xs: readonly number[]): number {
  if (!xs.length) throw new Error("median of no values");
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

/** Run `fn` `repeats` times (after the caller's warm-up): the last result and the median seconds. */
export async function medianTime<T>(fn: () => Promise<T> | T, repeats = 3): Promise<[T, number]> {
  const times: number[] = [];
  let r!: T;
  for (let i = 0; i < repeats; i++) [r, times[i]] = await timed(fn);
  return [r, median(times)];
}
