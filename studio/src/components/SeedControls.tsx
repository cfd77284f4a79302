import type { Range } from "../api";

export type SeedMode = "fixed" | "random" | "increment";

interface Props {
  seedMode: SeedMode;
  onSeedMode: (m: SeedMode) => void;
  seedText: string;
  onSeedText: (s: string) => void;
  seedError?: string;
  steps: { range: Range; value: number; onChange: (v: number) => void } | null;
  guidance: { range: Range; value: number; onChange: (v: number) => void } | null;
  batch: number;
  onBatch: (n: number) => void;
  maxBatch: number;
  variant: string;
}

export const MAX_SEED = 2 ** 32 - 1;
export const randomSeed = (): number => Math.floor(Math.random() * MAX_SEED);

export function SeedControls(p: Props) {
  return (
    <section className="panel" aria-labelledby="sampling-h">
      <h2 id="sampling-h">Sampling</h2>
      <fieldset className="row wrap">
        <legend>Seed</legend>
        <div className="segmented" role="radiogroup" aria-label="Seed mode">
          {(["fixed", "random", "increment"] as const).map((m) => (
            <label key={m} className={p.seedMode === m ? "on" : ""}>
              <input type="radio" name="seed-mode" value={m} checked={p.seedMode === m} onChange={() => p.onSeedMode(m)} />
              {m === "fixed" ? "Fixed" : m === "random" ? "Random" : "Increment"}
            </label>
          ))}
        </div>
        <label htmlFor="seed" className="sr-only">Seed</label>
        <input id="seed" name="seed" className="seed" inputMode="numeric" value={p.seedText}
          aria-invalid={!!p.seedError} aria-describedby="seed-hint"
          onChange={(e) => p.onSeedText(e.target.value.trim())} />
        <button type="button" className="icon" aria-label="New random seed" title="New random seed"
          onClick={() => p.onSeedText(String(randomSeed()))}>
          <svg width="18" height="18" viewBox="0 0 18 18" aria-hidden="true"><rect x="1.5" y="1.5" width="15" height="15" rx="3" fill="none" stroke="currentColor" strokeWidth="1.6" /><circle cx="5.5" cy="5.5" r="1.4" fill="currentColor" /><circle cx="9" cy="9" r="1.4" fill="currentColor" /><circle cx="12.5" cy="12.5" r="1.4" fill="currentColor" /></svg>
        </button>
        <span id="seed-hint" className="hint">
          {p.seedMode === "random" ? "a new seed every run" : p.seedMode === "increment" ? "+1 per image, kept between runs" : "same seed every run"}
        </span>
      </fieldset>
      {p.seedError && <p className="error" role="alert">{p.seedError}</p>}

      {p.steps ? (
        <div className="field">
          <label htmlFor="steps">Steps <output htmlFor="steps">{p.steps.value}</output></label>
          <input id="steps" type="range" min={p.steps.range.min} max={p.steps.range.max} step={1} value={p.steps.value}
            onChange={(e) => p.steps!.onChange(Number(e.target.value))} />
        </div>
      ) : null}
      {p.guidance ? (
        <div className="field">
          <label htmlFor="guidance">Guidance <output htmlFor="guidance">{p.guidance.value.toFixed(1)}</output></label>
          <input id="guidance" type="range" min={p.guidance.range.min} max={p.guidance.range.max} step={0.1} value={p.guidance.value}
            onChange={(e) => p.guidance!.onChange(Number(e.target.value))} />
        </div>
      ) : null}
      {!p.steps && !p.guidance && (
        <p className="hint" data-testid="distilled-note">{p.variant || "This model"} is distilled: steps and guidance are fixed by the model.</p>
      )}

      <div className="row">
        <label htmlFor="batch">Batch</label>
        <input id="batch" type="number" min={1} max={p.maxBatch} value={p.batch}
          onChange={(e) => p.onBatch(Math.max(1, Math.min(p.maxBatch, Math.round(Number(e.target.value) || 1))))} />
        <span className="hint">images per run</span>
      </div>
    </section>
  );
}
