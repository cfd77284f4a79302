// A fake of Black Forest Labs' API on 127.0.0.1 (random port), behaving as
// BFL's documentation describes, for the provider contract tests:
//
//   POST /v1/<model>        x-key required: 401 {detail} if missing or wrong;
//                           429 {detail} when the key already has `maxActive`
//                           tasks that are not finished (or `rejectNext` > 0);
//                           else {id, polling_url}
//   GET  /v1/get_result?id= {id, status, result, progress, details}: Pending for
//                           `pendingPolls` polls (progress rising), then Ready with
//                           result {sample, seed, prompt, start_time, end_time,
//                           duration}; "Task not found" for unknown ids. Prompts
//                           containing [request-moderated] / [content-moderated] /
//                           [error] end in Request Moderated / Content Moderated / Error.
//   GET  /delivery/<id>.png signed sample URL; 403 after `sampleTtlMs` (BFL's expire
//                           after 10 minutes)
//
// Every request is logged in `requests`, submitted bodies in `submitted`.

import * as http from "node:http";
import { randomUUID } from "node:crypto";
import type { AddressInfo } from "node:net";
import sharp from "sharp";

interface Task {
  id: string;
  model: string;
  body: Record<string, any>;
  polls: number;
  readyAt?: number;
  finished: boolean;
  png?: Buffer;
}

export class FakeBfl {
  apiKey = "bfl-test-key";
  maxActive = 24;
  pendingPolls = 2;
  rejectNext = 0;
  sampleTtlMs = 10 * 60 * 1000;
  requests: { method: string; url: string; key: string | null }[] = [];
  submitted: { model: string; body: Record<string, any> }[] = [];
  tasks = new Map<string, Task>();
  private server = http.createServer((req, res) => void this.handle(req, res));
  url = "";

  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  private send(res: http.ServerResponse, status: number, body: unknown): void {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  }

  private active(): number {
    return [...this.tasks.values()].filter((t) => !t.finished).length;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.url);
    const key = (req.headers["x-key"] as string | undefined) ?? null;
    this.requests.push({ method: req.method ?? "", url: url.pathname + url.search, key });
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (url.pathname.startsWith("/delivery/")) return this.delivery(url, res);
    if (key !== this.apiKey) return this.send(res, 401, { detail: "Not authenticated - Invalid Authentication" });
    if (req.method === "POST" && /^\/v1\/[\w.-]+$/.test(url.pathname)) return this.submit(url.pathname.slice(4), chunks, res);
    if (req.method === "GET" && url.pathname === "/v1/get_result") return this.result(url.searchParams.get("id") ?? "", res);
    this.send(res, 404, { detail: "Not Found" });
  }

  private submit(model: string, chunks: Buffer[], res: http.ServerResponse): void {
    if (this.rejectNext > 0) {
      this.rejectNext--;
      return this.send(res, 429, { detail: "You have exceeded the number of active tasks. Please wait for some tasks to finish." });
    }
    if (this.active() >= this.maxActive) return this.send(res, 429, { detail: `Too many active tasks (limit ${this.maxActive})` });
    let body: Record<string, any>;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString());
    } catch {
      return this.send(res, 422, { detail: [{ loc: ["body"], msg: "JSON decode error", type: "json_invalid" }] });
    }
    if (typeof body.prompt !== "string") return this.send(res, 422, { detail: [{ loc: ["body", "prompt"], msg: "Field required", type: "missing" }] });
    const id = randomUUID();
    this.tasks.set(id, { id, model, body, polls: 0, finished: false });
    this.submitted.push({ model, body });
    this.send(res, 200, { id, polling_url: `${this.url}/v1/get_result?id=${id}` });
  }

  private async result(id: string, res: http.ServerResponse): Promise<void> {
    const t = this.tasks.get(id);
    if (!t) return this.send(res, 200, { id, status: "Task not found", result: null, progress: null, details: null });
    const prompt = String(t.body.prompt);
    if (prompt.includes("[request-moderated]")) {
      t.finished = true;
      return this.send(res, 200, { id, status: "Request Moderated", result: null, progress: null, details: { "Moderation Reasons": ["Derivative Works Filter"] } });
    }
    if (++t.polls <= this.pendingPolls) return this.send(res, 200, { id, status: "Pending", result: null, progress: t.polls / (this.pendingPolls + 1), details: null });
    t.finished = true;
    if (prompt.includes("[content-moderated]")) return this.send(res, 200, { id, status: "Content Moderated", result: null, progress: null, details: { "Moderation Reasons": ["NSFW"] } });
    if (prompt.includes("[error]")) return this.send(res, 200, { id, status: "Error", result: null, progress: null, details: { error: "generation failed" } });
    t.readyAt ??= Date.now();
    t.png ??= await sharp({ create: { width: t.body.width ?? 64, height: t.body.height ?? 64, channels: 3, background: "#3366cc" } }).png().toBuffer();
    const seed = t.body.seed ?? 42;
    this.send(res, 200, {
      id, status: "Ready", progress: null, details: null,
      result: { sample: `${this.url}/delivery/${id}.png?sig=abc`, prompt, seed, start_time: t.readyAt / 1000 - 1, end_time: t.readyAt / 1000, duration: 1 },
    });
  }

  private delivery(url: URL, res: http.ServerResponse): void {
    const t = this.tasks.get(url.pathname.slice("/delivery/".length).replace(/\.png$/, ""));
    if (!t?.png || !t.readyAt) return this.send(res, 404, { detail: "Not Found" });
    if (Date.now() - t.readyAt > this.sampleTtlMs) {
      res.writeHead(403, { "content-type": "application/xml" });
      return void res.end("<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>");
    }
    res.writeHead(200, { "content-type": "image/png" });
    res.end(t.png);
  }
}
