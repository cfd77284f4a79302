import { useRef, useState, type KeyboardEvent } from "react";
import { emptySubject, estimateTokens, HEX, insertAt, TOKEN_LIMIT, type CameraField, type Structured, type TextField } from "../prompt";

type Field = HTMLInputElement | HTMLTextAreaElement;

interface Props {
  mode: "text" | "json";
  onMode: (m: "text" | "json") => void;
  text: string;
  onText: (t: string) => void;
  structured: Structured;
  onStructured: (s: Structured) => void;
  /** The prompt as it will be sent (for the length indicator). */
  sent: string;
  negative: { value: string; onChange: (v: string) => void } | null;
  error?: string;
}

export function PromptBox({ mode, onMode, text, onText, structured, onStructured, sent, negative, error }: Props) {
  const [colour, setColour] = useState("#FF8800");
  const [hexText, setHexText] = useState("#FF8800");
  // The text field the colour goes into: the last one focused, with a setter for its value.
  const target = useRef<{ el: Field; key: string } | null>(null);
  const mainRef = useRef<HTMLTextAreaElement>(null);
  const firstSubjectRef = useRef<HTMLInputElement>(null);

  const track = (key: string) => ({
    onFocus: (e: { currentTarget: Field }) => { target.current = { el: e.currentTarget, key }; },
  });

  const [extraText, setExtraText] = useState<string | null>(null);
  const extraShown = extraText ?? (Object.keys(structured.extra).length ? JSON.stringify(structured.extra, null, 1) : "");
  let extraError: string | null = null;
  if (extraText !== null && extraText.trim()) {
    try { const v = JSON.parse(extraText); if (!v || typeof v !== "object" || Array.isArray(v)) extraError = "Other fields must be a JSON object, like {\"weather\": \"rain\"}."; }
    catch (e) { extraError = `Not valid JSON: ${(e as Error).message}`; }
  }
  const setExtra = (t: string) => {
    setExtraText(t);
    if (!t.trim()) { onStructured({ ...structured, extra: {} }); return; }
    try { const v = JSON.parse(t); if (v && typeof v === "object" && !Array.isArray(v)) onStructured({ ...structured, extra: v }); } catch { /* shown below the field */ }
  };

  type SubjectField = "description" | "position" | "action";
  const setSubject = (i: number, k: SubjectField, v: string) =>
    onStructured({ ...structured, subjects: structured.subjects.map((s, j) => (j === i ? { ...s, [k]: v } : s)) });
  const setField = (k: "scene" | TextField, v: string) => onStructured({ ...structured, [k]: v });
  const setCamera = (k: CameraField, v: string) => onStructured({ ...structured, camera: { ...structured.camera, [k]: v } });
  const addToPalette = () => {
    const hex = colour.toUpperCase();
    if (!structured.color_palette.includes(hex)) onStructured({ ...structured, color_palette: [...structured.color_palette, hex] });
  };

  // Set a tracked field by key, against the current props.
  const setByKey = (key: string, v: string) => {
    const [a, b, c] = key.split(".");
    if (a === "text") onText(v);
    else if (a === "negative") negative?.onChange(v);
    else if (a === "subject") setSubject(Number(b), c as SubjectField, v);
    else if (a === "camera") setCamera(b as CameraField, v);
    else setField(a as "scene" | TextField, v);
  };

  const insertColour = () => {
    const hex = colour.toUpperCase();
    let t = target.current;
    if (!t || !t.el.isConnected) {
      const el = mode === "text" ? mainRef.current : firstSubjectRef.current;
      if (!el) return;
      t = { el, key: mode === "text" ? "text" : "subject.0.description" };
    }
    const { el, key } = t;
    const at = el.selectionStart ?? el.value.length;
    const r = insertAt(el.value, at, hex);
    setByKey(key, r.text);
    requestAnimationFrame(() => { el.focus(); el.setSelectionRange(r.cursor, r.cursor); });
  };

  const onPromptKey = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      e.currentTarget.form?.requestSubmit();
    }
  };

  const chars = sent.length;
  const tokens = estimateTokens(sent);
  const level = tokens > TOKEN_LIMIT ? "over" : tokens >= TOKEN_LIMIT * 0.9 ? "near" : "ok";

  return (
    <section className="panel" aria-labelledby="prompt-h">
      <div className="row spread">
        <h2 id="prompt-h">Prompt</h2>
        <div className="segmented" role="radiogroup" aria-label="Prompt style">
          {(["text", "json"] as const).map((m) => (
            <label key={m} className={mode === m ? "on" : ""}>
              <input type="radio" name="prompt-mode" value={m} checked={mode === m} onChange={() => onMode(m)} />
              {m === "text" ? "Text" : "JSON builder"}
            </label>
          ))}
        </div>
      </div>

      {mode === "text" ? (
        <>
          <label htmlFor="prompt" className="sr-only">Prompt</label>
          <textarea
            id="prompt" name="prompt" ref={mainRef} rows={5} value={text}
            placeholder="A red fox in fresh snow, #FF8800 scarf, golden hour, 35mm photo"
            aria-describedby="prompt-len prompt-hint" aria-invalid={!!error}
            onChange={(e) => onText(e.target.value)} onKeyDown={onPromptKey} {...track("text")}
          />
        </>
      ) : (
        <div className="builder" data-testid="json-builder">
          <label htmlFor="b-scene">Scene</label>
          <input id="b-scene" value={structured.scene} placeholder="a misty harbour at dawn"
            onChange={(e) => setField("scene", e.target.value)} {...track("scene")} />
          <fieldset>
            <legend>Subjects</legend>
            {structured.subjects.map((s, i) => (
              <div className="subject" key={i}>
                <label htmlFor={`b-subj-${i}`}>Subject {i + 1}</label>
                <input id={`b-subj-${i}`} ref={i === 0 ? firstSubjectRef : undefined} value={s.description}
                  placeholder="an old fisherman in a #1B3A5C coat"
                  onChange={(e) => setSubject(i, "description", e.target.value)} {...track(`subject.${i}.description`)} />
                <div className="row">
                  <label className="grow">Position
                    <input value={s.position} placeholder="left foreground" onChange={(e) => setSubject(i, "position", e.target.value)}
                      {...track(`subject.${i}.position`)} />
                  </label>
                  <label className="grow">Action
                    <input value={s.action} placeholder="mending a net" onChange={(e) => setSubject(i, "action", e.target.value)}
                      {...track(`subject.${i}.action`)} />
                  </label>
                </div>
                {structured.subjects.length > 1 && (
                  <button type="button" className="link" onClick={() => onStructured({ ...structured, subjects: structured.subjects.filter((_, j) => j !== i) })}>
                    Remove subject {i + 1}
                  </button>
                )}
              </div>
            ))}
            <button type="button" onClick={() => onStructured({ ...structured, subjects: [...structured.subjects, emptySubject()] })}>Add subject</button>
          </fieldset>
          <div className="grid2">
            <label>Style<input value={structured.style} placeholder="oil painting" onChange={(e) => setField("style", e.target.value)} {...track("style")} /></label>
            <label>Lighting<input value={structured.lighting} placeholder="soft backlight" onChange={(e) => setField("lighting", e.target.value)} {...track("lighting")} /></label>
            <label>Mood<input value={structured.mood} placeholder="calm" onChange={(e) => setField("mood", e.target.value)} {...track("mood")} /></label>
            <label>Background<input id="b-background" value={structured.background} placeholder="foggy hills" onChange={(e) => setField("background", e.target.value)} {...track("background")} /></label>
            <label>Composition<input id="b-composition" value={structured.composition} placeholder="rule of thirds" onChange={(e) => setField("composition", e.target.value)} {...track("composition")} /></label>
            <label>Camera angle<input value={structured.camera.angle} placeholder="eye level" onChange={(e) => setCamera("angle", e.target.value)} {...track("camera.angle")} /></label>
            <label>Lens<input value={structured.camera.lens} placeholder="35mm" onChange={(e) => setCamera("lens", e.target.value)} {...track("camera.lens")} /></label>
            <label>Depth of field<input value={structured.camera.depth_of_field} placeholder="shallow, f/1.8" onChange={(e) => setCamera("depth_of_field", e.target.value)} {...track("camera.depth_of_field")} /></label>
          </div>
          <div className="palette" data-testid="palette">
            <span className="label">Colour palette</span>
            {structured.color_palette.length === 0 && <span className="hint">none: add colours with the picker below</span>}
            <ul className="row wrap">
              {structured.color_palette.map((c) => (
                <li key={c} className="swatch-chip">
                  <span className="swatch" style={{ background: c }} aria-hidden="true" />{c}
                  <button type="button" className="icon" aria-label={`Remove ${c} from the palette`}
                    onClick={() => onStructured({ ...structured, color_palette: structured.color_palette.filter((x) => x !== c) })}>✕</button>
                </li>
              ))}
            </ul>
          </div>
          <label htmlFor="b-extra">Other fields (JSON, kept as written)</label>
          <textarea id="b-extra" rows={2} value={extraShown} spellCheck={false} placeholder='{"weather": "light rain"}' aria-invalid={!!extraError}
            onChange={(e) => setExtra(e.target.value)} onBlur={() => { if (!extraError) setExtraText(null); }} />
          {extraError && <p className="error" role="alert">{extraError}</p>}
          <details>
            <summary>JSON sent</summary>
            <pre className="json" data-testid="json-preview">{sent || "{}"}</pre>
          </details>
        </div>
      )}

      <div className="row wrap colour">
        <label htmlFor="colour">Colour</label>
        <input id="colour" type="color" value={colour} onChange={(e) => { setColour(e.target.value); setHexText(e.target.value.toUpperCase()); }} />
        <label htmlFor="colour-hex" className="sr-only">Hex colour</label>
        <input id="colour-hex" className="hex" value={hexText} maxLength={7} spellCheck={false}
          aria-invalid={!HEX.test(hexText)}
          onChange={(e) => { const v = e.target.value.startsWith("#") ? e.target.value : `#${e.target.value}`; setHexText(v); if (HEX.test(v)) setColour(v); }}
          onKeyDown={(e) => { if (e.key === "Enter") { e.preventDefault(); if (HEX.test(hexText)) insertColour(); } }} />
        <button type="button" onMouseDown={(e) => e.preventDefault()} onClick={insertColour} disabled={!HEX.test(hexText)}>
          Insert {colour.toUpperCase()}
        </button>
        {mode === "json" && (
          <button type="button" onClick={addToPalette} disabled={!HEX.test(hexText) || structured.color_palette.includes(colour.toUpperCase())}>
            Add {colour.toUpperCase()} to the palette
          </button>
        )}
        <span className="hint">at the cursor, next to the subject you are describing</span>
      </div>

      <p id="prompt-len" className={`length ${level}`} aria-live="polite" data-testid="prompt-length">
        {chars} characters · ≈{tokens} / {TOKEN_LIMIT} tokens
        {level === "near" && " — close to the limit"}
        {level === "over" && " — over the limit: text past 512 tokens is cut"}
      </p>
      {error && <p className="error" role="alert">{error}</p>}
      <p id="prompt-hint" className="hint">Enter generates · Shift+Enter adds a line</p>

      {negative && (
        <>
          <label htmlFor="negative">Negative prompt</label>
          <textarea id="negative" rows={2} value={negative.value} onChange={(e) => negative.onChange(e.target.value)}
            {...track("negative")} />
        </>
      )}
    </section>
  );
}
