import type { Job } from "../api";
import type { Live } from "./StatusBar";

interface Props {
  live: Live | null;
  shown: Job | null;
  message: { kind: "error" | "info"; text: string } | null;
}

/**
 * The image being made (its step preview, never the previous result under a running job) or the
 * image last shown; every image of a batch. Progress itself is on the sticky Generate bar.
 */
export function Output({ live, shown, message }: Props) {
  const samples = shown?.result?.samples ?? [];
  return (
    <section className="panel output" aria-labelledby="output-h">
      <h2 id="output-h">Output</h2>
      <div className="stage" data-testid="stage">
        {live ? (
          live.preview
            ? <img src={live.preview} alt={`Preview at step ${live.step}`} className="preview" data-testid="preview-image" />
            : <p className="hint">{live.status === "Pending" ? "Waiting for the server…" : "Starting…"}</p>
        ) : samples.length > 1 ? (
          <div className="results-grid" data-testid="result-images">
            {samples.map((u, i) => <a key={u} href={u} target="_blank" rel="noreferrer"><img src={u} alt={`Result ${i + 1} of ${samples.length}`} data-testid="result-image" /></a>)}
          </div>
        ) : samples.length === 1 ? (
          <img src={samples[0]} alt={`Result: ${shown?.result?.prompt || shown?.params.prompt || ""}`} data-testid="result-image" />
        ) : (
          <p className="hint">Your image appears here.</p>
        )}
      </div>
      <div aria-live="polite" data-testid="status-line">
        {message && <p className={message.kind === "error" ? "error" : "hint"}>{message.text}</p>}
      </div>
      {!live && shown?.result && (
        <p className="hint">
          {shown.result.width}×{shown.result.height} · seed {shown.result.seed ?? "—"}{samples.length > 1 ? `–${(shown.result.seed ?? 0) + samples.length - 1}` : ""} · {shown.model}
        </p>
      )}
    </section>
  );
}
