// The OpenAPI 3 document served at /openapi.json, generated from the zod
// schemas with z.toJSONSchema: one POST path per model (as BFL's own document
// has), each with a body schema holding only the fields that model accepts.

import { z } from "zod";
import { GenerationRequest } from "../api/request.js";
import type { ModelRegistry } from "./models.js";
import { FinetuneRequest } from "./finetune.js";
import { StoryboardRequest } from "./storyboard.js";
import * as S from "./schemas.js";

const json = (schema: z.ZodType) => z.toJSONSchema(schema, { target: "openapi-3.0", io: "output", unrepresentable: "any" });
const input = (schema: z.ZodType) => z.toJSONSchema(schema, { target: "openapi-3.0", io: "input", unrepresentable: "any" });
const content = (schema: z.ZodType) => ({ "application/json": { schema: json(schema) } });

const errors = {
  "401": { description: "missing API key", content: content(S.ErrorResponse) },
  "403": { description: "invalid or revoked API key", content: content(S.ErrorResponse) },
};

export function buildOpenApi(registry: ModelRegistry, version: string) {
  const paths: Record<string, unknown> = {};
  for (const m of registry.list()) {
    const keys = Object.fromEntries(m.caps.fields.map((f) => [f, true])) as Record<keyof GenerationRequest, true>;
    paths[`/v1/${m.id}`] = {
      post: {
        summary: `Generate with ${m.id} (${m.kind === "provider" ? "Black Forest Labs API" : `local ${m.variant}`})`,
        security: [{ xKey: [] }],
        parameters: [{
          name: "Idempotency-Key", in: "header", required: false, schema: { type: "string", minLength: 1, maxLength: 255 },
          description: "the same key (per API key) within 24 hours returns the first task instead of starting another; reused with a different body: 422",
        }, {
          name: "x-flux2-batch", in: "header", required: false, schema: { type: "string", pattern: "^[A-Za-z0-9_-]{1,64}$" },
          description: "flux2.ts extension: one id for every task of a batch (a provider model makes one image per task); GET /v1/gallery reports it as `batch`, and the studio shows the batch as one card",
        }],
        requestBody: { required: true, content: { "application/json": { schema: input(GenerationRequest.pick(keys).strict()) } } },
        responses: {
          "200": { description: "queued", content: content(S.SubmitResponse) },
          "400": { description: "more than one Idempotency-Key, or a malformed x-flux2-batch", content: content(S.ErrorResponse) },
          "404": { description: "unknown model", content: content(S.ErrorResponse) },
          "413": { description: "body too large", content: content(S.ErrorResponse) },
          "422": { description: "invalid request (fields named in loc)", content: content(S.ValidationError) },
          "429": { description: "too many active tasks for this key, or the queue is full", content: content(S.ErrorResponse) },
          ...errors,
        },
      },
    };
  }
  const idParam = [{ name: "id", in: "path", required: true, schema: { type: "string" } }];
  Object.assign(paths, {
    "/v1/get_result": {
      get: {
        summary: "Poll a task (BFL-compatible)", security: [{ xKey: [] }],
        parameters: [{ name: "id", in: "query", required: true, schema: { type: "string" } }],
        responses: { "200": { description: "the task's state (status Task not found for unknown ids)", content: content(S.ResultResponse) }, ...errors },
      },
    },
    "/v1/jobs": {
      get: {
        summary: "Past and current tasks, newest first", security: [{ xKey: [] }],
        parameters: [
          { name: "limit", in: "query", schema: { type: "integer", minimum: 1, maximum: 200, default: 20 } },
          { name: "before", in: "query", schema: { type: "string" }, description: "a task id: list older tasks" },
        ],
        responses: { "200": { description: "tasks", content: content(S.JobList) }, ...errors },
      },
    },
    "/v1/jobs/{id}": {
      get: { summary: "One task with its parameters", security: [{ xKey: [] }], parameters: idParam, responses: { "200": { description: "the task", content: content(S.JobView) }, "404": { description: "not found", content: content(S.ErrorResponse) } } },
      delete: {
        summary: "Cancel: a queued task never runs, a running one stops at its next check (decode, resize, each stage and step)", security: [{ xKey: [] }], parameters: idParam,
        responses: { "200": { description: "cancelled", content: content(S.JobView) }, "404": { description: "not found", content: content(S.ErrorResponse) }, "409": { description: "already ended", content: content(S.ErrorResponse) } },
      },
    },
    "/v1/jobs/{id}/events": {
      get: {
        summary: "Server-sent events: progress (step, steps, fraction, preview), status, done", security: [{ xKey: [] }], parameters: idParam,
        responses: { "200": { description: "text/event-stream", content: { "text/event-stream": { schema: { type: "string" } } } } },
      },
    },
    "/v1/models": { get: { summary: "Models with variant, limits and defaults", responses: { "200": { description: "models", content: content(S.ModelList) } } } },
    "/v1/images/{name}": {
      get: { summary: "A stored image (<sha256>.<ext>); immutable", parameters: [{ name: "name", in: "path", required: true, schema: { type: "string" } }], responses: { "200": { description: "the image" }, "404": { description: "not found" } } },
    },
  });
  Object.assign(paths, storyboardAndFinetunePaths(idParam));
  Object.assign(paths, studioPaths(idParam));
  return {
    openapi: "3.0.3",
    info: { title: "flux2.ts API", version, description: "A superset of Black Forest Labs' FLUX API, served by flux2.ts. See docs/server.md." },
    components: { securitySchemes: { xKey: { type: "apiKey", in: "header", name: "x-key" } } },
    paths,
  };
}

/** Storyboards (src/server/storyboard.ts) and fine-tuning jobs (src/server/finetune.ts). */
function storyboardAndFinetunePaths(idParam: unknown[]) {
  const security = [{ xKey: [] }];
  const body = (schema: z.ZodType) => ({ required: true, content: { "application/json": { schema: input(schema) } } });
  const ok = (description: string) => ({ "200": { description }, "404": { description: "not found", content: content(S.ErrorResponse) }, ...errors });
  const shotParam = [...idParam, { name: "shot", in: "path", required: true, schema: { type: "string" } }];
  const exportGet = (what: string) => ({ get: { summary: what, security, parameters: idParam, responses: { ...ok(what), "409": { description: "not every panel is ready", content: content(S.ErrorResponse) } } } });
  return {
    "/v1/storyboard": { post: { summary: "A storyboard: one generation task per shot, with the named references each shot mentions", security, requestBody: body(StoryboardRequest),
      responses: { "200": { description: "the storyboard with its shots' task ids" }, "422": { description: "invalid board (fields named in loc)", content: content(S.ValidationError) }, ...errors } } },
    "/v1/storyboard/{id}": { get: { summary: "The storyboard: each shot's status and image, and the exports once every panel is ready", security, parameters: idParam, responses: ok("the storyboard") } },
    "/v1/storyboard/{id}/shots/{shot}": { post: { summary: "Re-make one shot (optional new seed or prompt); the other panels keep their images", security, parameters: shotParam, responses: ok("the storyboard") } },
    "/v1/storyboard/{id}/contact_sheet.png": exportGet("The contact sheet as PNG"),
    "/v1/storyboard/{id}/contact_sheet.pdf": exportGet("The contact sheet as PDF"),
    "/v1/storyboard/{id}/manifest.json": exportGet("The frames manifest (flux2-storyboard/1) with each frame's URL"),
    "/v1/storyboard/{id}/frames.ffconcat": exportGet("An ffmpeg concat list of the frames"),
    "/v1/finetune": { post: { summary: "Fine-tune a LoRA on captioned images as a queued task (poll with get_result or GET /v1/finetune/{id})", security, requestBody: body(FinetuneRequest),
      responses: { "200": { description: "id, polling_url, status_url" }, "409": { description: "the LoRA name is taken", content: content(S.ErrorResponse) }, "422": { description: "invalid request", content: content(S.ValidationError) }, ...errors } } },
    "/v1/finetune/{id}": { get: { summary: "Training progress: step, losses, ETA, sample images, loss curve, the LoRA when done", security, parameters: idParam, responses: ok("the fine-tuning task") } },
    "/v1/finetune/{id}/loss.png": { get: { summary: "The loss curve as the trainer last drew it", security, parameters: idParam, responses: ok("image/png") } },
  };
}

/** The studio's routes (src/server/studio_routes.ts), model files for in-browser runs (files.ts), the studio itself (static.ts), health and this document. */
function studioPaths(idParam: unknown[]) {
  const security = [{ xKey: [] }];
  const notFound = { "404": { description: "not found", content: content(S.ErrorResponse) } };
  const q = (name: string, schema: Record<string, unknown>, description: string) => ({ name, in: "query", required: false, schema, description });
  const pathParam = (name: string, description: string) => ({ name, in: "path", required: true, schema: { type: "string" }, description });
  const file = (what: string) => ({ "200": { description: what, content: { "application/octet-stream": { schema: { type: "string", format: "binary" } } } }, ...notFound });
  return {
    "/health": {
      get: {
        summary: "Whether the data folder takes writes (503 with retry-after when it does not) and which queue runs jobs",
        responses: { "200": { description: "{status: ok, queue, free_bytes}" }, "503": { description: "{status: unhealthy, queue, detail, free_bytes}" } },
      },
    },
    "/openapi.json": { get: { summary: "This document", responses: { "200": { description: "OpenAPI 3.0" } } } },
    "/v1/loras": {
      get: { summary: "The LoRA folder's files (flux2 serve --lora-dir), each read with the loader a job uses: format, rank, weights, targets, size", security, responses: { "200": { description: "LoRAs", content: content(S.LoraList) }, ...errors } },
    },
    "/v1/gallery": {
      get: {
        summary: "Tasks for the studio's gallery, newest first, with the hidden flag and batch id", security,
        parameters: [
          q("limit", { type: "integer", minimum: 1, maximum: 200, default: 30 }, "page size"),
          q("before", { type: "string" }, "a task id: list older tasks"),
          q("model", { type: "string" }, "only this model's tasks"),
          q("q", { type: "string", maxLength: 500 }, "words that must all be in the prompt (case-insensitive)"),
          q("since", { type: "string" }, "made at or after: ISO 8601 date or time, or epoch milliseconds"),
          q("until", { type: "string" }, "made before (exclusive): ISO 8601 date or time, or epoch milliseconds"),
          q("hidden", { type: "string", enum: ["exclude", "include", "only"], default: "exclude" }, "hidden tasks left out, included, or alone"),
        ],
        responses: { "200": { description: "tasks", content: content(S.GalleryList) }, "422": { description: "invalid query", content: content(S.ValidationError) }, ...errors },
      },
    },
    "/v1/gallery/{id}/hide": {
      post: {
        summary: "Hide a task from the default gallery view ({hidden: true}, the default) or show it again ({hidden: false})", security, parameters: idParam,
        requestBody: { required: false, content: { "application/json": { schema: { type: "object", properties: { hidden: { type: "boolean", default: true } } } } } },
        responses: { "200": { description: "the new state", content: content(S.HideResponse) }, "422": { description: "hidden is not a boolean", content: content(S.ValidationError) }, ...notFound, ...errors },
      },
    },
    "/v1/gallery/{id}": {
      delete: {
        summary: "Delete a finished task and the image files (its inputs and outputs) no other task uses", security, parameters: idParam,
        responses: { "200": { description: "deleted", content: content(S.DeleteResponse) }, "409": { description: "queued or running: cancel it first", content: content(S.ErrorResponse) }, ...notFound, ...errors },
      },
    },
    "/v1/files/{model}/files.json": {
      get: { summary: "A local model's files (path, size, version) for running it in the browser", security, parameters: [pathParam("model", "a local model id")], responses: { "200": { description: "the files", content: content(S.ModelFiles) }, ...notFound, ...errors } },
    },
    "/v1/files/{model}/{path}": {
      get: {
        summary: "One file of a local model; takes a Range header (206) and If-None-Match (304)", security,
        parameters: [pathParam("model", "a local model id"), pathParam("path", "the file's path in files.json; may contain /")],
        responses: { ...file("the file"), "206": { description: "the requested range" }, "416": { description: "range not satisfiable" }, ...errors },
      },
    },
    "/browser/{path}": { get: { summary: "flux2's browser bundle (dist/browser/), used by the studio's Run in this browser", parameters: [pathParam("path", "file in the bundle; may contain /")], responses: file("the file") } },
    "/": { get: { summary: "The studio (dist/studio/index.html); 404 when it is not built", responses: { "200": { description: "text/html" }, ...notFound } } },
    "/{path}": { get: { summary: "The studio's files (dist/studio/)", parameters: [pathParam("path", "file under dist/studio/; may contain /")], responses: file("the file") } },
  };
}
