// Storyboard page: a brief, named references (image + kind + description)
// given once, a shot list (one shot per line), then the panels as they are
// made, each re-makeable alone, and the contact sheet / frames manifest.
// The board in progress is in the URL (#/storyboard/ID), so a reload keeps it.

import { useEffect, useState, type FormEvent } from "react";
import { listModels, type ModelInfo } from "../api";
import { call, local, readDataUrl } from "./client";
import { usePoll } from "./usePoll";

const KINDS = ["character", "costume", "place", "prop", "style"] as const;

interface RefEntry { key: number; name: string; kind: (typeof KINDS)[number]; description: string; image: string | null; file: string }

interface BoardView {
  id: string;
  status: string;
  title: string | null;
  shots: { id: string; index: number; text: string; references: string[]; seed: number; status: string; image: string | null; error: string | null }[];
  exports: { contact_sheet_png: string; contact_sheet_pdf: string; manifest: string; ffconcat: string } | null;
}

/** "1. text", "- text" or plain lines; "[seed N]" in front sets that shot's seed. */
export function parseShotLines(text: string): { prompt: string; seed?: number }[] {
  return text.split("\n").map((l) => l.trim().replace(/^(\d+[.)]|[-*])\s+/, "")).filter(Boolean).map((l) => {
    const m = /^\[seed\s+(\d+)\]\s*(.+)$/i.exec(l);
    return m ? { prompt: m[2], seed: Number(m[1]) } : { prompt: l };
  });
}

const boardFromHash = () => /^#\/storyboard\/([0-9a-f-]{36})/.exec(location.hash)?.[1] ?? null;

let refKey = 0;

export function StoryboardPage() {
  const [models, setModels] = useState<ModelInfo[]>([]);
  const [model, setModel] = useState("");
  const [title, setTitle] = useState("");
  const [brief, setBrief] = useState("");
  const [style, setStyle] = useState("");
  const [width, setWidth] = useState(512);
  const [height, setHeight] = useState(320);
  const [seed, setSeed] = useState(0);
  const [refs, setRefs] = useState<RefEntry[]>([]);
  const [shots, setShots] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [boardId, setBoardId] = useState<string | null>(boardFromHash);
  const [board, setBoard] = useState<BoardView | null>(null);
  /** Bumped after a re-make, to poll again. */
  const [poke, setPoke] = useState(0);

  useEffect(() => {
    listModels().then((ms) => {
      const localModels = ms.filter((m) => m.kind === "local" && m.available);
      setModels(localModels);
      setModel((cur) => cur || localModels[0]?.id || "");
    }, (e: Error) => setError(`Could not list the models: ${e.message}`));
  }, []);

  // Poll the board while any panel is pending.
  usePoll<BoardView>(boardId ? `v1/storyboard/${boardId}` : null, setBoard, (e) => setError(e.message), poke);

  const addRef = () => setRefs((r) => [...r, { key: ++refKey, name: "", kind: "character", description: "", image: null, file: "" }]);
  const patch = (key: number, p: Partial<RefEntry>) => setRefs((r) => r.map((x) => (x.key === key ? { ...x, ...p } : x)));

  const submit = async (e?: FormEvent) => {
    e?.preventDefault();
    setError(null);
    const list = parseShotLines(shots);
    if (!list.length) return setError("Write at least one shot, one per line.");
    const missing = refs.find((r) => !r.name.trim() || !r.image);
    if (missing) return setError(`Every reference needs a name and an image${missing.name ? ` (${missing.name} has no image)` : ""}.`);
    setBusy(true);
    try {
      const b = await call<BoardView>("POST", "v1/storyboard", {
        ...(model ? { model } : {}), ...(title ? { title } : {}), ...(brief ? { brief } : {}), ...(style ? { style } : {}),
        width, height, seed,
        references: refs.map((r) => ({ name: r.name.trim(), kind: r.kind, image: r.image, ...(r.description ? { description: r.description } : {}) })),
        shots: list,
      });
      setBoard(b);
      setBoardId(b.id);
      history.replaceState(null, "", `#/storyboard/${b.id}`);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  const remake = async (shot: string) => {
    if (!board) return;
    setError(null);
    try {
      // A new random seed: re-making with the same seed would give the same panel.
      setBoard(await call<BoardView>("POST", `v1/storyboard/${board.id}/shots/${shot}`, { seed: Math.floor(Math.random() * 2 ** 31) }));
      setPoke((n) => n + 1);
    } catch (err) {
      setError((err as Error).message);
    }
  };

  return (
    <main className="layout storyboard" data-testid="storyboard-page">
      <form className="controls" onSubmit={submit} aria-label="Storyboard">
        <section className="panel">
          <h2>Storyboard</h2>
          <label htmlFor="sb-model">Model</label>
          <select id="sb-model" value={model} onChange={(e) => setModel(e.target.value)}>
            {models.map((m) => <option key={m.id} value={m.id}>{m.id}</option>)}
          </select>
          <label htmlFor="sb-title">Title</label>
          <input id="sb-title" value={title} onChange={(e) => setTitle(e.target.value)} />
          <label htmlFor="sb-brief">Brief</label>
          <textarea id="sb-brief" rows={2} value={brief} onChange={(e) => setBrief(e.target.value)} />
          <label htmlFor="sb-style">Style (added to every shot)</label>
          <input id="sb-style" value={style} onChange={(e) => setStyle(e.target.value)} />
          <div className="row">
            <label>Width <input type="number" min={64} step={16} value={width} onChange={(e) => setWidth(Number(e.target.value))} data-testid="sb-width" /></label>
            <label>Height <input type="number" min={64} step={16} value={height} onChange={(e) => setHeight(Number(e.target.value))} data-testid="sb-height" /></label>
            <label>Seed <input type="number" min={0} value={seed} onChange={(e) => setSeed(Number(e.target.value))} /></label>
          </div>
        </section>
        <section className="panel" aria-label="Named references">
          <h3>References</h3>
          <p className="hint">Give each character, costume, place or style once; a shot that names it gets its image.</p>
          {refs.map((r) => (
            <fieldset key={r.key} className="sb-ref" data-testid="sb-ref">
              <input aria-label="Reference name" placeholder="Name, e.g. Mara" value={r.name} onChange={(e) => patch(r.key, { name: e.target.value })} />
              <select aria-label="Kind" value={r.kind} onChange={(e) => patch(r.key, { kind: e.target.value as RefEntry["kind"] })}>
                {KINDS.map((k) => <option key={k}>{k}</option>)}
              </select>
              <input aria-label="Description" placeholder="Description (optional)" value={r.description} onChange={(e) => patch(r.key, { description: e.target.value })} />
              <input type="file" accept="image/*" aria-label="Reference image" onChange={async (e) => {
                const f = e.target.files?.[0];
                if (f) patch(r.key, { image: await readDataUrl(f), file: f.name });
              }} />
              {r.image && <img src={r.image} alt={r.name} className="page-thumb" />}
              <button type="button" onClick={() => setRefs((x) => x.filter((y) => y.key !== r.key))}>Remove</button>
            </fieldset>
          ))}
          <button type="button" onClick={addRef} data-testid="sb-add-ref">Add a reference</button>
        </section>
        <section className="panel">
          <label htmlFor="sb-shots"><h3>Shot list</h3></label>
          <textarea id="sb-shots" rows={6} value={shots} onChange={(e) => setShots(e.target.value)}
            placeholder={"1. Mara waits on the Harbour wall.\n2. [seed 9] Close-up of Mara's hands."} />
        </section>
        {error && <div className="error" role="alert" data-testid="sb-error">{error}</div>}
        <div className="submit-bar">
          <button type="submit" className="primary" disabled={busy} data-testid="sb-generate">{busy ? "Submitting…" : "Draw the storyboard"}</button>
        </div>
      </form>
      <div className="results">
        {board && (
          <section className="panel" aria-label="Panels">
            <h2>{board.title ?? "Panels"} <small data-testid="sb-status">{board.status}</small></h2>
            <div className="sb-grid">
              {board.shots.map((s) => (
                <figure key={s.id} className="sb-panel" data-testid="sb-panel" data-status={s.status}>
                  {s.image ? <img src={local(s.image)} alt={s.text} /> : <div className="sb-wait">{s.status}{s.error ? `: ${s.error}` : ""}</div>}
                  <figcaption><strong>{s.index + 1} · {s.id}</strong> {s.text}<br /><small>seed {s.seed}{s.references.length ? ` · ${s.references.join(", ")}` : ""}</small></figcaption>
                  <button type="button" onClick={() => void remake(s.id)} disabled={s.status === "Pending"} data-testid="sb-remake">Re-make</button>
                </figure>
              ))}
            </div>
            {board.exports && (
              <div className="sb-exports" data-testid="sb-exports">
                <img src={local(board.exports.contact_sheet_png)} alt="Contact sheet" data-testid="sb-contact-sheet" className="sb-sheet" />
                <p>
                  <a href={local(board.exports.contact_sheet_png)} download>Contact sheet (PNG)</a> ·{" "}
                  <a href={local(board.exports.contact_sheet_pdf)} download>Contact sheet (PDF)</a> ·{" "}
                  <a href={local(board.exports.manifest)}>Frames manifest (JSON)</a> ·{" "}
                  <a href={local(board.exports.ffconcat)} download>ffmpeg concat list</a>
                </p>
              </div>
            )}
          </section>
        )}
      </div>
    </main>
  );
}
