// flux2 storyboard: a brief, named references and a shot list → one panel per
// shot (consistent references and seeds), a contact sheet (PNG and PDF) and a
// folder of frames with a manifest a video tool takes. `--shot ID` re-makes
// only those shots; the other frames are left as they are on disk.

import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { OrtBackend } from "../backend/ort.js";
import type { Device } from "../backend/backend.js";
import { loadPipeline } from "../loaders/pretrained.js";
import { InvalidRequestError } from "../util/errors.js";
import { GUIDANCE_RANGE, STEPS_RANGE } from "../pipeline/variants.js";
import { decodeImage } from "../pipeline/image.js";
import { modelDefaults } from "../pipeline/model_defaults.js";
import { latentMultiple } from "../pipeline/checkpoint.js";
import { MAX_REFERENCES } from "../pipeline/reference.js";
import { sizeRuleFor } from "../pipeline/variants.js";
import { checkRequest, prepareGeneration } from "../api/prepare.js";
import { encodeOutputs, imageRecord } from "../api/output.js";
import { parseStoryboard, planShots, shotRequest, StoryboardError, type ShotPlan, type StoryboardSpec } from "../storyboard/board.js";
import { writeShotList } from "../storyboard/write_shots.js";
import { frameName, writeExport, type Panel } from "../storyboard/sheet.js";
import { checkModelFields, intOption, logger, numOption, openModel, parseCliRequest, parseLoraArg } from "./common.js";

const HELP = `usage: flux2 storyboard --board FILE --out DIR [options]
       flux2 storyboard --brief TEXT --write-shots N [--board FILE] --out DIR [options]

Generates one panel per shot of a storyboard, with the named references each
shot mentions as FLUX.2 reference images and one seed, then writes
  DIR/frames/NN-ID.png        the panels
  DIR/manifest.json           board, frames, prompts, seeds (flux2-storyboard/1)
  DIR/frames.ffconcat         ffmpeg concat list (ffmpeg -f concat -i frames.ffconcat out.mp4)
  DIR/contact_sheet.png, DIR/contact_sheet.pdf
  DIR/board.json              the board as run (for --shot re-runs)

Board (--board FILE): JSON ({title, brief, style, references: [{name, kind,
image, description}], shots: [{id, prompt, references, seed}], width, height,
seed, steps, guidance}) or text:
  Title: The harbour job
  Brief: Two thieves meet at dawn.
  Style: muted film still
  Size: 512x320
  @Mara (character): refs/mara.png — a tall woman in a red coat
  @Harbour (place): refs/harbour.jpg
  1. Mara waits on the Harbour wall.
  2. [seed 9] Close-up of Mara's hands.
Reference kinds: character, costume, place, prop, style (style goes to every
shot). Image paths are relative to the board file. A shot gets the references
whose names it contains, or those it lists in "references".

Options:
  --board FILE            the storyboard (JSON or text); "-" reads standard input
  --out DIR               export folder (required)
  --shot ID               re-generate only this shot (repeatable); the other
                          frames in DIR are kept byte for byte
  --brief TEXT            with --write-shots N: the text encoder's LLM writes N
                          shots from the brief (added to the board's references
                          and settings, if --board is given too)
  --write-shots N         how many shots to have written (1-24)
  --model PATH            FLUX.2 checkpoint folder (default: the bundled model)
  --width N, --height N   panel size (default: the board's, else the model's)
  --steps N, --guidance G, --seed S   override the board's
  --lora FILE[:STRENGTH]  apply a LoRA to every panel (repeatable)
  --frame-seconds S       how long each frame is held in the concat list (default 2)
  --device D              cpu (default) | webgpu | cuda
  --no-watermark          no invisible watermark on the panels
  --json                  print the manifest as JSON at the end
  --quiet                 no progress output
  -h, --help              this text`;

const OPTIONS = {
  board: { type: "string" }, out: { type: "string" }, shot: { type: "string", multiple: true }, brief: { type: "string" },
  "write-shots": { type: "string" }, model: { type: "string" }, width: { type: "string" }, height: { type: "string" },
  steps: { type: "string" }, guidance: { type: "string" }, seed: { type: "string" }, lora: { type: "string", multiple: true },
  "frame-seconds": { type: "string" }, device: { type: "string" }, "no-watermark": { type: "boolean" }, json: { type: "boolean" },
  quiet: { type: "boolean" }, help: { type: "boolean", short: "h" },
} as const;

function readBoard(file: string): { board: StoryboardSpec; base: string } {
  const text = file === "-" ? fs.readFileSync(0, "utf8") : fs.readFileSync(file, "utf8");
  return { board: parseStoryboard(text), base: file === "-" ? process.cwd() : path.dirname(path.resolve(file)) };
}

export async function runStoryboardCommand(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: false });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  if (!v.out) throw new InvalidRequestError("--out DIR is required (the export folder); see --help");
  if (!v.board && !v["write-shots"]) throw new InvalidRequestError("give --board FILE, or --brief TEXT with --write-shots N; see --help");
  if (!!v.brief !== !!v["write-shots"]) throw new InvalidRequestError("--brief and --write-shots go together: the LLM writes N shots from the brief");
  const log = logger(v.quiet);
  const out = v.out;
  const ck = openModel({ model: v.model, quiet: v.quiet });
  const backend = new OrtBackend({ device: (v.device ?? "cpu") as Device });

  let board: StoryboardSpec;
  let base = process.cwd();
  try {
    if (v.board) ({ board, base } = readBoard(v.board));
    else board = { references: [], shots: [{ prompt: "placeholder" }], seed: 0 };
    if (v["write-shots"]) {
      const n = intOption(v["write-shots"], "write-shots", 1, 24)!;
      log(`writing ${n} shots from the brief with the text encoder's LLM...`);
      const shots = await writeShotList(ck, v.brief!, n, { backend, seed: board.seed, referenceNames: board.references.map((r) => r.name) });
      board = { ...board, brief: v.brief, shots: shots.map((prompt) => ({ prompt })) };
      for (const [i, s] of shots.entries()) log(`  ${i + 1}. ${s}`);
    }
  } catch (e) {
    if (e instanceof StoryboardError) throw new InvalidRequestError(e.message);
    throw e;
  }
  const d = modelDefaults(ck);
  board = {
    ...board,
    width: intOption(v.width, "width", 64, 2048) ?? board.width ?? d.width,
    height: intOption(v.height, "height", 64, 2048) ?? board.height ?? d.height,
    steps: intOption(v.steps, "steps", STEPS_RANGE.min, STEPS_RANGE.max) ?? board.steps,
    guidance: numOption(v.guidance, "guidance", GUIDANCE_RANGE.min, GUIDANCE_RANGE.max) ?? board.guidance,
    seed: intOption(v.seed, "seed", 0, Number.MAX_SAFE_INTEGER) ?? board.seed,
  };
  let plans: ShotPlan[];
  try {
    plans = planShots(board, MAX_REFERENCES);
  } catch (e) {
    if (e instanceof StoryboardError) throw new InvalidRequestError(e.message);
    throw e;
  }

  // Which shots to make: all, or the --shot ones (the others must already be in DIR).
  const only = v.shot ?? [];
  for (const id of only) if (!plans.some((p) => p.id === id)) throw new InvalidRequestError(`--shot ${id}: the board has no such shot (it has ${plans.map((p) => p.id).join(", ")})`);
  const kept = new Map<string, Panel>();
  if (only.length) {
    const manifestFile = path.join(out, "manifest.json");
    if (!fs.existsSync(manifestFile)) throw new InvalidRequestError(`--shot re-makes shots of an existing export, but ${manifestFile} does not exist: run the whole board first`);
    const m = JSON.parse(fs.readFileSync(manifestFile, "utf8")) as { frames: Panel[] & { file: string }[] };
    for (const f of m.frames as unknown as (Omit<Panel, "png"> & { file: string })[]) {
      const plan = plans.find((p) => p.id === f.id);
      if (!plan || only.includes(f.id)) continue;
      if (plan.index !== f.index) throw new InvalidRequestError(`shot ${f.id} moved from position ${f.index + 1} to ${plan.index + 1} since the export: run the whole board again`);
      kept.set(f.id, { ...f, png: fs.readFileSync(path.join(out, f.file)) });
    }
    const missing = plans.filter((p) => !only.includes(p.id) && !kept.has(p.id));
    if (missing.length) throw new InvalidRequestError(`the export in ${out} lacks shot(s) ${missing.map((p) => p.id).join(", ")}: run them too (--shot) or the whole board`);
  }

  // References: each file checked (it exists and decodes) before the model loads; each shot's
  // request reads and prepares its own through the request layer, as the server's jobs do.
  const refFiles = new Map<string, string>();
  for (const r of board.references) {
    const file = path.resolve(base, r.image);
    if (!fs.existsSync(file)) throw new InvalidRequestError(`reference ${r.name}: image ${file} does not exist (paths are relative to the board file)`);
    await decodeImage(file);
    refFiles.set(r.name, file);
  }
  const requests = plans.map((plan) => parseCliRequest(shotRequest(board, plan, (n) => refFiles.get(n))));
  for (const r of requests) {
    checkModelFields(r, ck);
    checkRequest(r, sizeRuleFor(latentMultiple(ck)), d);
  }
  const loras = (v.lora ?? []).map(parseLoraArg);
  const pipe = loadPipeline(ck.source, { backend, keepLoaded: true, loras });
  const panels: Panel[] = [];
  const started = Date.now();
  try {
    for (const plan of plans) {
      const old = kept.get(plan.id);
      if (old) {
        panels.push(old);
        continue;
      }
      const t0 = Date.now();
      const request = requests[plans.indexOf(plan)];
      const prepared = await prepareGeneration(request, { defaults: d, latentMultiple: latentMultiple(ck), readInput: (file) => file });
      const r = await pipe.generate(prepared.options);
      const img = r.images[0];
      const [{ bytes }] = await encodeOutputs(r, "png", (i) => imageRecord(r, i, request, prepared, {
        model: path.basename(path.resolve(ck.source)), variant: ck.variant, loras: loras.map((l) => ({ name: l.name ?? path.basename(l.file), strength: l.strength })),
      }), { watermark: !v["no-watermark"] });
      panels.push({ index: plan.index, id: plan.id, text: plan.text, prompt: plan.prompt, references: plan.references, seed: plan.seed, width: img.width, height: img.height, png: bytes });
      log(`panel ${plan.index + 1}/${plans.length} ${plan.id} (${plan.references.length} reference(s), seed ${plan.seed}) in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
  } finally {
    await pipe.release();
  }
  const frameSeconds = numOption(v["frame-seconds"], "frame-seconds", 0.04, 3600);
  const info = { title: board.title, brief: board.brief, model: path.basename(path.resolve(ck.source)), frameSeconds };
  await writeExport(out, panels, info);
  // The board as run (references as absolute paths), so --shot re-runs need no other file.
  const asRun = { ...board, references: board.references.map((r) => ({ ...r, image: path.resolve(base, r.image) })) };
  fs.writeFileSync(path.join(out, "board.json"), JSON.stringify(asRun, null, 2) + "\n");
  log(`${only.length ? `re-made ${only.join(", ")}; ` : ""}${panels.length} panels in ${((Date.now() - started) / 1000).toFixed(1)} s → ${path.join(out, "contact_sheet.png")}, contact_sheet.pdf, manifest.json, ${path.dirname(frameName(panels[0]))}/`);
  if (v.json) console.log(JSON.stringify(JSON.parse(fs.readFileSync(path.join(out, "manifest.json"), "utf8"))));
  return 0;
}
