// Fine-tuning page: drop images, edit their captions, choose the base model,
// trigger word and steps, then follow the job: step, loss curve, sample images
// and ETA. The job runs on the server's queue (POST /v1/finetune); the page
// keeps its id in the URL (#/finetune/ID), so a reload — or a server restart,
// after which the job resumes from its checkpoint — picks it up again.

import { useEffect, useState, type DragEvent, type FormEvent } from "react";
import { cancelJob, listModels, type ModelInfo } from "../api";
import { call, duration, local, readDataUrl } from "./client";
import { usePoll } from "./usePoll";

interface Item { key: number; name: string; image: string; caption: string }

interface FinetuneView {
  id: string;
  status: string;
  state: string;
  name: string;
  step: number;
  steps: number;
  progress: number;
  loss: number | null;
  losses: number[];
  eta_s: number | null;
  seconds_per_step: number | null;
  samples: { step: number; url: string }[];
  loss_curve: string | null;
  resumed_from: number | null;
  lora: string | null;
  error: string | null;
}

const jobFromHash = () => /^#\/finetune\/([0-9a-f-]{36})/.exec(location.hash)?.[1] ?? null;
let itemKey = 0;

/** The loss per step as an SVG polyline (the raw losses, and a moving average to read the trend). */
function LossCurve({ losses }: { losses: number[] }) {
  if (losses.length < 2) return <p className="hint">The loss curve appears after the second step.</p>;
  const W = 320, H = 120;
  const lo = Math.min(...losses), hi = Math.max(...losses), span = hi - lo || 1;
  const pts = (ys: number[]) => ys.map((y, i) => `${((i / (ys.length - 1)) * W).toFixed(1)},${(H - ((y - lo) / span) * H).toFixed(1)}`).join(" ");
  const k = Math.max(1, Math.round(losses.length / 20));
  const avg = losses.map((_, i) => { const w = losses.slice(Math.max(0, i - k + 1), i + 1); return w.reduce((a, b) => a + b, 0) / w.length; });
  return (
    <svg viewBox={`0 0 ${W} ${H}`} className="ft-curve" role="img" aria-label={`Loss over ${losses.length} steps, from ${losses[0].toFixed(3)} to ${losses[losses.length - 1].toFixed(3)}`} data-testid="ft-curve">
      <polyline points={pts(losses)} fill="none" stroke="var(--muted)" strokeWidth="1" />
      <polyline points={pts(avg)} fill="none" stroke="var(--accent)" strokeWidth="2" />
    </svg>
  );
}

export function FinetunePage() {
  const [models, setModels] = useState<ModelInfo[]>([]);
  const [model, setModel] = useState("");
  const [items, setItems] = useState<Item[]>([]);
  const [trigger, setTrigger] = useState("");
  const [name, setName] = useState("");
  const [steps, setSteps] = useState(500);
  const [rank, setRank] = useState(16);
  const [lr, setLr] = useState(1e-4);
  // Empty: export the last weights; a decay such as 0.999: their moving average (flux2 train --ema-decay).
  const [emaDecay, setEmaDecay] = useState("");
  const [resolution, setResolution] = useState(512);
  const [sampleEvery, setSampleEvery] = useState(100);
  const [samplePrompt, setSamplePrompt] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [jobId, setJobId] = useState<string | null>(jobFromHash);
  const [job, setJob] = useState<FinetuneView | null>(null);

  useEffect(() => {
    listModels().then((ms) => {
      const localModels = ms.filter((m) => m.kind === "local" && m.available);
      setModels(localModels);
      setModel((cur) => cur || (localModels.find((m) => m.variant === "klein-base") ?? localModels[0])?.id || "");
    }, (e: Error) => setError(`Could not list the models: ${e.message}`));
  }, []);

  usePoll<FinetuneView>(jobId ? `v1/finetune/${jobId}` : null, setJob, (e) => setError(e.message));

  const addFiles = async (files: FileList | File[]) => {
    const list = [...files].filter((f) => f.type.startsWith("image/") || /\.(txt)$/i.test(f.name));
    const captions = new Map<string, string>();
    for (const f of list.filter((f) => f.name.endsWith(".txt"))) captions.set(f.name.replace(/\.txt$/i, ""), (await f.text()).trim());
    const added: Item[] = [];
    for (const f of list.filter((f) => f.type.startsWith("image/"))) {
      added.push({ key: ++itemKey, name: f.name, image: await readDataUrl(f), caption: captions.get(f.name.replace(/\.[^.]+$/, "")) ?? "" });
    }
    setItems((x) => [...x, ...added]);
  };
  const onDrop = (e: DragEvent) => {
    e.preventDefault();
    void addFiles(e.dataTransfer.files);
  };

  const submit = async (e?: FormEvent) => {
    e?.preventDefault();
    setError(null);
    if (!items.length) return setError("Add the images to train on (20–30 is a good number for a style or a subject).");
    setBusy(true);
    try {
      const r = await call<{ id: string }>("POST", "v1/finetune", {
        ...(model ? { base_model: model } : {}), images: items.map((i) => ({ image: i.image, caption: i.caption })),
        ...(trigger ? { trigger_word: trigger } : {}), ...(name ? { name } : {}),
        steps, rank, learning_rate: lr, ...(emaDecay.trim() ? { ema_decay: Number(emaDecay) } : {}), resolution, sample_every: sampleEvery, ...(samplePrompt ? { sample_prompts: [samplePrompt] } : {}),
      });
      setJobId(r.id);
      history.replaceState(null, "", `#/finetune/${r.id}`);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="layout finetune" data-testid="finetune-page">
      <form className="controls" onSubmit={submit} aria-label="Fine-tuning">
        <section className="panel">
          <h2>Fine-tune a LoRA</h2>
          <div className="ft-drop" onDragOver={(e) => e.preventDefault()} onDrop={onDrop} data-testid="ft-drop">
            <p>Drop images here (and same-name .txt captions), or</p>
            <input type="file" multiple accept="image/*,.txt" aria-label="Training images" onChange={(e) => e.target.files && void addFiles(e.target.files)} />
          </div>
          <ul className="ft-items">
            {items.map((it) => (
              <li key={it.key} data-testid="ft-item">
                <img src={it.image} alt={it.name} className="page-thumb" />
                <textarea aria-label={`Caption of ${it.name}`} rows={2} value={it.caption} placeholder="Caption (empty: the trigger word alone)"
                  onChange={(e) => setItems((x) => x.map((y) => (y.key === it.key ? { ...y, caption: e.target.value } : y)))} />
                <button type="button" onClick={() => setItems((x) => x.filter((y) => y.key !== it.key))} aria-label={`Remove ${it.name}`}>✕</button>
              </li>
            ))}
          </ul>
        </section>
        <section className="panel">
          <label htmlFor="ft-model">Base model</label>
          <select id="ft-model" value={model} onChange={(e) => setModel(e.target.value)}>
            {models.map((m) => <option key={m.id} value={m.id}>{m.id}{m.variant === "klein-base" ? " (made for training)" : ""}</option>)}
          </select>
          <label htmlFor="ft-trigger">Trigger word</label>
          <input id="ft-trigger" value={trigger} onChange={(e) => setTrigger(e.target.value.replace(/[\s,]/g, ""))} placeholder="e.g. mystyle" />
          <label htmlFor="ft-name">LoRA name (file in the server's LoRA folder)</label>
          <input id="ft-name" value={name} onChange={(e) => setName(e.target.value)} placeholder="default: finetune-ID" />
          <div className="row">
            <label>Steps <input type="number" min={1} value={steps} onChange={(e) => setSteps(Number(e.target.value))} data-testid="ft-steps" /></label>
            <label>Rank <input type="number" min={1} max={256} value={rank} onChange={(e) => setRank(Number(e.target.value))} /></label>
            <label>Learning rate <input type="number" step="any" min={0} value={lr} onChange={(e) => setLr(Number(e.target.value))} /></label>
          </div>
          <div className="row">
            <label>Resolution <input type="number" min={64} step={16} value={resolution} onChange={(e) => setResolution(Number(e.target.value))} data-testid="ft-resolution" /></label>
            <label>Samples every <input type="number" min={0} value={sampleEvery} onChange={(e) => setSampleEvery(Number(e.target.value))} /> steps</label>
            <label>Weight average (EMA decay) <input type="number" step="any" min={0} max={1} value={emaDecay} placeholder="off, e.g. 0.999" onChange={(e) => setEmaDecay(e.target.value)} data-testid="ft-ema" /></label>
          </div>
          <label htmlFor="ft-sample">Sample prompt (default: the first caption)</label>
          <input id="ft-sample" value={samplePrompt} onChange={(e) => setSamplePrompt(e.target.value)} />
        </section>
        {error && <div className="error" role="alert" data-testid="ft-error">{error}</div>}
        <div className="submit-bar">
          <button type="submit" className="primary" disabled={busy || job?.status === "Pending"} data-testid="ft-start">{busy ? "Uploading…" : "Start training"}</button>
        </div>
      </form>
      <div className="results">
        {job && (
          <section className="panel" aria-label="Training" data-testid="ft-job">
            <h2>{job.name} <small data-testid="ft-status">{job.status === "Pending" && job.state === "queued" ? "Queued" : job.status}</small></h2>
            <progress max={job.steps} value={job.step} aria-label="Training steps" />
            <p data-testid="ft-progress">
              Step {job.step} / {job.steps}
              {job.loss !== null && <> · loss {job.loss.toFixed(4)}</>}
              {job.state === "running" && <> · ETA {duration(job.eta_s)}</>}
              {job.seconds_per_step !== null && <> · {job.seconds_per_step.toFixed(2)} s/step</>}
              {job.resumed_from !== null && <> · resumed from step {job.resumed_from}</>}
            </p>
            <LossCurve losses={job.losses} />
            {job.loss_curve && <p><a href={local(job.loss_curve)} target="_blank" rel="noreferrer">Loss curve (PNG)</a></p>}
            {job.samples.length > 0 && (
              <div className="ft-samples">
                {job.samples.map((s) => <figure key={s.url}><img src={local(s.url)} alt={`Sample at step ${s.step}`} /><figcaption>step {s.step}</figcaption></figure>)}
              </div>
            )}
            {job.status === "Pending" && <button type="button" onClick={() => void cancelJob(job.id)}>Cancel training</button>}
            {job.lora && <p className="info" data-testid="ft-done">Done: the LoRA <strong>{job.lora}</strong> is in the server's LoRA folder; choose it in the generator's LoRA list.</p>}
            {job.error && job.status !== "Pending" && <p className="error">{job.error}</p>}
          </section>
        )}
      </div>
    </main>
  );
}
