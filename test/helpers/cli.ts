// Entry point for spawning `flux2 serve|worker|keys` in tests as child
// processes (node dist/test/helpers/cli.js serve ...), independent of the
// dispatcher in src/cli/main.ts.

import { runKeysCommand } from "../../src/cli/keys.js";
import { runServeCommand } from "../../src/cli/serve.js";
import { runWorkerCommand } from "../../src/cli/worker.js";

const commands: Record<string, (argv: string[]) => Promise<number>> = { serve: runServeCommand, worker: runWorkerCommand, keys: runKeysCommand };
const [cmd, ...rest] = process.argv.slice(2);
const run = commands[cmd ?? ""];
if (!run) {
  // `node --test dist/test/` also runs every file under test/, this one without arguments: not an error.
  if (cmd) {
    console.error(`usage: cli.js serve|worker|keys ...`);
    process.exitCode = 2;
  }
} else {
  run(rest).then(
    (code) => { process.exitCode = code; },
    (e: Error) => {
      console.error(`flux2: ${e.message}`);
      process.exitCode = 1;
    },
  );
}
