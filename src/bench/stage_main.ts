// Child-process entry of `flux2 bench`: runs one stage (src/bench/stage.ts) given as a JSON
// argument and prints its result as the last stdout line, prefixed with RESULT_PREFIX.

import { pathToFileURL } from "node:url";
import { RESULT_PREFIX, runStage, type StageRequest } from "./stage.js";

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runStage(JSON.parse(process.argv[2] ?? "null") as StageRequest).then(
    (r) => {
      process.stdout.write(`${RESULT_PREFIX}${JSON.stringify(r)}\n`);
      // ORT's thread pools can keep the process alive briefly; the result is out, leave now.
      process.exit(0);
    },
    (e: Error) => {
      process.stderr.write(`bench stage failed: ${e.stack ?? e.message}\n`);
      process.exit(1);
    },
  );
}
