import { useCallback, useEffect, useMemo, useRef, useState, type FormEvent } from "react";
import {
  accepts, ApiError, apiKey, cancelJob, FINAL, followEvents, getResult, listJobs, listModels, setApiKey, submit,
  type Job, type ModelInfo,
} from "./api";
import { referenceFromUrl, fileName, type Reference } from "./images";
import { settingsFromPng, type LoadedSettings } from "./png";
import { emptyStructured, isJsonPrompt, structuredToText, textToStructured, type Structured } from "./prompt";
import { ASPECTS, megapixelChoices, nearestMegapixels, presetSize, validateSize, type SizeLimits } from "./size";
import { Gallery } from "./components/Gallery";
import { ModelPicker } from "./components/ModelPicker";
import { Output, type Running } from "./components/Output";
import { PromptBox } from "./components/PromptBox";
import { References, type Expand } from "./components/References";
import { SeedControls, randomSeed, type SeedMode } from "./components/SeedControls";
import { SizeControls, type SizeState } from "./components/SizeControls";
import { LocalRun, LOCAL_KEY, type LocalState } from "./local/LocalRun";
import { Cancelled, generateLocally, openLocalModel } from "./local/engine";

type Theme = "system" | "light" | "dark";
const THEME_KEY = "flux2.studio.theme";
const MODEL_KEY = "flux2.studio.model";
const DEFAULT_LIMITS: SizeLimits = { minSide: 64, multipleOf: 16, maxPixels: 4 * 1024 * 1024 };
const MAX_BATCH = 8;

const stored = (k: string): string | null => { try { return localStorage.getItem(k); } catch { return null; } };
const store = (k: string, v: string) => { try { localStorage.setItem(k, v); } catch { /* private mode */ } };
const sleep = (ms: number, signal?: AbortSignal) => new Promise<void>((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
});

export function App() {
  // --- models
  const [models, setModels] = useState<ModelInfo[]>([]);
  const [modelsError, setModelsError] = useState<string | null>(null);
  const [modelId, setModelId] = useState("");
  const model = models.find((m) => m.id === modelId) ?? null;
  const limits: SizeLimits = model?.limits ?? DEFAULT_LIMITS;

  // --- form
  const [promptMode, setPromptMode] = useState<"text" | "json">("text");
  const [text, setText] = useState("");
  const [structured, setStructured] = useState<Structured>(emptyStructured);
  const [negative, setNegative] = useState("");
  const [sizeState, setSizeState] = useState<SizeState>({ mode: "preset", aspect: "1:1", megapixels: 1, widthText: "1024", heightText: "1024" });
  const [seedMode, setSeedMode] = useState<SeedMode>("random");
  const [seedText, setSeedText] = useState(() => String(randomSeed()));
  const [steps, setSteps] = useState(4);
  const [guidance, setGuidance] = useState(4);
  const [batch, setBatch] = useState(1);
  const [refs, setRefs] = useState<Reference[]>([]);
  const [mask, setMask] = useState<string | null>(null);
  const [strengthOn, setStrengthOn] = useState(false);
  const [strength, setStrength] = useState(0.75);
  const [expand, setExpand] = useState<Expand>([0, 0, 0, 0]);
  const [serverErrors, setServerErrors] = useState<Record<string, string>>({});
  const [triedSubmit, setTriedSubmit] = useState(false);
  const [key, setKey] = useState(apiKey);

  // --- jobs
  const [running, setRunning] = useState<Running | null>(null);
  const [message, setMessage] = useState<{ kind: "error" | "info"; text: string } | null>(null);
  const [shown, setShown] = useState<Job | null>(null);
  const [jobs, setJobs] = useState<Job[]>([]);
  const [jobsLoading, setJobsLoading] = useState(false);
  const [jobsError, setJobsError] = useState<string | null>(null);
  const [nextBefore, setNextBefore] = useState<string | null>(null);
  const abort = useRef<AbortController | null>(null);
  const progressEvents = useRef(0);
  const [local, setLocal] = useState<LocalState>(() => ({ enabled: stored(LOCAL_KEY) === "1", device: "cpu", model: null, progress: null, loading: false, error: null }));
  const summaryRef = useRef<HTMLDivElement>(null);

  // --- theme
  const [theme, setTheme] = useState<Theme>(() => (stored(THEME_KEY) as Theme | null) ?? "system");
  useEffect(() => {
    const root = document.documentElement;
    if (theme === "system") delete root.dataset.theme; else root.dataset.theme = theme;
    store(THEME_KEY, theme);
  }, [theme]);

  const chooseModel = useCallback((m: ModelInfo | undefined) => {
    if (!m) return;
    setModelId(m.id);
    store(MODEL_KEY, m.id);
    if (m.limits.steps) setSteps(Number(m.defaults.steps ?? m.limits.steps.default));
    if (m.limits.guidance) setGuidance(Number(m.defaults.guidance ?? m.limits.guidance.default));
    // Start at the model's own default size (1 MP for FLUX.2, 64×64 for flux2-mini).
    const dw = Number(m.defaults.width), dh = Number(m.defaults.height);
    if (dw > 0 && dh > 0) setSizeState((s) => (s.mode === "preset" ? { ...s, megapixels: nearestMegapixels(m.limits, dw, dh) } : s));
    setServerErrors({});
  }, []);

  useEffect(() => {
    listModels().then((ms) => {
      setModels(ms);
      const last = stored(MODEL_KEY);
      const usable = ms.filter((m) => m.available);
      chooseModel(usable.find((m) => m.id === last) ?? usable.find((m) => m.kind === "local") ?? usable[0] ?? ms[0]);
      if (!ms.length) setModelsError("the server lists no models");
    }, (e: Error) => setModelsError(e.message));
  }, [chooseModel]);

  const refreshJobs = useCallback(async () => {
    setJobsLoading(true);
    try {
      const r = await listJobs(30);
      setJobs(r.jobs);
      // Nothing on show yet (a fresh page): show the newest finished image.
      setShown((cur) => cur ?? r.jobs.find((j) => j.status === "Ready" && j.result?.sample) ?? null);
      setNextBefore(r.next);
      setJobsError(null);
    } catch (e) {
      setJobsError((e as Error).message);
    } finally {
      setJobsLoading(false);
    }
  }, []);
  useEffect(() => { void refreshJobs(); }, [refreshJobs]);

  const moreJobs = async () => {
    if (!nextBefore) return;
    setJobsLoading(true);
    try {
      const r = await listJobs(30, nextBefore);
      setJobs((js) => [...js, ...r.jobs.filter((j) => !js.some((x) => x.id === j.id))]);
      setNextBefore(r.next);
    } catch (e) {
      setJobsError((e as Error).message);
    } finally {
      setJobsLoading(false);
    }
  };

  // --- derived values
  const promptSent = promptMode === "text" ? text : structuredToText(structured);
  const size = useMemo(() => (sizeState.mode === "preset"
    ? presetSize(sizeState.aspect, Math.min(sizeState.megapixels, limits.maxPixels / (1024 * 1024)), limits)
    : { width: sizeState.widthText === "" ? NaN : Number(sizeState.widthText), height: sizeState.heightText === "" ? NaN : Number(sizeState.heightText) }),
  [sizeState, limits]);
  const sizeErrors = useMemo(() => {
    const e = validateSize(size.width, size.height, limits);
    return {
      width: e.width ?? serverErrors.width, height: e.height ?? serverErrors.height, size: e.size,
    };
  }, [size, limits, serverErrors]);
  const seedError = seedMode !== "random" && !(/^\d+$/.test(seedText) && Number(seedText) <= Number.MAX_SAFE_INTEGER)
    ? "The seed must be a whole number from 0." : undefined;
  const maxRefs = model?.limits.maxReferences ?? 0;
  const takes = (f: string) => !!model && accepts(model, f);

  const blocking: { field: string; msg: string }[] = [];
  if (!model) blocking.push({ field: "model", msg: "No model is selected." });
  if (!promptSent.trim()) blocking.push({ field: promptMode === "text" ? "prompt" : "b-scene", msg: "Write a prompt." });
  if (sizeErrors.width) blocking.push({ field: "width", msg: sizeErrors.width });
  if (sizeErrors.height) blocking.push({ field: "height", msg: sizeErrors.height });
  if (sizeErrors.size) blocking.push({ field: "width", msg: sizeErrors.size });
  if (seedError) blocking.push({ field: "seed", msg: seedError });
  if (refs.length > maxRefs) blocking.push({ field: "refs-h", msg: `${model?.id ?? "This model"} takes at most ${maxRefs} reference images; remove ${refs.length - maxRefs}.` });

  const setRefsAndMask = (r: Reference[]) => {
    if (r[0]?.id !== refs[0]?.id) setMask(null);
    setRefs(r);
    setServerErrors((e) => { const { input_image: _a, mask_image: _b, ...rest } = e; return rest; });
  };

  // --- applying settings (reuse parameters, a dropped PNG)
  const applySettings = (s: LoadedSettings | (Partial<LoadedSettings> & { prompt: string })) => {
    let m = models.find((x) => x.id === s.model);
    if (!m && s.variant) m = models.find((x) => x.variant === s.variant && x.kind === "local") ?? models.find((x) => x.variant === s.variant);
    if (m && m.id !== modelId) chooseModel(m);
    const target = m ?? model;
    if (isJsonPrompt(s.prompt)) { setPromptMode("json"); setStructured(textToStructured(s.prompt)); setText(s.prompt); }
    else { setPromptMode("text"); setText(s.prompt); }
    if (s.negativePrompt !== undefined) setNegative(s.negativePrompt ?? "");
    if (s.width && s.height) {
      const l = target?.limits ?? limits;
      let preset: SizeState | null = null;
      for (const mp of megapixelChoices(l)) for (const a of ASPECTS) {
        const z = presetSize(a, mp, l);
        if (!preset && z.width === s.width && z.height === s.height) preset = { ...sizeState, mode: "preset", aspect: a, megapixels: mp };
      }
      setSizeState(preset ?? { ...sizeState, mode: "custom", widthText: String(s.width), heightText: String(s.height) });
    }
    if (s.seed !== undefined && s.seed !== null) { setSeedMode("fixed"); setSeedText(String(s.seed)); }
    if (s.steps && target?.limits.steps) setSteps(s.steps);
    if (s.guidance && target?.limits.guidance) setGuidance(s.guidance);
    setServerErrors({});
  };

  const reuseJob = (j: Job) => {
    const p = j.params;
    const num = (v: unknown) => (typeof v === "number" ? v : undefined);
    applySettings({
      prompt: String(p.prompt ?? j.result?.prompt ?? ""),
      negativePrompt: typeof p.negative_prompt === "string" ? p.negative_prompt : undefined,
      width: num(p.width) ?? j.result?.width ?? undefined,
      height: num(p.height) ?? j.result?.height ?? undefined,
      seed: j.result?.seed ?? num(p.seed),
      steps: num(p.steps), guidance: num(p.guidance), model: j.model,
    });
    setMessage({ kind: "info", text: `Loaded the parameters of job ${j.id}.` });
  };

  const reuseSeed = (j: Job) => {
    const s = j.result?.seed ?? j.params.seed;
    if (s === undefined || s === null) return;
    setSeedMode("fixed");
    setSeedText(String(s));
    setMessage({ kind: "info", text: `Seed set to ${s}.` });
  };

  const useAsReference = async (j: Job) => {
    const url = j.result?.sample;
    if (!url) return;
    if (refs.length >= maxRefs) { setMessage({ kind: "error", text: `${model?.id ?? "This model"} takes at most ${maxRefs} reference images.` }); return; }
    try {
      const ext = /\.\w+$/.exec(fileName(url, ".png"))?.[0] ?? ".png";
      const r = await referenceFromUrl(url, `job-${j.id.slice(0, 8)}${ext}`);
      setRefsAndMask([...refs, r]);
      setMessage({ kind: "info", text: `Added ${r.name} as reference ${refs.length + 1}.` });
    } catch (e) {
      setMessage({ kind: "error", text: (e as Error).message });
    }
  };

  const loadSettingsFile = async (f: File) => {
    try {
      const s = await settingsFromPng(await f.arrayBuffer());
      if (!s) { setMessage({ kind: "error", text: `${f.name} carries no generation settings (no flux2, parameters or ComfyUI prompt chunk).` }); return; }
      applySettings(s);
      setMessage({ kind: "info", text: `Loaded the settings of ${f.name} (${s.source === "flux2" ? "flux2 metadata" : s.source === "a1111" ? "A1111 parameters" : "ComfyUI workflow"}).` });
    } catch (e) {
      setMessage({ kind: "error", text: `${f.name}: ${(e as Error).message}` });
    }
  };

  // --- generating
  const buildBody = (seed: number): Record<string, unknown> => {
    const b: Record<string, unknown> = { prompt: promptSent, width: size.width, height: size.height, seed, output_format: "png" };
    if (takes("steps") && model?.limits.steps) b.steps = steps;
    if (takes("guidance") && model?.limits.guidance) b.guidance = guidance;
    if (takes("negative_prompt") && negative.trim()) b.negative_prompt = negative;
    refs.forEach((r, i) => { b[i === 0 ? "input_image" : `input_image_${i + 1}`] = r.dataUrl; });
    if (refs.length && mask && takes("mask_image")) b.mask_image = mask;
    if (refs.length && (strengthOn || mask) && takes("strength")) b.strength = strengthOn ? strength : 1;
    if (refs.length && expand.some(Boolean) && takes("expand")) b.expand = expand;
    return b;
  };

  const waitFinal = async (id: string, signal: AbortSignal): Promise<Job | null> => {
    for (let delay = 150; !signal.aborted; delay = Math.min(1000, delay * 1.5)) {
      const j = await getResult(id);
      if (FINAL.has(j.status)) return j;
      // Polling (no event stream): show what get_result says of the progress.
      if (j.progress !== null) setRunning((r) => r && { ...r, fraction: j.progress!, preview: j.preview ?? r.preview, status: j.status });
      await sleep(delay, signal);
    }
    return null;
  };

  // "Run in this browser": download (or take from the cache) the chosen model's files once.
  useEffect(() => {
    if (!local.enabled || !model || local.loading) return;
    if (local.model?.id === model.id && local.model.device === local.device) return;
    if (local.error && local.error.startsWith(`[${model.id}/${local.device}]`)) return;
    if (model.kind !== "local") {
      setLocal((l) => ({ ...l, model: null, error: `[${model.id}/${l.device}] ${model.id} runs at ${model.description}; only models in the server's own folders can run in this browser` }));
      return;
    }
    setLocal((l) => ({ ...l, loading: true, progress: null, error: null, model: null }));
    openLocalModel(model.id, local.device, key, (p) => setLocal((l) => ({ ...l, progress: p })))
      .then((m) => setLocal((l) => ({ ...l, loading: false, model: m })),
        (e: Error) => setLocal((l) => ({ ...l, loading: false, error: `[${model.id}/${l.device}] ${e.message}` })));
  }, [local, model, key]);

  const generateInBrowser = async (base: number) => {
    const lm = local.model;
    if (!lm || lm.id !== model?.id) {
      setMessage({ kind: "error", text: local.loading ? "The model is still loading into this browser; generate when it is ready." : local.error ?? "The model is not loaded in this browser." });
      return;
    }
    const ctrl = new AbortController();
    abort.current = ctrl;
    const ids = Array.from({ length: batch }, (_, i) => `local-${i}`);
    const started = performance.now();
    let done = 0;
    let failed = "";
    for (let i = 0; i < batch && !ctrl.signal.aborted; i++) {
      setRunning({ ids, index: i, step: 0, steps: 0, fraction: 0, preview: null, status: "Running in this browser", cancelling: false });
      try {
        const job = await generateLocally(lm, buildBody(base + i), ctrl.signal, (step, steps, preview) =>
          setRunning((r) => r && { ...r, step, steps, fraction: step / steps, preview: preview ?? r.preview, status: "Running in this browser" }));
        done++;
        setShown(job);
        setJobs((js) => [job, ...js]);
      } catch (err) {
        if (!(err instanceof Cancelled)) failed = (err as Error).message;
        break;
      }
    }
    if (seedMode === "increment") setSeedText(String(base + batch));
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    setRunning(null);
    abort.current = null;
    if (ctrl.signal.aborted) setMessage({ kind: "info", text: `Cancelled: ${done} of ${batch} image${batch === 1 ? "" : "s"} made.` });
    else if (failed) setMessage({ kind: "error", text: `Generation failed: ${failed}` });
    else setMessage({ kind: "info", text: `Done in this browser: ${done} image${done === 1 ? "" : "s"} in ${secs} s.` });
  };

  const generate = async (e?: FormEvent) => {
    e?.preventDefault();
    setTriedSubmit(true);
    if (running) return;
    if (blocking.length || !model) {
      requestAnimationFrame(() => summaryRef.current?.focus());
      return;
    }
    setServerErrors({});
    setMessage(null);
    // In the one-column layout the output is below the form: bring it into view.
    if (window.matchMedia("(max-width: 860px)").matches) document.getElementById("output-h")?.scrollIntoView({ block: "start" });
    const base = seedMode === "random" ? randomSeed() : Number(seedText);
    if (seedMode === "random") setSeedText(String(base));
    if (local.enabled) return generateInBrowser(base);
    const ctrl = new AbortController();
    abort.current = ctrl;
    const ids: string[] = [];
    setRunning({ ids, index: 0, step: 0, steps: 0, fraction: 0, preview: null, status: "Submitting", cancelling: false });
    try {
      for (let i = 0; i < batch && !ctrl.signal.aborted; i++) {
        const { id } = await submit(model.id, buildBody(base + i));
        ids.push(id);
        // Cancelled while this one was being submitted: it goes too.
        if (ctrl.signal.aborted) await cancelJob(id).catch(() => undefined);
      }
    } catch (err) {
      setRunning(null);
      if (err instanceof ApiError && err.fields.length) {
        const fe: Record<string, string> = {};
        for (const f of err.fields) fe[f.field.replace(/^input_image_\d+$/, "input_image")] = f.msg;
        setServerErrors(fe);
        setMessage({ kind: "error", text: `The server refused the request: ${err.message}` });
      } else {
        setMessage({ kind: "error", text: `Could not start: ${(err as Error).message}` });
      }
      if (!ids.length) return;
    }
    if (seedMode === "increment") setSeedText(String(base + batch));
    const started = performance.now();
    let done = 0;
    let failed = "";
    for (let i = 0; i < ids.length && !ctrl.signal.aborted; i++) {
      const id = ids[i];
      setRunning({ ids, index: i, step: 0, steps: 0, fraction: 0, preview: null, status: "Pending", cancelling: false });
      try {
        await followEvents(id, {
          progress: (p) => {
            progressEvents.current++;
            document.documentElement.dataset.progressEvents = String(progressEvents.current);
            setRunning((r) => r && { ...r, step: p.step, steps: p.steps, fraction: p.fraction, preview: p.preview ?? r.preview, status: "Running" });
          },
          status: (s) => setRunning((r) => r && { ...r, status: s }),
        }, ctrl.signal);
      } catch {
        // No event stream (or it broke): fall back to polling below.
      }
      if (ctrl.signal.aborted) break;
      try {
        const j = await waitFinal(id, ctrl.signal);
        if (!j) break;
        if (j.status === "Ready") {
          done++;
          const withParams: Job = { ...j, model: j.model || model.id, params: Object.keys(j.params).length ? j.params : buildBody(base + i) };
          setShown(withParams);
          setJobs((js) => [withParams, ...js.filter((x) => x.id !== j.id)]);
        } else {
          failed = `${j.status}${j.error ? `: ${j.error}` : ""}`;
        }
      } catch (err) {
        failed = (err as Error).message;
      }
    }
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    setRunning(null);
    abort.current = null;
    if (ctrl.signal.aborted) setMessage({ kind: "info", text: `Cancelled: ${done} of ${batch} image${batch === 1 ? "" : "s"} made.` });
    else if (failed) setMessage({ kind: "error", text: `Generation failed: ${failed}` });
    else setMessage({ kind: "info", text: `Done: ${done} image${done === 1 ? "" : "s"} in ${secs} s.` });
    void refreshJobs();
  };

  const cancel = async () => {
    const r = running;
    if (!r) return;
    setRunning({ ...r, cancelling: true });
    // Stop submitting the rest of a batch first, then cancel what the server has.
    abort.current?.abort();
    // In-browser runs (local-*) stop at the next step; the server has nothing to cancel.
    await Promise.all(r.ids.slice(r.index).filter((id) => !id.startsWith("local-")).map((id) => cancelJob(id).catch(() => undefined)));
  };

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      // Escape cancels a running job, unless it is meant for a text field or an open picker.
      const a = document.activeElement;
      const typing = a instanceof HTMLTextAreaElement || (a instanceof HTMLInputElement && !["button", "checkbox", "radio", "range"].includes(a.type)) || a instanceof HTMLSelectElement;
      if (e.key === "Escape" && !e.defaultPrevented && running && !running.cancelling && !typing) void cancel();
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  });

  const switchMode = (m: "text" | "json") => {
    if (m === promptMode) return;
    if (m === "json") setStructured(textToStructured(text));
    else setText(structuredToText(structured) || text);
    setPromptMode(m);
  };

  const nextTheme: Record<Theme, Theme> = { system: "light", light: "dark", dark: "system" };
  const invalid = blocking.length > 0;

  return (
    <>
      <a className="skip" href="#controls">Skip to the controls</a>
      <header className="top">
        <h1><span className="logo" aria-hidden="true">▲</span> flux2 studio</h1>
        <button type="button" className="theme" onClick={() => setTheme(nextTheme[theme])} aria-label={`Theme: ${theme}. Switch to ${nextTheme[theme]}`} data-testid="theme-toggle">
          {theme === "dark" ? "☾ Dark" : theme === "light" ? "☀ Light" : "◐ System"}
        </button>
      </header>
      <main className="layout">
        <form id="controls" className="controls" onSubmit={generate} noValidate aria-label="Generation settings"
          onKeyDown={(e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); void generate(); } }}>
          <ModelPicker models={models} value={modelId} onChange={(id) => chooseModel(models.find((m) => m.id === id))} error={modelsError} />
          <PromptBox mode={promptMode} onMode={switchMode} text={text} onText={setText} structured={structured} onStructured={setStructured}
            sent={promptSent} error={serverErrors.prompt}
            negative={takes("negative_prompt") ? { value: negative, onChange: setNegative } : null} />
          <References refs={refs} onRefs={setRefsAndMask} max={maxRefs} recommended={model?.limits.recommendedReferences ?? 0}
            mask={takes("mask_image") ? { value: mask, onChange: setMask } : null}
            expand={takes("expand") ? { value: expand, onChange: setExpand } : null}
            strength={takes("strength") ? { enabled: strengthOn, value: strength, onEnabled: setStrengthOn, onChange: setStrength } : null}
            errors={serverErrors} />
          <SizeControls state={sizeState} onChange={(s) => { setSizeState(s); setServerErrors(({ width: _w, height: _h, ...rest }) => rest); }}
            limits={limits} size={size} errors={sizeErrors} />
          <SeedControls seedMode={seedMode} onSeedMode={setSeedMode} seedText={seedText} onSeedText={setSeedText} seedError={seedError}
            steps={model?.limits.steps && takes("steps") ? { range: model.limits.steps, value: steps, onChange: setSteps } : null}
            guidance={model?.limits.guidance && takes("guidance") ? { range: model.limits.guidance, value: guidance, onChange: setGuidance } : null}
            batch={batch} onBatch={setBatch} maxBatch={MAX_BATCH} variant={model?.variant ?? ""} />

          <div className="submit-bar">
            <div ref={summaryRef} tabIndex={-1} className="summary" data-testid="submit-errors" aria-live="polite">
              {triedSubmit && invalid && (
                <div className="error" role="alert">
                  <strong>Fix before generating:</strong>
                  <ul>{blocking.map((b, i) => <li key={i}><a href={`#${b.field}`}>{b.msg}</a></li>)}</ul>
                </div>
              )}
            </div>
            <button type="submit" className="primary" disabled={!!running} aria-disabled={invalid || !!running}
              data-testid="generate" title={invalid ? blocking[0].msg : "Generate (Enter)"}>
              {running ? "Generating…" : batch > 1 ? `Generate ${batch}` : "Generate"}
            </button>
          </div>

          <LocalRun state={local} onToggle={(on) => { store(LOCAL_KEY, on ? "1" : "0"); setLocal((l) => ({ ...l, enabled: on, error: null })); }}
            onDevice={(d) => setLocal((l) => ({ ...l, device: d, error: null }))} />
          <details className="panel settings">
            <summary>Server</summary>
            <label htmlFor="api-key">API key (x-key; not needed on 127.0.0.1)</label>
            <input id="api-key" type="password" autoComplete="off" value={key} onChange={(e) => { setKey(e.target.value); setApiKey(e.target.value); }} />
          </details>
        </form>
        <div className="results">
          <Output running={running} shown={shown} onCancel={() => void cancel()} message={message} />
          <Gallery jobs={jobs} loading={jobsLoading} error={jobsError} hasMore={!!nextBefore} onMore={() => void moreJobs()}
            onRefresh={() => void refreshJobs()} onShow={setShown} onReference={(j) => void useAsReference(j)}
            onReuse={reuseJob} onReuseSeed={reuseSeed} onSettingsFile={(f) => void loadSettingsFile(f)} />
        </div>
      </main>
    </>
  );
}
