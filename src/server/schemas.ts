// Response shapes as zod schemas: the single source for the OpenAPI document
// (request bodies come from src/api/request.ts).

import { z } from "zod";

export const SubmitResponse = z.object({
  id: z.string().describe("task id"),
  polling_url: z.string().describe("GET this URL (get_result) until status is no longer Pending"),
});

export const Status = z.enum(["Task not found", "Pending", "Request Moderated", "Content Moderated", "Ready", "Error"]);
export const State = z.enum(["queued", "running", "ready", "error", "cancelled", "request_moderated", "content_moderated"])
  .describe("the finer state behind `status` (a cancelled task reads as Error)");

export const ResultSample = z.object({
  sample: z.string().describe("URL of the image on this server (content-addressed, does not expire)"),
  samples: z.array(z.string()).describe("every image (num_images > 1)"),
  prompt: z.string(),
  seed: z.number().int().optional().describe("the seed used"),
  start_time: z.number().optional().describe("epoch seconds"),
  end_time: z.number().optional().describe("epoch seconds"),
  duration: z.number().describe("seconds"),
  width: z.number().int().describe("the size made (from aspect_ratio when width and height were not given)"),
  height: z.number().int(),
  steps: z.number().int().nullable(),
  guidance: z.number().nullable(),
});

export const ResultResponse = z.object({
  id: z.string(),
  status: Status,
  result: ResultSample.nullable(),
  progress: z.number().min(0).max(1).nullable(),
  details: z.record(z.string(), z.unknown()).nullable(),
  flux2: z.object({
    state: State,
    preview: z.string().nullable().describe("PNG data URL of the current estimate while running"),
  }).optional().describe("flux2.ts extensions (absent for Task not found); BFL's own fields keep BFL's meanings"),
});

export const FieldErrorSchema = z.object({ loc: z.array(z.union([z.string(), z.number()])), msg: z.string(), type: z.string() });
export const ValidationError = z.object({ detail: z.array(FieldErrorSchema) });
export const ErrorResponse = z.object({ detail: z.string() });

export const JobView = z.object({
  id: z.string(),
  model: z.string(),
  status: Status,
  state: State,
  attempts: z.number().int().describe("runs started (a run interrupted by a crash is retried once)"),
  created_at: z.number().nullable(),
  started_at: z.number().nullable(),
  ended_at: z.number().nullable(),
  request: z.record(z.string(), z.unknown()).describe("the parameters; input images as URLs, webhook_secret hidden"),
  result: ResultSample.nullable(),
  progress: z.number().nullable(),
  details: z.record(z.string(), z.unknown()).nullable(),
});

export const JobList = z.object({
  jobs: z.array(JobView),
  next_before: z.string().nullable().describe("pass as ?before= for the next (older) page"),
});

const Range = z.object({ min: z.number(), max: z.number(), default: z.number() });
export const ModelInfo = z.object({
  id: z.string(),
  kind: z.enum(["local", "provider"]),
  variant: z.string(),
  available: z.boolean(),
  runs: z.string(),
  limits: z.object({
    multiple_of: z.number().int(), min_side: z.number().int(), max_pixels: z.number().int(), max_references: z.number().int(),
    recommended_references: z.number().int(), steps: Range.nullable(), guidance: Range.nullable(),
  }),
  fields: z.array(z.string()).describe("request fields this model accepts"),
  defaults: z.object({ steps: z.number().nullable(), guidance: z.number().nullable(), width: z.number(), height: z.number() }),
  prompt_upsampling: z.object({ available: z.boolean(), reason: z.string().nullable().describe("why `prompt_upsampling: true` is refused (422)") })
    .nullable().describe("flux2.ts extension, local checkpoints read by this server: whether the text encoder can rewrite prompts; null where this server cannot tell (BFL's hosted models, worker-advertised ones)"),
});
export const ModerationInfo = z.object({
  configured: z.boolean().describe("false: prompts and images are not checked (flux2 serve --moderation CONFIG)"),
  prompt_lists: z.boolean(),
  image_classifier: z.object({ label: z.string(), inputs: z.boolean(), outputs: z.boolean(), thresholds: z.array(z.number()).describe("by safety_tolerance 0..6") }).nullable(),
  llm_check: z.object({ system: z.string(), prompt: z.string(), yes: z.string(), no: z.string() }).nullable()
    .describe("the yes/no prompt check with the text encoder: its exact texts ({prompt} is the prompt checked)"),
  default_safety_tolerance: z.number().int(),
  min_safety_tolerance: z.number().int().describe("lower values are refused with 422 (nothing would honour them)"),
  description: z.string(),
}).describe("flux2.ts extension: moderation of local models (BFL's hosted models moderate on BFL's side)");
export const ModelList = z.object({ models: z.array(ModelInfo), moderation: ModerationInfo });

// --- the studio's routes (src/server/studio_routes.ts, files.ts) ---
export const LoraInfo = z.object({
  name: z.string().describe("the file name without .safetensors: what a request's loras[].name takes"),
  size: z.number().int().describe("bytes"),
  format: z.string().describe("the layout the loader recognised (kohya, diffusers, …), or unreadable"),
  rank: z.number().int().nullable().describe("largest rank of its low-rank parts; null when every part is a dense delta"),
  weights: z.number().int().describe("how many transformer weights it changes"),
  targets: z.array(z.string()).describe("the module kinds it changes (attn.to_q, ff.linear_in, …)"),
  error: z.string().optional().describe("why the file cannot be used"),
});
export const LoraList = z.object({
  lora_dir: z.boolean().describe("whether the server has a LoRA folder (flux2 serve --lora-dir)"),
  max_loras: z.number().int(),
  strength: Range,
  loras: z.array(LoraInfo),
});
export const GalleryJob = JobView.extend({
  hidden: z.boolean(),
  batch: z.string().nullable().describe("the x-flux2-batch id the job was submitted with: jobs sharing it are one batch"),
});
export const GalleryList = z.object({ jobs: z.array(GalleryJob), next_before: z.string().nullable() });
export const HideResponse = z.object({ id: z.string(), hidden: z.boolean() });
export const DeleteResponse = z.object({ id: z.string(), deleted: z.literal(true), files_removed: z.number().int(), files_kept: z.number().int() });
export const ModelFiles = z.object({ model: z.string(), files: z.array(z.object({ path: z.string(), size: z.number().int(), version: z.string() })) });
