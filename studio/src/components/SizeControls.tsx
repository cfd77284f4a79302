import { ASPECTS, describeSize, megapixelChoices, megapixelLabel, type SizeLimits } from "../size";

export interface SizeState {
  mode: "preset" | "custom";
  aspect: string;
  megapixels: number;
  widthText: string;
  heightText: string;
}

interface Props {
  state: SizeState;
  onChange: (s: SizeState) => void;
  limits: SizeLimits;
  size: { width: number; height: number };
  errors: { width?: string; height?: string; size?: string };
  /** Editing the first image: the output size follows it (plus any expansion), shown here and not editable. */
  locked: { width: number; height: number; why: string } | null;
}

export function SizeControls({ state, onChange, limits, size, errors, locked }: Props) {
  const mps = megapixelChoices(limits);
  const set = (p: Partial<SizeState>) => onChange({ ...state, ...p });
  const custom = state.mode === "custom";
  if (locked) {
    return (
      <section className="panel" aria-labelledby="size-h" data-testid="size-locked">
        <div className="row spread">
          <h2 id="size-h">Size</h2>
          <span className="hint" data-testid="size-summary">{describeSize(locked.width, locked.height)}</span>
        </div>
        <p className="hint">🔒 {locked.why} The size panel's own choice is kept for when you stop editing.</p>
      </section>
    );
  }
  return (
    <section className="panel" aria-labelledby="size-h">
      <div className="row spread">
        <h2 id="size-h">Size</h2>
        <span className="hint" data-testid="size-summary">{Number.isFinite(size.width) && Number.isFinite(size.height) ? describeSize(size.width, size.height) : "—"}</span>
      </div>
      <div className="segmented wrap" role="radiogroup" aria-label="Aspect ratio">
        {ASPECTS.map((a) => (
          <label key={a} className={!custom && state.aspect === a ? "on" : ""}>
            <input type="radio" name="aspect" value={a} checked={!custom && state.aspect === a}
              onChange={() => set({ mode: "preset", aspect: a })} />
            <span className="ratio" aria-hidden="true" style={{ aspectRatio: a.replace(":", "/") }} />
            {a}
          </label>
        ))}
        <label className={custom ? "on" : ""}>
          <input type="radio" name="aspect" value="custom" checked={custom}
            onChange={() => set({ mode: "custom", widthText: String(size.width), heightText: String(size.height) })} />
          Custom
        </label>
      </div>
      {!custom ? (
        <div className="row">
          <label htmlFor="megapixels">Megapixels</label>
          <select id="megapixels" value={state.megapixels} onChange={(e) => set({ megapixels: Number(e.target.value) })}>
            {mps.map((m) => <option key={m} value={m}>{megapixelLabel(m)}</option>)}
          </select>
          <span className="hint">snapped to multiples of {limits.multipleOf}</span>
        </div>
      ) : (
        <div className="size-fields">
          <div className="field">
            <label htmlFor="width">Width</label>
            <input id="width" name="width" inputMode="numeric" value={state.widthText} aria-invalid={!!errors.width}
              aria-describedby={errors.width ? "width-err" : undefined}
              onChange={(e) => set({ widthText: e.target.value.trim() })} />
            {errors.width && <p id="width-err" className="error" role="alert">{errors.width}</p>}
          </div>
          <button type="button" className="icon" aria-label="Swap width and height"
            onClick={() => set({ widthText: state.heightText, heightText: state.widthText })}>⇄</button>
          <div className="field">
            <label htmlFor="height">Height</label>
            <input id="height" name="height" inputMode="numeric" value={state.heightText} aria-invalid={!!errors.height}
              aria-describedby={errors.height ? "height-err" : undefined}
              onChange={(e) => set({ heightText: e.target.value.trim() })} />
            {errors.height && <p id="height-err" className="error" role="alert">{errors.height}</p>}
          </div>
        </div>
      )}
      {errors.size && <p className="error" role="alert">{errors.size}</p>}
    </section>
  );
}
