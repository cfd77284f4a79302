// A worker thread of `flux2 train --workers N` (src/train/parallel.ts): builds the run's task
// from the posted settings, then computes the micro-batches it is sent, each with the trainable
// tensors the main thread has published for that step.

import { parentPort, workerData } from "node:worker_threads";
import { openTrainingBackend } from "../backend/ort_native.js";
import type { Device } from "../backend/backend.js";
import type { WorkerInit } from "./parallel.js";
import { setupTask } from "./setup.js";

const init = workerData as WorkerInit;
const port = parentPort!;
const shared = new Float32Array(init.shared);

const backend = openTrainingBackend({ device: init.device as Device | undefined, threads: init.threads, matmul: init.matmul });
const setup = await setupTask(init.settings, backend, () => {}, true);
const params = setup.task.params;
for (const [name, , length] of init.layout) {
  const p = params.get(name);
  if (!p || p.length !== length) throw new Error(`the worker's task has no trainable tensor "${name}" of ${length} values: its settings differ from the main thread's`);
}
if (params.size !== init.layout.length) throw new Error(`the worker's task has ${params.size} trainable tensors, the main thread's ${init.layout.length}`);

let syncedStep = -1;
port.on("message", async (m: { type: "run"; id: number; step: number; micro: number }) => {
  try {
    if (m.step !== syncedStep) {
      for (const [name, offset, length] of init.layout) params.get(name)!.set(shared.subarray(offset, offset + length));
      syncedStep = m.step;
    }
    const r = await setup.task.microBatch(m.step, m.micro);
    // Row-sparse gradients are fresh arrays of this micro-batch: moved, not copied.
    const sparse = r.sparse ? [...r.sparse] : undefined;
    const moved = sparse?.flatMap(([, g]) => [g.rows.buffer, g.values.buffer] as ArrayBuffer[]) ?? [];
    port.postMessage({ type: "result", id: m.id, loss: r.loss, grads: [...r.grads], sparse }, moved);
  } catch (e) {
    port.postMessage({ type: "error", id: m.id, message: (e as Error).message });
  }
});
port.postMessage({ type: "ready" });
