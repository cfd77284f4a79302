// `flux2 train` runs in a child Node process started with a larger initial old-generation heap.
//
// Why: V8 sizes a process's old generation from its live objects (about 80 MB for flux2-mini's
// text-encoder stage: the tokenizer, the dataset), and grows its limit by a small factor. The
// training loop promotes a few MB of short-lived objects a step (feeds, results, the tokenizer's
// strings), so V8 ran a full mark-compact of those 80 MB on every step: 75 ms a step on the main
// thread, a fifth of a two-worker text-encoder step (docs/flux2-mini.md, session 36). Starting
// with --initial-old-space-size lets the garbage build up to that size before the first full
// collection. The flag is one V8 reads when it creates the heap, so it cannot be set from inside
// a running process (v8.setFlagsFromString is too late, and NODE_OPTIONS refuses it): hence a
// child process. FLUX2_TRAIN_HEAP_MB=0 (or starting node with the flag) runs in this process.

import { spawn } from "node:child_process";
import * as os from "node:os";

/** The old generation's initial size for training processes (MB). */
export const TRAINING_HEAP_MB = 256;
const FLAG = "--initial-old-space-size";

/** The flag as node was started with it, if it was. */
const startedWith = () => process.execArgv.find((a) => a.startsWith(FLAG));

/** The initial old-generation size this process was started with (bytes), or 0 without the flag. */
export function trainingHeapBytes(): number {
  const flag = startedWith();
  return flag?.startsWith(`${FLAG}=`) ? Number(flag.slice(FLAG.length + 1)) * 2 ** 20 : 0;
}

/**
 * Runs this command line again in a child process with the training heap, forwarding its exit
 * code and the signals sent to this process (Ctrl-C included); null when this process is that
 * child already, node was started with the flag, or FLUX2_TRAIN_HEAP_MB=0.
 */
export async function runWithTrainingHeap(): Promise<number | null> {
  const setting = process.env.FLUX2_TRAIN_HEAP_MB;
  const mb = setting === undefined || setting === "" ? TRAINING_HEAP_MB : Number(setting);
  if (!(Number.isInteger(mb) && mb >= 0)) throw new Error(`FLUX2_TRAIN_HEAP_MB must be a whole number of megabytes (0 turns the training heap off), got "${setting}"`);
  if (mb === 0 || startedWith()) return null;
  const child = spawn(process.execPath, [...process.execArgv, `${FLAG}=${mb}`, process.argv[1], ...process.argv.slice(2)], {
    stdio: "inherit",
    // Its own process group: a Ctrl-C at the terminal reaches this process only, which passes it
    // on once; the child seeing it twice would quit without saving its checkpoint.
    detached: true,
  });
  const forward = (signal: NodeJS.Signals) => () => { child.kill(signal); };
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  const handlers = signals.map((s) => [s, forward(s)] as const);
  for (const [s, h] of handlers) process.on(s, h);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.on("error", (e) => reject(new Error(`could not start the training process (${e.message}); run with FLUX2_TRAIN_HEAP_MB=0 to train in this one`)));
      child.on("exit", (code, signal) => resolve(code ?? 128 + (signal ? os.constants.signals[signal] : 1)));
    });
  } finally {
    for (const [s, h] of handlers) process.off(s, h);
  }
}
