import type { ModelInfo } from "../api";
import { MP } from "../size";

interface Props {
  models: ModelInfo[];
  value: string;
  onChange: (id: string) => void;
  error: string | null;
}

function fmtMp(px: number): string {
  return `${(px / MP).toFixed(2).replace(/\.?0+$/, "")} MP`;
}

export function ModelPicker({ models, value, onChange, error }: Props) {
  const local = models.filter((m) => m.kind === "local");
  const providers = models.filter((m) => m.kind === "provider");
  const m = models.find((x) => x.id === value);
  return (
    <section className="panel" aria-labelledby="model-h">
      <h2 id="model-h">Model</h2>
      {error && <p className="error" role="alert">Could not load the models: {error}</p>}
      <label htmlFor="model">Model</label>
      <select id="model" name="model" value={value} onChange={(e) => onChange(e.target.value)} disabled={!models.length}>
        {!models.length && <option value="">{error ? "no models" : "loading…"}</option>}
        {local.length > 0 && (
          <optgroup label="Local">
            {local.map((x) => <option key={x.id} value={x.id}>{x.id}{x.variant ? ` (${x.variant})` : ""}</option>)}
          </optgroup>
        )}
        {providers.length > 0 && (
          <optgroup label="Providers">
            {providers.map((x) => (
              <option key={x.id} value={x.id} disabled={!x.available}>
                {x.id}{x.variant ? ` (${x.variant})` : ""}{x.available ? "" : " — needs a provider key on the server"}
              </option>
            ))}
          </optgroup>
        )}
      </select>
      {m && (
        <dl className="limits" data-testid="model-limits">
          <div><dt>Runs</dt><dd>{m.description || (m.kind === "local" ? "on this machine" : "at a provider")}</dd></div>
          <div><dt>References</dt><dd>{m.limits.maxReferences ? `up to ${m.limits.maxReferences} (${m.limits.recommendedReferences} recommended)` : "none"}</dd></div>
          <div><dt>Steps</dt><dd>{m.limits.steps ? `${m.limits.steps.min}–${m.limits.steps.max}, default ${m.limits.steps.default}` : "fixed by the model"}</dd></div>
          <div><dt>Guidance</dt><dd>{m.limits.guidance ? `${m.limits.guidance.min}–${m.limits.guidance.max}, default ${m.limits.guidance.default}` : "not used"}</dd></div>
          <div><dt>Size</dt><dd>multiples of {m.limits.multipleOf}, sides ≥ {m.limits.minSide}, ≤ {fmtMp(m.limits.maxPixels)}</dd></div>
        </dl>
      )}
    </section>
  );
}
