// One way to print a remaining or elapsed time for progress lines (training and downloads).

/**
 * "42s", "3m07s" or "1h05m". Seconds are rounded up to a whole second *before* they are split
 * into minutes, so 59.6 s reads "1m00s", never "60s" or "0m60s".
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}
