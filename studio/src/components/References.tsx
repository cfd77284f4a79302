import { useRef, useState, type DragEvent } from "react";
import { referenceFromBlob, type Reference } from "../images";
import { MaskPainter } from "./MaskPainter";

export type Expand = [number, number, number, number];

interface Props {
  refs: Reference[];
  onRefs: (r: Reference[]) => void;
  max: number;
  recommended: number;
  mask: { value: string | null; onChange: (m: string | null) => void } | null;
  expand: { value: Expand; onChange: (e: Expand) => void } | null;
  strength: { enabled: boolean; value: number; onEnabled: (b: boolean) => void; onChange: (v: number) => void } | null;
  errors: Record<string, string>;
}

const SIDES = ["Top", "Right", "Bottom", "Left"] as const;

export function References({ refs, onRefs, max, recommended, mask, expand, strength, errors }: Props) {
  const [over, setOver] = useState(false);
  const [note, setNote] = useState<string | null>(null);
  const fileInput = useRef<HTMLInputElement>(null);
  const dragFrom = useRef<number | null>(null);

  const add = async (files: File[]) => {
    const images = files.filter((f) => f.type.startsWith("image/"));
    const room = max - refs.length;
    const taken = images.slice(0, Math.max(0, room));
    const msgs: string[] = [];
    if (images.length < files.length) msgs.push(`${files.length - images.length} file(s) skipped: not images.`);
    if (images.length > taken.length) msgs.push(`This model takes at most ${max} reference images; ${images.length - taken.length} not added.`);
    const added: Reference[] = [];
    for (const f of taken) {
      try { added.push(await referenceFromBlob(f, f.name)); } catch (e) { msgs.push((e as Error).message); }
    }
    if (added.length) onRefs([...refs, ...added]);
    setNote(msgs.join(" ") || null);
  };

  const move = (i: number, to: number) => {
    if (to < 0 || to >= refs.length || i === to) return;
    const next = refs.slice();
    const [x] = next.splice(i, 1);
    next.splice(to, 0, x);
    onRefs(next);
  };

  const onDrop = (e: DragEvent) => {
    e.preventDefault();
    setOver(false);
    if (dragFrom.current !== null) return;
    void add(Array.from(e.dataTransfer.files));
  };

  if (max <= 0) {
    return (
      <section className="panel" aria-labelledby="refs-h">
        <h2 id="refs-h">Reference images</h2>
        <p className="hint">This model takes no reference images.</p>
      </section>
    );
  }

  const full = refs.length >= max;
  return (
    <section className="panel" aria-labelledby="refs-h">
      <div className="row spread">
        <h2 id="refs-h">Reference images</h2>
        <span className="hint" data-testid="ref-count">{refs.length} / {max}{refs.length > recommended ? ` (more than the ${recommended} recommended)` : ""}</span>
      </div>
      <div
        className={`drop ${over ? "over" : ""}`}
        data-testid="ref-drop"
        onDragOver={(e) => { e.preventDefault(); if (dragFrom.current === null) setOver(true); }}
        onDragLeave={() => setOver(false)}
        onDrop={onDrop}
      >
        <p>Drop images here to edit or combine them, or</p>
        <button type="button" onClick={() => fileInput.current?.click()} disabled={full}>Choose images…</button>
        <input ref={fileInput} type="file" accept="image/*" multiple hidden data-testid="ref-file" aria-label="Add reference images"
          onChange={(e) => { void add(Array.from(e.target.files ?? [])); e.target.value = ""; }} />
      </div>
      {note && <p className="warn" role="status">{note}</p>}
      {errors.input_image && <p className="error" role="alert">{errors.input_image}</p>}
      {refs.length > 0 && (
        <ol className="refs" aria-label="Reference images, in order">
          {refs.map((r, i) => (
            <li key={r.id} draggable data-testid="ref-item"
              onDragStart={(e) => { dragFrom.current = i; e.dataTransfer.effectAllowed = "move"; }}
              onDragEnd={() => { dragFrom.current = null; }}
              onDragOver={(e) => e.preventDefault()}
              onDrop={(e) => { e.preventDefault(); e.stopPropagation(); if (dragFrom.current !== null) move(dragFrom.current, i); dragFrom.current = null; }}>
              <img src={r.dataUrl} alt={`Reference ${i + 1}: ${r.name}`} />
              <div className="ref-meta">
                <span className="ref-name" title={r.name}>{i + 1}. {r.name}</span>
                <span className="hint">{r.width}×{r.height}</span>
              </div>
              <div className="ref-actions">
                <button type="button" className="icon" aria-label={`Move reference ${i + 1} earlier`} disabled={i === 0} onClick={() => move(i, i - 1)}>↑</button>
                <button type="button" className="icon" aria-label={`Move reference ${i + 1} later`} disabled={i === refs.length - 1} onClick={() => move(i, i + 1)}>↓</button>
                <button type="button" className="icon" aria-label={`Remove reference ${i + 1}`} onClick={() => onRefs(refs.filter((x) => x.id !== r.id))}>✕</button>
              </div>
            </li>
          ))}
        </ol>
      )}

      {refs.length > 0 && (strength || mask || expand) && (
        <details className="edit-tools">
          <summary>Inpaint / outpaint the first image</summary>
          {strength && (
            <div className="row wrap">
              <label className="check">
                <input type="checkbox" checked={strength.enabled} onChange={(e) => strength.onEnabled(e.target.checked)} />
                Start from the first image (img2img)
              </label>
              {strength.enabled && (
                <>
                  <label htmlFor="strength">Strength <output htmlFor="strength">{strength.value.toFixed(2)}</output></label>
                  <input id="strength" type="range" min={0.05} max={1} step={0.05} value={strength.value}
                    onChange={(e) => strength.onChange(Number(e.target.value))} />
                </>
              )}
            </div>
          )}
          {mask && <MaskPainter image={refs[0]} value={mask.value} onChange={mask.onChange} />}
          {errors.mask_image && <p className="error" role="alert">{errors.mask_image}</p>}
          {expand && (
            <fieldset className="expand">
              <legend>Expand (outpaint), pixels</legend>
              {SIDES.map((s, k) => (
                <label key={s}>{s}
                  <input type="number" min={0} max={2048} step={16} value={expand.value[k]}
                    onChange={(e) => {
                      const v = expand.value.slice() as Expand;
                      v[k] = Math.max(0, Math.min(2048, Math.round(Number(e.target.value) || 0)));
                      expand.onChange(v);
                    }} />
                </label>
              ))}
            </fieldset>
          )}
          {errors.expand && <p className="error" role="alert">{errors.expand}</p>}
        </details>
      )}
    </section>
  );
}
