// Analysis script behind "Where a training step's time goes, op by op" in docs/flux2-mini.md
// (session 30); not part of the package or the tests.
// Usage (after npm run build, from the repository root):
//   PROF_PREFIX=/tmp/te node docs/probes/ort_profile_train.mjs train --text-encoder ... --steps 30 --threads 1
//   node docs/probes/ort_profile_summary.mjs /tmp/te_*.json
// Runs `flux2 train` with the given arguments in this process, with ONNX Runtime's profiler on for
// every session it opens; each session writes PROF_PREFIX_<time>.json when it is released.
import { createRequire } from "node:module";
import * as path from "node:path";
import { pathToFileURL } from "node:url";

const root = process.cwd();
const ort = createRequire(path.join(root, "package.json"))("onnxruntime-node");
const prefix = process.env.PROF_PREFIX;
if (!prefix) throw new Error("set PROF_PREFIX to where the profiles go, e.g. PROF_PREFIX=/tmp/te");
const create = ort.InferenceSession.create.bind(ort.InferenceSession);
ort.InferenceSession.create = (model, opts = {}) => create(model, { ...opts, enableProfiling: true, profileFilePrefix: prefix });
const cli = path.join(root, "dist", "src", "cli", "main.js");
process.argv = [process.argv[0], cli, ...process.argv.slice(2)];
await import(pathToFileURL(cli).href);
