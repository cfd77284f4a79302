// A batch as one gallery card. A local model makes a batch as one job (num_images); a provider model
// takes one image per job, so the studio sends every job of such a batch with the same x-flux2-batch
// id and the server's gallery reports it as `batch`. Here the jobs sharing an id become one card.

import type { Job } from "./api";

/** A batch id for x-flux2-batch (letters and digits; crypto.randomUUID needs a secure context, which a plain-http deployment is not). */
export function newBatchId(): string {
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * The gallery's cards, newest first: a job alone, or the jobs of one batch merged into one card (at
 * the place of its newest job) whose images are the batch's in submission order, whose parameters are
 * the first job's with num_images = the batch size (so Reuse makes the same batch again), and whose
 * `members` are the jobs (Hide and Delete act on all of them).
 */
export function groupBatches(jobs: Job[]): Job[] {
  const byBatch = new Map<string, Job[]>();
  for (const j of jobs) if (j.batch) byBatch.set(j.batch, [...(byBatch.get(j.batch) ?? []), j]);
  const out: Job[] = [];
  const placed = new Set<string>();
  for (const j of jobs) {
    const members = j.batch ? byBatch.get(j.batch)! : [];
    if (members.length < 2) { out.push(j); continue; }
    if (placed.has(j.batch!)) continue;
    placed.add(j.batch!);
    out.push(merge([...members].reverse()));
  }
  return out;
}

/** `members` oldest first. */
function merge(members: Job[]): Job {
  const first = members[0];
  const withResult = members.find((m) => m.result) ?? first;
  const samples = members.flatMap((m) => m.result?.samples ?? []);
  const notReady = members.find((m) => m.status !== "Ready");
  return {
    ...first,
    status: notReady?.status ?? "Ready",
    params: { ...first.params, num_images: members.length },
    result: withResult.result && { ...withResult.result, seed: first.result?.seed ?? withResult.result.seed, sample: samples[0] ?? null, samples },
    error: members.map((m) => m.error).find(Boolean) ?? null,
    hidden: members.every((m) => m.hidden),
    endedAt: Math.max(...members.map((m) => m.endedAt ?? 0)) || null,
    members,
  };
}
