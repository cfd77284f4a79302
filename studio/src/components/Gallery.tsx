import { useRef, useState, type DragEvent } from "react";
import type { GalleryFilter, Job } from "../api";
import { fileName } from "../images";
import { PngInfo } from "./PngInfo";

interface Props {
  jobs: Job[];
  loading: boolean;
  error: string | null;
  hasMore: boolean;
  onMore: () => void;
  onRefresh: () => void;
  onShow: (j: Job) => void;
  onReference: (j: Job) => void;
  onReuse: (j: Job) => void;
  onReuseSeed: (j: Job) => void;
  onSettingsFile: (f: File) => void;
  onHide: (j: Job, hidden: boolean) => void;
  onDelete: (j: Job) => void;
  filter: GalleryFilter;
  onFilter: (f: GalleryFilter) => void;
  models: string[];
}

const PARAM_ORDER = ["width", "height", "seed", "steps", "guidance", "strength", "num_images", "output_format"];

function paramsOf(j: Job): [string, string][] {
  const p = { ...j.params };
  const r = j.result;
  if (r) {
    if (r.width) p.width = r.width;
    if (r.height) p.height = r.height;
    if (r.seed !== null) p.seed = r.seed;
  }
  const out: [string, string][] = [];
  if (p.width && p.height) out.push(["size", `${p.width}×${p.height}`]);
  for (const k of PARAM_ORDER.slice(2)) if (p[k] !== undefined && p[k] !== null) out.push([k, String(p[k])]);
  const refs = Object.keys(p).filter((k) => /^input_image(_\d+)?$/.test(k) && p[k]).length;
  if (refs) out.push(["references", String(refs)]);
  if (p.mask_image) out.push(["mask", "yes"]);
  if (Array.isArray(p.expand) && p.expand.some(Boolean)) out.push(["expand", (p.expand as number[]).join(" ")]);
  if (Array.isArray(p.loras) && p.loras.length) out.push(["loras", (p.loras as { name: string; strength: number }[]).map((l) => `${l.name}:${l.strength}`).join(" ")]);
  return out;
}

export function Gallery(p: Props) {
  const [over, setOver] = useState(false);
  const [info, setInfo] = useState<string | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  const file = useRef<HTMLInputElement>(null);
  const f = p.filter;
  const onDrop = (e: DragEvent) => {
    e.preventDefault();
    setOver(false);
    const f = e.dataTransfer.files[0];
    if (f) p.onSettingsFile(f);
  };
  return (
    <section className="panel gallery" aria-labelledby="gallery-h">
      <div className="row spread">
        <h2 id="gallery-h">Gallery</h2>
        <button type="button" onClick={p.onRefresh}>Refresh</button>
      </div>
      <div className={`drop small ${over ? "over" : ""}`} data-testid="settings-drop"
        onDragOver={(e) => { e.preventDefault(); setOver(true); }} onDragLeave={() => setOver(false)} onDrop={onDrop}>
        <p>Drop a PNG made by flux2 (or A1111 / ComfyUI) to load its settings, or</p>
        <button type="button" onClick={() => file.current?.click()}>Open PNG…</button>
        <input ref={file} type="file" accept="image/png" hidden data-testid="settings-file" aria-label="Load settings from a PNG"
          onChange={(e) => { const f = e.target.files?.[0]; if (f) p.onSettingsFile(f); e.target.value = ""; }} />
      </div>
      <fieldset className="filters row wrap" data-testid="gallery-filters">
        <legend className="sr-only">Filter the gallery</legend>
        <label>Search prompts <input type="search" value={f.q ?? ""} data-testid="filter-q" onChange={(e) => p.onFilter({ ...f, q: e.target.value })} /></label>
        <label>Model
          <select value={f.model ?? ""} data-testid="filter-model" onChange={(e) => p.onFilter({ ...f, model: e.target.value || undefined })}>
            <option value="">all</option>
            {p.models.map((m) => <option key={m} value={m}>{m}</option>)}
          </select>
        </label>
        <label>From <input type="date" value={f.since ?? ""} data-testid="filter-since" onChange={(e) => p.onFilter({ ...f, since: e.target.value || undefined })} /></label>
        <label>To <input type="date" value={f.until ?? ""} data-testid="filter-until" onChange={(e) => p.onFilter({ ...f, until: e.target.value || undefined })} /></label>
        <label className="check"><input type="checkbox" checked={f.hidden === "include"} data-testid="filter-hidden"
          onChange={(e) => p.onFilter({ ...f, hidden: e.target.checked ? "include" : "exclude" })} /> Show hidden</label>
      </fieldset>
      {info && <PngInfo url={info} onClose={() => setInfo(null)} />}
      {p.error && <p className="error" role="alert">Could not load the history: {p.error}</p>}
      {!p.jobs.length && !p.loading && !p.error && <p className="hint">No images yet.</p>}
      <ul className="cards" data-testid="gallery">
        {p.jobs.map((j) => {
          const prompt = j.result?.prompt || String(j.params.prompt ?? "");
          const sample = j.result?.sample ?? null;
          const samples = j.result?.samples ?? [];
          return (
            <li key={j.id} className={`card ${j.hidden ? "hidden-job" : ""}`} data-testid="gallery-item" data-job={j.id} data-status={j.status} data-images={samples.length} data-jobs={j.members?.length ?? 1}>
              {sample ? (
                <button type="button" className={`thumb ${samples.length > 1 ? "batch" : ""}`} onClick={() => p.onShow(j)} aria-label={`Show ${samples.length > 1 ? `${samples.length} images` : "image"}: ${prompt.slice(0, 80)}`}>
                  {samples.slice(0, 4).map((u) => <img key={u} src={u} alt="" loading="lazy" />)}
                </button>
              ) : (
                <div className="thumb empty" aria-hidden="true">{j.status}</div>
              )}
              <div className="card-body">
                <p className="card-prompt" title={prompt}>{prompt || <em>(no prompt)</em>}</p>
                <dl className="params" data-testid="gallery-params">
                  <div><dt>model</dt><dd>{j.model || "—"}</dd></div>
                  {paramsOf(j).map(([k, v]) => <div key={k}><dt>{k}</dt><dd>{v}</dd></div>)}
                  {samples.length > 1 && <div><dt>images</dt><dd>{samples.length}</dd></div>}
                  {j.members && <div><dt>jobs</dt><dd>{j.members.length} (one per image)</dd></div>}
                  {j.status !== "Ready" && <div><dt>status</dt><dd>{j.status}</dd></div>}
                  {j.hidden && <div><dt>hidden</dt><dd>yes</dd></div>}
                  {j.createdAt && <div><dt>made</dt><dd><time dateTime={new Date(j.createdAt).toISOString()}>{new Date(j.createdAt).toLocaleString()}</time></dd></div>}
                </dl>
                {j.error && <p className="error">{j.error}</p>}
                <div className="row wrap card-actions">
                  {sample && <a className="button" href={sample} download={`flux2-${j.id}${/\.\w+$/.exec(fileName(sample, ".png"))?.[0] ?? ".png"}`}>Download</a>}
                  {sample && <button type="button" onClick={() => p.onReference(j)}>Use as reference</button>}
                  <button type="button" onClick={() => p.onReuse(j)}>Reuse parameters</button>
                  {(j.result?.seed ?? j.params.seed) !== undefined && (j.result?.seed ?? j.params.seed) !== null && (
                    <button type="button" onClick={() => p.onReuseSeed(j)}>Reuse seed</button>
                  )}
                  {sample && /\.png$/.test(sample) && <button type="button" onClick={() => setInfo(sample)}>PNG info</button>}
                  <button type="button" onClick={() => p.onHide(j, !j.hidden)}>{j.hidden ? "Unhide" : "Hide"}</button>
                  {confirming === j.id ? (
                    <>
                      <button type="button" className="danger" onClick={() => { setConfirming(null); p.onDelete(j); }}>Delete for good</button>
                      <button type="button" onClick={() => setConfirming(null)}>Keep</button>
                    </>
                  ) : (
                    <button type="button" onClick={() => setConfirming(j.id)}>Delete…</button>
                  )}
                </div>
              </div>
            </li>
          );
        })}
      </ul>
      {p.hasMore && <button type="button" onClick={p.onMore} disabled={p.loading}>{p.loading ? "Loading…" : "Load more"}</button>}
    </section>
  );
}
