// The run's feedback on the sticky Generate bar: the stage ("Loading model", "Encoding prompt",
// "Step N of M", "Decoding"), a percentage, the time so far and an estimate of the time left.

export interface Live {
  id: string;
  /** Images this job makes (a batch is one job of N images). */
  images: number;
  stage: string | null;
  step: number;
  steps: number;
  preview: string | null;
  status: string;
  /** Client clock (ms) when the job started running, when the first step began, and now. */
  startedAt: number | null;
  denoiseAt: number | null;
  /** A previous run's duration (ms) for the same model and size, for an estimate before the first step. */
  typicalMs: number | null;
  cancelling: boolean;
}

const STAGES: Record<string, string> = {
  load: "Loading model", encode: "Encoding prompt", references: "Encoding reference images", denoise: "Denoising", decode: "Decoding",
};

export function stageLabel(l: Live): string {
  if (l.status === "Pending" && !l.stage) return "Waiting for the server";
  if (l.stage === "decode") return "Decoding";
  if (l.steps && l.step > 0) return `Step ${l.step} of ${l.steps}`;
  return (l.stage && STAGES[l.stage]) || (l.status === "Running" ? "Starting" : l.status);
}

/** Overall percentage: preparing 0–5 %, denoising 5–95 %, decoding 95 %. */
export function percent(l: Live): number {
  if (l.stage === "decode") return 95;
  if (l.steps && l.step > 0) return Math.round(5 + 90 * (l.step / l.steps));
  return l.stage === "references" ? 4 : l.stage === "encode" ? 2 : 0;
}

/** Milliseconds left: from the measured time per step once steps run, else from a previous run. */
export function remainingMs(l: Live, now: number): number | null {
  if (l.denoiseAt !== null && l.step > 0 && l.steps) {
    const perStep = (now - l.denoiseAt) / l.step;
    // The decode costs about one step for these models; said as an estimate, never as a promise.
    return Math.max(0, (l.steps - l.step + 1) * perStep);
  }
  if (l.typicalMs !== null && l.startedAt !== null) return Math.max(0, l.typicalMs - (now - l.startedAt));
  return null;
}

const secs = (ms: number) => (ms < 60_000 ? `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s` : `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`);

export function StatusBar({ live, now, queued, onCancel }: { live: Live; now: number; queued: number; onCancel: () => void }) {
  // The clock ticks every 250 ms; a start recorded since the last tick must not show a negative time.
  now = Math.max(now, live.startedAt ?? 0, live.denoiseAt ?? 0);
  const pct = percent(live);
  const left = remainingMs(live, now);
  return (
    <div className="progress" data-testid="progress" data-stage={live.stage ?? live.status}>
      <label htmlFor="progress-bar">{live.images > 1 ? `${live.images} images · ` : ""}{stageLabel(live)}</label>
      <progress id="progress-bar" max={100} value={pct} aria-valuetext={`${pct}%`}>{pct}%</progress>
      <span className="hint" data-testid="progress-numbers">
        {pct}%{live.startedAt !== null && ` · ${secs(now - live.startedAt)}`}{left !== null && ` · about ${secs(left)} left`}
        {queued > 0 && ` · ${queued} queued`}
      </span>
      <button type="button" onClick={onCancel} disabled={live.cancelling}>{live.cancelling ? "Cancelling…" : "Cancel"}</button>
    </div>
  );
}
