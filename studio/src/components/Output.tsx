import type { Job } from "../api";

export interface Running {
  ids: string[];
  index: number;
  step: number;
  steps: number;
  fraction: number;
  preview: string | null;
  status: string;
  cancelling: boolean;
}

interface Props {
  running: Running | null;
  shown: Job | null;
  onCancel: () => void;
  message: { kind: "error" | "info"; text: string } | null;
}

export function Output({ running, shown, onCancel, message }: Props) {
  const pct = running ? Math.round(running.fraction * 100) : 0;
  const img = running?.preview ?? shown?.result?.sample ?? null;
  return (
    <section className="panel output" aria-labelledby="output-h">
      <h2 id="output-h">Output</h2>
      <div className="stage" data-testid="stage">
        {img ? (
          <img src={img} alt={running ? `Preview at step ${running.step}` : `Result: ${shown?.result?.prompt || shown?.params.prompt || ""}`}
            className={running ? "preview" : ""} data-testid={running ? "preview-image" : "result-image"} />
        ) : (
          <p className="hint">{running ? "Starting…" : "Your image appears here."}</p>
        )}
      </div>
      {running && (
        <div className="progress" data-testid="progress">
          <label htmlFor="progress-bar">
            {running.ids.length > 1 ? `Image ${running.index + 1} of ${running.ids.length} · ` : ""}
            {running.steps ? `Step ${running.step} of ${running.steps}` : running.status}
          </label>
          <progress id="progress-bar" max={100} value={pct} aria-valuetext={`${pct}%`} data-fraction={running.fraction}>{pct}%</progress>
          <button type="button" onClick={onCancel} disabled={running.cancelling}>{running.cancelling ? "Cancelling…" : "Cancel"}</button>
        </div>
      )}
      <div aria-live="polite" data-testid="status-line">
        {message && <p className={message.kind === "error" ? "error" : "hint"} role={message.kind === "error" ? "alert" : undefined}>{message.text}</p>}
      </div>
      {!running && shown?.result && (
        <p className="hint">
          {shown.result.width}×{shown.result.height} · seed {shown.result.seed ?? "—"} · {shown.model}
        </p>
      )}
    </section>
  );
}
