import { useCallback, useEffect, useMemo, useRef, useState, type FormEvent } from "react";
import {
  accepts, ApiError, imageField, apiKey, cancelJob, deleteJob, FINAL, followEvents, getJob, getResult, hideJob, listGallery, listJobs, listLoras, listModels,
  sameOrigin, serverAddress, setApiKey, setServerAddress, submit, type GalleryFilter, type Job, type RequestBody, type RequestField, type LoraList, type ModelInfo,
} from "./api";
import { blobToDataUrl, referenceFromUrl, fileName, type Reference } from "./images";
import { settingsFromPng, type LoadedSettings } from "./png";
import { emptyStructured, isJsonPrompt, structuredToText, textToStructured, type Structured } from "./prompt";
import { ASPECTS, megapixelChoices, nearestMegapixels, presetSize, validateSize, type SizeLimits } from "./size";
import { editedSize, loadForm, saveForm, saveFormImages, type SavedForm } from "./form";
import { Gallery } from "./components/Gallery";
import { groupBatches, newBatchId } from "./batches";
import { LoraPicker, type LoraChoice } from "./components/LoraPicker";
import { ModelPicker } from "./components/ModelPicker";
import { Output } from "./components/Output";
import { PromptBox } from "./components/PromptBox";
import { QueuePanel, type QueueItem } from "./components/QueuePanel";
import { References, type Expand } from "./components/References";
import { SeedControls, randomSeed, type SeedMode } from "./components/SeedControls";
import { SizeControls, type SizeState } from "./components/SizeControls";
import { StatusBar, type Live } from "./components/StatusBar";
import { Toasts, type Toast } from "./components/Toasts";
import { LocalRun, LOCAL_KEY, type LocalState } from "./local/LocalRun";
import { Cancelled, generateLocally, openLocalModel } from "./local/engine";

type Theme = "system" | "light" | "dark";
const THEME_KEY = "flux2.studio.theme";
const MODEL_KEY = "flux2.studio.model";
const DEFAULT_LIMITS: SizeLimits = { minSide: 64, multipleOf: 16, maxPixels: 4 * 1024 * 1024 };
const MAX_BATCH = 8;
const DEFAULT_SIZE: SizeState = { mode: "preset", aspect: "1:1", megapixels: 1, widthText: "1024", heightText: "1024" };
const NO_EXPAND: Expand = [0, 0, 0, 0];

const stored = (k: string): string | null => { try { return localStorage.getItem(k); } catch { return null; } };
const store = (k: string, v: string) => { try { localStorage.setItem(k, v); } catch { /* private mode */ } };
const sleep = (ms: number, signal?: AbortSignal) => new Promise<void>((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
});
const ACTIVE = new Set(["Pending", "Running"]);
let toastSeq = 0;

/** Everything a gallery job or a PNG can restore; absent fields take the form's defaults (the form is replaced). */
interface Settings extends Partial<Omit<LoadedSettings, "source" | "references">> {
  prompt: string;
  refs?: Reference[];
  mask?: string | null;
  expand?: Expand;
  batch?: number;
}

export function App() {
  const saved = useMemo<Partial<SavedForm>>(() => loadForm(), []);
  // --- models
  const [models, setModels] = useState<ModelInfo[]>([]);
  const [modelsError, setModelsError] = useState<string | null>(null);
  const [modelId, setModelId] = useState("");
  const model = models.find((m) => m.id === modelId) ?? null;
  const limits: SizeLimits = model?.limits ?? DEFAULT_LIMITS;
  const [loraList, setLoraList] = useState<LoraList | null>(null);
  const [loraError, setLoraError] = useState<string | null>(null);

  // --- form (restored from this browser's last visit)
  const [promptMode, setPromptMode] = useState<"text" | "json">(saved.promptMode ?? "text");
  const [text, setText] = useState(saved.text ?? "");
  const [structured, setStructured] = useState<Structured>(() => saved.structured ?? emptyStructured());
  const [negative, setNegative] = useState(saved.negative ?? "");
  const [sizeState, setSizeState] = useState<SizeState>(saved.sizeState ?? DEFAULT_SIZE);
  const [seedMode, setSeedMode] = useState<SeedMode>(saved.seedMode ?? "random");
  const [seedText, setSeedText] = useState(() => saved.seedText ?? String(randomSeed()));
  const [steps, setSteps] = useState(saved.steps ?? 4);
  const [guidance, setGuidance] = useState(saved.guidance ?? 4);
  const [batch, setBatch] = useState(saved.batch ?? 1);
  const [refs, setRefs] = useState<Reference[]>(saved.refs ?? []);
  const [mask, setMask] = useState<string | null>(saved.mask ?? null);
  const [strengthOn, setStrengthOn] = useState(saved.strengthOn ?? false);
  const [strength, setStrength] = useState(saved.strength ?? 0.75);
  const [expand, setExpand] = useState<Expand>(saved.expand ?? NO_EXPAND);
  const [loras, setLoras] = useState<LoraChoice[]>(saved.loras ?? []);
  const [serverErrors, setServerErrors] = useState<Record<string, string>>({});
  const [triedSubmit, setTriedSubmit] = useState(false);
  const [key, setKey] = useState(apiKey);
  const [address, setAddress] = useState(serverAddress);
  const [addressError, setAddressError] = useState<string | null>(null);

  useEffect(() => {
    saveForm({ promptMode, text, structured, negative, sizeState, seedMode, seedText, steps, guidance, batch, strengthOn, strength, expand, loras });
  }, [promptMode, text, structured, negative, sizeState, seedMode, seedText, steps, guidance, batch, strengthOn, strength, expand, loras]);
  useEffect(() => { saveFormImages(refs, mask); }, [refs, mask]);

  // --- jobs
  const [queue, setQueue] = useState<QueueItem[]>([]);
  const [live, setLive] = useState<Live | null>(null);
  const [now, setNow] = useState(Date.now());
  const [message, setMessage] = useState<{ kind: "error" | "info"; text: string } | null>(null);
  const [toasts, setToasts] = useState<Toast[]>([]);
  const [shown, setShown] = useState<Job | null>(null);
  const [jobs, setJobs] = useState<Job[]>([]);
  const [filter, setFilter] = useState<GalleryFilter>({ hidden: "exclude" });
  const [jobsLoading, setJobsLoading] = useState(false);
  const [jobsError, setJobsError] = useState<string | null>(null);
  const [nextBefore, setNextBefore] = useState<string | null>(null);
  const following = useRef<{ id: string; ctrl: AbortController } | null>(null);
  /** How long the last run of a model at a size took (ms), for the estimate before the first step. */
  const typical = useRef(new Map<string, number>());
  const progressEvents = useRef(0);
  const [local, setLocal] = useState<LocalState>(() => ({ enabled: stored(LOCAL_KEY) === "1", device: "cpu", model: null, progress: null, loading: false, error: null }));
  const localAbort = useRef<AbortController | null>(null);
  const summaryRef = useRef<HTMLDivElement>(null);

  const notify = useCallback((kind: "info" | "error", text: string) => {
    const id = ++toastSeq;
    setMessage({ kind, text });
    setToasts((t) => [...t.slice(-3), { id, kind, text }]);
    setTimeout(() => setToasts((t) => t.filter((x) => x.id !== id)), kind === "error" ? 10_000 : 4_000);
  }, []);

  // --- theme
  const [theme, setTheme] = useState<Theme>(() => (stored(THEME_KEY) as Theme | null) ?? "system");
  useEffect(() => {
    const root = document.documentElement;
    if (theme === "system") delete root.dataset.theme; else root.dataset.theme = theme;
    store(THEME_KEY, theme);
  }, [theme]);

  /** Choose a model; `keep` keeps the form's steps, guidance and size (a restored form, reused settings). */
  const chooseModel = useCallback((m: ModelInfo | undefined, keep = false) => {
    if (!m) return;
    setModelId(m.id);
    store(MODEL_KEY, m.id);
    setServerErrors({});
    if (keep) return;
    if (m.limits.steps) setSteps(Number(m.defaults.steps ?? m.limits.steps.default));
    if (m.limits.guidance) setGuidance(Number(m.defaults.guidance ?? m.limits.guidance.default));
    // Start at the model's own default size (1 MP for FLUX.2, 64×64 for flux2-mini).
    const dw = Number(m.defaults.width), dh = Number(m.defaults.height);
    if (dw > 0 && dh > 0) setSizeState((s) => (s.mode === "preset" ? { ...s, megapixels: nearestMegapixels(m.limits, dw, dh) } : s));
  }, []);

  useEffect(() => {
    listModels().then((ms) => {
      setModels(ms);
      const last = stored(MODEL_KEY);
      const usable = ms.filter((m) => m.available);
      const pick = usable.find((m) => m.id === last) ?? usable.find((m) => m.kind === "local") ?? usable[0] ?? ms[0];
      // The form saved with this same model keeps its values; another model starts from its defaults.
      chooseModel(pick, pick?.id === last && Object.keys(saved).length > 0);
      if (!ms.length) setModelsError("the server lists no models");
    }, (e: Error) => setModelsError(e.message));
    listLoras().then(setLoraList, (e: Error) => setLoraError(e.message));
  }, [chooseModel, saved]);

  // Filters change faster than answers come: only the newest request's answer is shown.
  const listSeq = useRef(0);
  const refreshJobs = useCallback(async (f: GalleryFilter = filter) => {
    setJobsLoading(true);
    const seq = ++listSeq.current;
    try {
      const r = await listGallery(30, undefined, f);
      if (seq !== listSeq.current) return;
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
  }, [filter]);
  useEffect(() => { void refreshJobs(); }, [refreshJobs]);

  // The queue survives a reload: the server's job list has every queued and running job.
  useEffect(() => {
    listJobs(100).then((r) => {
      const active = r.jobs.filter((j) => ACTIVE.has(j.status)).reverse();
      if (!active.length) return;
      setQueue((q) => [...q, ...active.filter((j) => !q.some((x) => x.id === j.id)).map((j) => ({
        id: j.id, model: j.model, prompt: String(j.params.prompt ?? ""), status: j.status, images: Number(j.params.num_images ?? 1),
      }))]);
    }, () => undefined);
  }, []);

  const moreJobs = async () => {
    if (!nextBefore) return;
    setJobsLoading(true);
    try {
      const r = await listGallery(30, nextBefore, filter);
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
  const takes = (f: RequestField) => !!model && accepts(model, f);
  const maxRefs = model?.limits.maxReferences ?? 0;
  // Editing the first image (img2img, inpainting, outpainting): the output size follows it.
  const editing = refs.length > 0 && ((strengthOn && takes("strength")) || (!!mask && takes("mask_image")) || (expand.some(Boolean) && takes("expand")));
  const locked = editing ? editedSize(refs[0], takes("expand") ? expand : NO_EXPAND, limits) : null;
  const size = useMemo(() => (sizeState.mode === "preset"
    ? presetSize(sizeState.aspect, Math.min(sizeState.megapixels, limits.maxPixels / (1024 * 1024)), limits)
    : { width: sizeState.widthText === "" ? NaN : Number(sizeState.widthText), height: sizeState.heightText === "" ? NaN : Number(sizeState.heightText) }),
  [sizeState, limits]);
  const sizeErrors = useMemo(() => {
    if (locked) return {};
    const e = validateSize(size.width, size.height, limits);
    return { width: e.width ?? serverErrors.width, height: e.height ?? serverErrors.height, size: e.size };
  }, [size, limits, serverErrors, locked]);
  const seedError = seedMode !== "random" && !(/^\d+$/.test(seedText) && Number(seedText) <= Number.MAX_SAFE_INTEGER)
    ? "The seed must be a whole number from 0." : undefined;
  const unknownLoras = loraList ? loras.filter((l) => !loraList.loras.some((x) => x.name === l.name)) : [];

  const blocking: { field: string; msg: string }[] = [];
  if (!model) blocking.push({ field: "model", msg: "No model is selected." });
  if (!promptSent.trim()) blocking.push({ field: promptMode === "text" ? "prompt" : "b-scene", msg: "Write a prompt." });
  if (sizeErrors.width) blocking.push({ field: "width", msg: sizeErrors.width });
  if (sizeErrors.height) blocking.push({ field: "height", msg: sizeErrors.height });
  if (sizeErrors.size) blocking.push({ field: "width", msg: sizeErrors.size });
  if (locked?.error) blocking.push({ field: "refs-h", msg: locked.error });
  if (seedError) blocking.push({ field: "seed", msg: seedError });
  if (refs.length > maxRefs) blocking.push({ field: "refs-h", msg: `${model?.id ?? "This model"} takes at most ${maxRefs} reference images; remove ${refs.length - maxRefs}.` });
  if (loras.length && !takes("loras")) blocking.push({ field: "loras-h", msg: `${model?.id ?? "This model"} takes no LoRAs; clear them.` });
  if (refs.length && mask && takes("mask_image") && expand.some(Boolean) && takes("expand")) {
    blocking.push({ field: "refs-h", msg: "A painted mask and an expansion cannot be combined: the expansion makes its own mask. Clear the mask, or set the expansion to 0." });
  }
  if (unknownLoras.length) blocking.push({ field: "loras-h", msg: `LoRA ${unknownLoras.map((l) => l.name).join(", ")} is not on this server.` });

  const setRefsAndMask = (r: Reference[]) => {
    if (r[0]?.id !== refs[0]?.id) setMask(null);
    setRefs(r);
    setServerErrors((e) => { const { input_image: _a, mask_image: _b, ...rest } = e; return rest; });
  };

  // --- replacing the form (Reuse, a PNG): what is not given takes the defaults; returns what could not be applied.
  const replaceForm = (s: Settings): string[] => {
    const skipped: string[] = [];
    let m = s.model ? models.find((x) => x.id === s.model) : undefined;
    if (!m && s.variant) m = models.find((x) => x.variant === s.variant && x.kind === "local") ?? models.find((x) => x.variant === s.variant);
    if ((s.model || s.variant) && !m) skipped.push(`model ${s.model ?? s.variant} (not on this server; kept ${model?.id ?? "the current one"})`);
    const target = m ?? model;
    if (m && m.id !== modelId) chooseModel(m, true);
    const can = (f: RequestField) => !!target && accepts(target, f);
    if (isJsonPrompt(s.prompt)) { setPromptMode("json"); setStructured(textToStructured(s.prompt)); setText(s.prompt); }
    else { setPromptMode("text"); setText(s.prompt); setStructured(emptyStructured()); }
    setNegative(s.negativePrompt && can("negative_prompt") ? s.negativePrompt : "");
    if (s.negativePrompt && !can("negative_prompt")) skipped.push(`negative prompt (${target?.id} takes none)`);
    const l = target?.limits ?? limits;
    if (s.width && s.height && !s.refs?.length) {
      let preset: SizeState | null = null;
      for (const mp of megapixelChoices(l)) for (const a of ASPECTS) {
        const z = presetSize(a, mp, l);
        if (!preset && z.width === s.width && z.height === s.height) preset = { ...DEFAULT_SIZE, aspect: a, megapixels: mp };
      }
      setSizeState(preset ?? { ...DEFAULT_SIZE, mode: "custom", widthText: String(s.width), heightText: String(s.height) });
    }
    if (s.seed !== undefined && s.seed !== null) { setSeedMode("fixed"); setSeedText(String(s.seed)); }
    else { setSeedMode("random"); setSeedText(String(randomSeed())); }
    const stepsRange = target?.limits.steps, guidanceRange = target?.limits.guidance;
    if (stepsRange) setSteps(s.steps && can("steps") ? s.steps : Number(target?.defaults.steps ?? stepsRange.default));
    if (s.steps && !(stepsRange && can("steps"))) skipped.push(`steps ${s.steps} (${target?.id} has fixed steps)`);
    if (guidanceRange) setGuidance(s.guidance && can("guidance") ? s.guidance : Number(target?.defaults.guidance ?? guidanceRange.default));
    if (s.guidance && !(guidanceRange && can("guidance"))) skipped.push(`guidance ${s.guidance} (${target?.id} takes none)`);
    setBatch(s.batch ?? 1);
    setRefs(s.refs ?? []);
    setMask(s.mask ?? null);
    setExpand(s.expand ?? NO_EXPAND);
    const withStrength = s.strength !== undefined && !!s.refs?.length && !s.mask && !s.expand?.some(Boolean);
    setStrengthOn(withStrength);
    if (withStrength) setStrength(s.strength!);
    else if (s.strength !== undefined && !s.refs?.length) skipped.push(`strength ${s.strength} (needs the first image, which the file does not carry)`);
    const usable = (s.loras ?? []).filter((x) => loraList?.loras.some((y) => y.name === x.name));
    setLoras(usable);
    for (const x of s.loras ?? []) if (!usable.includes(x)) skipped.push(`LoRA ${x.name} (not on this server)`);
    setServerErrors({});
    return skipped;
  };

  const reuseJob = async (j: Job) => {
    const p = j.params;
    const num = (v: unknown) => (typeof v === "number" ? v : undefined);
    try {
      // The job's own inputs, from the server's image store (references in order, then the mask).
      const refUrls = Array.from({ length: 10 }, (_, i) => p[imageField(i)]).filter((u): u is string => typeof u === "string");
      const refsBack = await Promise.all(refUrls.map((u, i) => referenceFromUrl(sameOrigin(u), `job-${j.id.slice(0, 8)}-ref${i + 1}${/\.\w+$/.exec(fileName(u, ".png"))?.[0] ?? ".png"}`)));
      const maskUrl = typeof p.mask_image === "string" ? p.mask_image : typeof p.mask === "string" ? p.mask : null;
      let maskBack: string | null = null;
      if (maskUrl) {
        const res = await fetch(sameOrigin(maskUrl));
        if (!res.ok) throw new Error(`could not load the mask: ${res.status}`);
        maskBack = await blobToDataUrl(await res.blob());
      }
      const skipped = replaceForm({
        prompt: String(p.prompt ?? j.result?.prompt ?? ""),
        negativePrompt: typeof p.negative_prompt === "string" ? p.negative_prompt : undefined,
        width: num(p.width) ?? j.result?.width ?? undefined,
        height: num(p.height) ?? j.result?.height ?? undefined,
        seed: j.result?.seed ?? num(p.seed), steps: num(p.steps), guidance: num(p.guidance), model: j.model,
        refs: refsBack, mask: maskBack, strength: num(p.strength),
        expand: Array.isArray(p.expand) && p.expand.length === 4 ? p.expand as Expand : undefined,
        loras: Array.isArray(p.loras) ? p.loras as LoraChoice[] : undefined, batch: num(p.num_images),
      });
      notify(skipped.length ? "error" : "info", `Loaded the parameters of job ${j.id.slice(0, 8)}${refsBack.length ? ` with ${refsBack.length} reference image${refsBack.length > 1 ? "s" : ""}${maskBack ? " and its mask" : ""}` : ""}.${skipped.length ? ` Not applied: ${skipped.join("; ")}.` : ""}`);
    } catch (e) {
      notify("error", `Could not reuse job ${j.id.slice(0, 8)}: ${(e as Error).message}`);
    }
  };

  const reuseSeed = (j: Job) => {
    const s = j.result?.seed ?? j.params.seed;
    if (s === undefined || s === null) return;
    setSeedMode("fixed");
    setSeedText(String(s));
    notify("info", `Seed set to ${s}.`);
  };

  const useAsReference = async (j: Job) => {
    const url = j.result?.sample;
    if (!url) return;
    if (refs.length >= maxRefs) { notify("error", `${model?.id ?? "This model"} takes at most ${maxRefs} reference images.`); return; }
    try {
      const ext = /\.\w+$/.exec(fileName(url, ".png"))?.[0] ?? ".png";
      const r = await referenceFromUrl(url, `job-${j.id.slice(0, 8)}${ext}`);
      setRefsAndMask([...refs, r]);
      notify("info", `Added ${r.name} as reference ${refs.length + 1}.`);
    } catch (e) {
      notify("error", (e as Error).message);
    }
  };

  const loadSettingsFile = async (f: File) => {
    try {
      const s = await settingsFromPng(await f.arrayBuffer());
      if (!s) { notify("error", `${f.name} carries no generation settings (no flux2, parameters or ComfyUI prompt chunk).`); return; }
      const skipped = replaceForm({ ...s, refs: [] });
      if (s.references) skipped.push(`${s.references} reference image${s.references > 1 ? "s" : ""} (a PNG records their sizes, not the images)`);
      for (const [k, v] of Object.entries(s.other ?? {})) skipped.push(`${k}: ${v}`);
      const from = s.source === "flux2" ? "flux2 metadata" : s.source === "a1111" ? "A1111 parameters" : "ComfyUI workflow";
      notify("info", `Loaded the settings of ${f.name} (${from}); the form was replaced.${skipped.length ? ` Not applied: ${skipped.join("; ")}.` : ""}`);
    } catch (e) {
      notify("error", `${f.name}: ${(e as Error).message}`);
    }
  };

  // A batch's card (batches.ts) stands for all its jobs.
  const hide = async (j: Job, hidden: boolean) => {
    const ids = new Set((j.members ?? [j]).map((m) => m.id));
    try {
      for (const id of ids) await hideJob(id, hidden);
      setJobs((js) => (hidden && filter.hidden !== "include" ? js.filter((x) => !ids.has(x.id)) : js.map((x) => (ids.has(x.id) ? { ...x, hidden } : x))));
      notify("info", hidden ? "Hidden from the gallery (tick Show hidden to see it)." : "Shown in the gallery again.");
    } catch (e) {
      notify("error", `Could not ${hidden ? "hide" : "unhide"}: ${(e as Error).message}`);
    }
  };

  const remove = async (j: Job) => {
    const ids = new Set((j.members ?? [j]).map((m) => m.id));
    try {
      for (const id of ids) {
        await deleteJob(id);
        setJobs((js) => js.filter((x) => x.id !== id));
      }
      setShown((s) => (s && ids.has(s.id) ? null : s));
      notify("info", "Deleted the image and its files.");
    } catch (e) {
      notify("error", `Could not delete: ${(e as Error).message}`);
    }
  };

  // --- generating: submitting adds to the queue; the queue's head is followed until it ends.
  const buildBody = (seed: number, images: number): RequestBody => {
    const b: RequestBody = { prompt: promptSent, seed, output_format: "png" };
    // An edit's size follows its first image (the server derives it): sending the size panel's would stretch it.
    if (!editing) { b.width = size.width; b.height = size.height; }
    if (images > 1) b.num_images = images;
    if (takes("steps") && model?.limits.steps) b.steps = steps;
    if (takes("guidance") && model?.limits.guidance) b.guidance = guidance;
    if (takes("negative_prompt") && negative.trim()) b.negative_prompt = negative;
    refs.forEach((r, i) => { b[imageField(i)] = r.dataUrl; });
    if (refs.length && mask && takes("mask_image")) b.mask_image = mask;
    if (refs.length && (strengthOn || mask) && takes("strength")) b.strength = strengthOn ? strength : 1;
    if (refs.length && expand.some(Boolean) && takes("expand")) b.expand = expand;
    if (loras.length && takes("loras")) b.loras = loras;
    return b;
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

  // In-browser runs do not go through the server's queue: one batch at a time, shown on the same status bar.
  const generateInBrowser = async (base: number) => {
    const lm = local.model;
    if (!lm || lm.id !== model?.id) {
      notify("error", local.loading ? "The model is still loading into this browser; generate when it is ready." : local.error ?? "The model is not loaded in this browser.");
      return;
    }
    if (localAbort.current || following.current) {
      notify("error", "A run is going; in-browser runs do not queue. Wait for it or cancel it.");
      return;
    }
    const ctrl = new AbortController();
    localAbort.current = ctrl;
    const started = performance.now();
    let done = 0;
    let failed = "";
    for (let i = 0; i < batch && !ctrl.signal.aborted; i++) {
      const t = Date.now();
      setLive({ id: `local-${i}`, images: 1, stage: "denoise", step: 0, steps: 0, preview: null, status: "Running in this browser", startedAt: t, denoiseAt: t, typicalMs: null, cancelling: false });
      try {
        const job = await generateLocally(lm, buildBody(base + i, 1), ctrl.signal, (step, steps, preview) =>
          setLive((l) => l && { ...l, step, steps, preview: preview ?? l.preview }));
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
    setLive(null);
    localAbort.current = null;
    if (ctrl.signal.aborted) notify("info", `Cancelled: ${done} of ${batch} image${batch === 1 ? "" : "s"} made.`);
    else if (failed) notify("error", `Generation failed: ${failed}`);
    else notify("info", `Done in this browser: ${done} image${done === 1 ? "" : "s"} in ${secs} s.`);
  };

  const generate = async (e?: FormEvent) => {
    e?.preventDefault();
    setTriedSubmit(true);
    if (blocking.length || !model) {
      requestAnimationFrame(() => summaryRef.current?.focus());
      return;
    }
    setServerErrors({});
    // In the one-column layout the output is below the form: bring it into view.
    if (window.matchMedia("(max-width: 860px)").matches) document.getElementById("output-h")?.scrollIntoView({ block: "start" });
    const base = seedMode === "random" ? randomSeed() : Number(seedText);
    if (seedMode === "random") setSeedText(String(base));
    if (local.enabled) return generateInBrowser(base);
    // A local model makes a batch as one job (num_images; image i uses seed + i); a provider needs one job per image.
    const bodies = batch > 1 && takes("num_images") ? [buildBody(base, batch)] : Array.from({ length: batch }, (_, i) => buildBody(base + i, 1));
    // One job per image: the jobs share a batch id, so the gallery shows them as one card.
    const batchId = bodies.length > 1 ? newBatchId() : undefined;
    const waiting = queue.length;
    let added = 0;
    try {
      for (const b of bodies) {
        const { id } = await submit(model.id, b, batchId);
        added++;
        setQueue((q) => [...q, { id, model: model.id, prompt: promptSent, status: "Pending", images: Number(b.num_images ?? 1), batch: batchId }]);
      }
    } catch (err) {
      if (err instanceof ApiError && err.fields.length) {
        const fe: Record<string, string> = {};
        for (const f of err.fields) fe[f.field.replace(/^input_image_\d+$/, "input_image")] = f.msg;
        setServerErrors(fe);
        notify("error", `The server refused the request: ${err.message}`);
      } else {
        notify("error", `Could not start: ${(err as Error).message}`);
      }
    }
    if (added && seedMode === "increment") setSeedText(String(base + batch));
    if (added && waiting) notify("info", `Added to the queue (${waiting} ahead).`);
  };

  const waitFinal = async (id: string, signal: AbortSignal): Promise<Job | null> => {
    for (let delay = 150; !signal.aborted; delay = Math.min(1000, delay * 1.5)) {
      const j = await getResult(id);
      if (FINAL.has(j.status)) return j;
      // Polling (no event stream): show what get_result says of the progress.
      if (j.progress !== null) setLive((l) => l && { ...l, preview: j.preview ?? l.preview, status: j.status });
      await sleep(delay, signal);
    }
    return null;
  };

  const follow = useCallback(async (item: QueueItem) => {
    const ctrl = new AbortController();
    following.current = { id: item.id, ctrl };
    const typicalKey = `${item.model}`;
    setLive({ id: item.id, images: item.images, stage: null, step: 0, steps: 0, preview: null, status: item.status, startedAt: null, denoiseAt: null, typicalMs: typical.current.get(typicalKey) ?? null, cancelling: false });
    try {
      await followEvents(item.id, {
        progress: (p) => {
          progressEvents.current++;
          document.documentElement.dataset.progressEvents = String(progressEvents.current);
          const t = Date.now();
          setLive((l) => l && {
            ...l, status: "Running", startedAt: l.startedAt ?? t, stage: p.stage ?? "denoise",
            step: p.stage && p.stage !== "decode" ? 0 : p.step || l.step, steps: p.steps || l.steps,
            // The first step's timing starts when denoising starts (a server without stage events: at the first step).
            denoiseAt: p.stage === "denoise" ? t : l.denoiseAt ?? (!p.stage ? t : null),
            preview: p.preview ?? l.preview,
          });
        },
        status: (s) => setLive((l) => l && { ...l, status: s, startedAt: s === "Running" ? l.startedAt ?? Date.now() : l.startedAt }),
      }, ctrl.signal);
    } catch {
      // No event stream (or it broke): poll below.
    }
    let outcome: Job | null = null;
    try {
      if (!ctrl.signal.aborted) outcome = await waitFinal(item.id, ctrl.signal);
    } catch (err) {
      notify("error", `Lost track of a job: ${(err as Error).message}`);
    }
    if (outcome?.status === "Ready") {
      const full = await getJob(item.id).catch(() => outcome!);
      // /v1/jobs does not carry the batch id (the gallery does): the queue item knows it.
      const j: Job = { ...full, result: full.result ?? outcome.result, model: full.model || item.model, batch: full.batch ?? item.batch ?? null };
      if (j.startedAt && j.endedAt) typical.current.set(typicalKey, j.endedAt - j.startedAt);
      setShown(j);
      setJobs((js) => [j, ...js.filter((x) => x.id !== j.id)]);
      const n = j.result?.samples.length ?? 1;
      // For tests and scripts: how many jobs this page has seen finish.
      document.documentElement.dataset.jobsDone = String(Number(document.documentElement.dataset.jobsDone ?? 0) + 1);
      const secs = j.startedAt && j.endedAt ? ` in ${((j.endedAt - j.startedAt) / 1000).toFixed(1)} s` : "";
      notify("info", `Done: ${n} image${n === 1 ? "" : "s"}${secs}.`);
    } else if (outcome?.status === "Cancelled" || ctrl.signal.aborted) {
      notify("info", `Cancelled: ${item.prompt.slice(0, 60) || "the job"}.`);
    } else if (outcome) {
      document.documentElement.dataset.jobsDone = String(Number(document.documentElement.dataset.jobsDone ?? 0) + 1);
      notify("error", `Generation failed: ${outcome.status}${outcome.error ? `: ${outcome.error}` : ""}`);
    }
    following.current = null;
    setLive(null);
    setQueue((q) => q.filter((x) => x.id !== item.id));
  }, [notify]);

  useEffect(() => {
    const head = queue[0];
    if (head && !following.current) void follow(head);
  }, [queue, follow]);

  // The clock for elapsed time and the estimate.
  useEffect(() => {
    if (!live) return;
    const t = setInterval(() => setNow(Date.now()), 250);
    return () => clearInterval(t);
  }, [live]);

  const cancelItem = async (id: string) => {
    // In-browser runs (local-*) stop at their next step; the server has nothing to cancel.
    if (id.startsWith("local-")) {
      localAbort.current?.abort();
      setLive((l) => l && { ...l, cancelling: true });
      return;
    }
    if (following.current?.id === id) setLive((l) => l && { ...l, cancelling: true });
    else setQueue((q) => q.filter((x) => x.id !== id));
    try { await cancelJob(id); } catch (e) { notify("error", `Could not cancel: ${(e as Error).message}`); }
    // The head's event stream ends with the cancelled state; the follower then takes it off the queue.
  };

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      // Escape cancels the running job, unless it is meant for a text field or an open picker.
      const a = document.activeElement;
      const typing = a instanceof HTMLTextAreaElement || (a instanceof HTMLInputElement && !["button", "checkbox", "radio", "range"].includes(a.type)) || a instanceof HTMLSelectElement;
      if (e.key === "Escape" && !e.defaultPrevented && live && !live.cancelling && !typing) void cancelItem(live.id);
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

  const applyAddress = () => {
    try {
      setServerAddress(address);
      setAddressError(null);
      location.reload();
    } catch (e) {
      setAddressError((e as Error).message);
    }
  };

  const changeFilter = (f: GalleryFilter) => { setFilter(f); };

  const nextTheme: Record<Theme, Theme> = { system: "light", light: "dark", dark: "system" };
  const invalid = blocking.length > 0;
  const galleryJobs = groupBatches(jobs.filter((j) => !ACTIVE.has(j.status) && !queue.some((q) => q.id === j.id)));

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
            limits={limits} size={size} errors={sizeErrors}
            locked={locked && { width: locked.width, height: locked.height, why: locked.why }} />
          <SeedControls seedMode={seedMode} onSeedMode={setSeedMode} seedText={seedText} onSeedText={setSeedText} seedError={seedError}
            steps={model?.limits.steps && takes("steps") ? { range: model.limits.steps, value: steps, onChange: setSteps } : null}
            guidance={model?.limits.guidance && takes("guidance") ? { range: model.limits.guidance, value: guidance, onChange: setGuidance } : null}
            batch={batch} onBatch={setBatch} maxBatch={MAX_BATCH} variant={model?.variant ?? ""} />
          {(takes("loras") || loras.length > 0) && <LoraPicker list={loraList} error={loraError} value={loras} onChange={setLoras} />}

          <div className="submit-bar">
            {/* Notices sit just above the sticky bar, where the user is looking, without covering it. */}
            <Toasts toasts={toasts} onClose={(id) => setToasts((t) => t.filter((x) => x.id !== id))} />
            {live && <StatusBar live={live} now={now} queued={Math.max(0, queue.length - 1)} onCancel={() => void cancelItem(live.id)} />}
            <div ref={summaryRef} tabIndex={-1} className="summary" data-testid="submit-errors" aria-live="polite">
              {triedSubmit && invalid && (
                <div className="error" role="alert">
                  <strong>Fix before generating:</strong>
                  <ul>{blocking.map((b, i) => <li key={i}><a href={`#${b.field}`}>{b.msg}</a></li>)}</ul>
                </div>
              )}
            </div>
            <button type="submit" className="primary" aria-disabled={invalid}
              data-testid="generate" title={invalid ? blocking[0].msg : "Generate (Enter)"}>
              {queue.length ? "Add to queue" : batch > 1 ? `Generate ${batch}` : "Generate"}
            </button>
          </div>

          <LocalRun state={local} onToggle={(on) => { store(LOCAL_KEY, on ? "1" : "0"); setLocal((l) => ({ ...l, enabled: on, error: null })); }}
            onDevice={(d) => setLocal((l) => ({ ...l, device: d, error: null }))} />
          <details className="panel settings">
            <summary>Server</summary>
            <label htmlFor="server-address">Server address (empty: the server this page came from)</label>
            <div className="row">
              <input id="server-address" type="url" placeholder="https://flux.example.com" value={address} onChange={(e) => setAddress(e.target.value)} />
              <button type="button" onClick={applyAddress}>Use</button>
            </div>
            {addressError && <p className="error" role="alert">{addressError}</p>}
            <p className="hint">Another origin must allow this page: start it with <code>--cors {location.origin}</code>.</p>
            <label htmlFor="api-key">API key (x-key; not needed on 127.0.0.1)</label>
            <input id="api-key" type="password" autoComplete="off" value={key} onChange={(e) => { setKey(e.target.value); setApiKey(e.target.value); }} />
          </details>
        </form>
        <div className="results">
          <QueuePanel items={queue.map((q) => (q.id === live?.id ? { ...q, status: live.status } : q))} onCancel={(id) => void cancelItem(id)} />
          <Output live={live} shown={shown} message={message} />
          <Gallery jobs={galleryJobs} loading={jobsLoading} error={jobsError} hasMore={!!nextBefore} onMore={() => void moreJobs()}
            onRefresh={() => void refreshJobs()} onShow={setShown} onReference={(j) => void useAsReference(j)}
            onReuse={(j) => void reuseJob(j)} onReuseSeed={reuseSeed} onSettingsFile={(f) => void loadSettingsFile(f)}
            onHide={(j, h) => void hide(j, h)} onDelete={(j) => void remove(j)}
            filter={filter} onFilter={changeFilter} models={models.map((m) => m.id)} />
        </div>
      </main>
    </>
  );
}
