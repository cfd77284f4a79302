// The process a fine-tuning job runs in: `flux2 train` (src/cli/train.ts) with
// its arguments, forked by the server (src/server/finetune.ts) with an IPC
// channel. Training runs in its own process rather than the server's generation
// thread because it holds a second model, its own ONNX sessions and minutes to
// hours of work: a crash or out-of-memory ends this process, not the server.
//
// If the server goes away (crash, kill -9), the IPC channel closes: the run then
// stops as on Ctrl-C — after the current step, with a resumable checkpoint — so no
// orphan keeps training while the restarted server resumes the job.

import { runTrainCommand } from "./train.js";

let finished = false;
process.on("disconnect", () => {
  if (!finished) process.kill(process.pid, "SIGINT");
});

runTrainCommand(process.argv.slice(2)).then(
  (code) => {
    finished = true;
    process.exitCode = code;
  },
  (e: Error) => {
    finished = true;
    process.stderr.write(`flux2 train: ${e.message}\n`);
    process.exitCode = 1;
  },
).finally(() => {
  // The IPC channel keeps the process alive: close it once the run is over.
  if (process.connected) process.disconnect();
});
