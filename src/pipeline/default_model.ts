// The bundled default model: which folder `flux2 generate`, `flux2 edit` and `flux2 serve` use
// when no --model is given (issue 12: a fresh clone makes pictures without a download).
//
// It is flux2-mini (docs/flux2-mini.md), shipped at models/flux2-mini inside the package. The
// path is resolved from the package root, not the working directory, so `npx flux2` works from
// any folder. FLUX2_DEFAULT_MODEL replaces it (tests point it at a random-init folder; a user can
// point it at any FLUX.2 diffusers folder).

import * as fs from "../platform/fs.js";
import * as path from "../platform/path.js";
import { fileURLToPath } from "../platform/url.js";
import { CheckpointError } from "./checkpoint.js";

/** The model id the server and the studio list the bundled model under. */
export const DEFAULT_MODEL_ID = "flux2-mini";

/** Where the bundled model lives, relative to the package root. */
export const DEFAULT_MODEL_DIR = path.join("models", "flux2-mini");

/** The folder holding this package's package.json (this file is src/pipeline/ or dist/src/pipeline/). */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, "package.json");
    if (fs.existsSync(pkg) && JSON.parse(fs.readFileSync(pkg, "utf8")).name === "flux2") return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find the flux2 package root above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** The default model's folder: $FLUX2_DEFAULT_MODEL, else models/flux2-mini in the package. */
export function defaultModelPath(env: NodeJS.ProcessEnv = process.env): { path: string; from: string } {
  const e = env.FLUX2_DEFAULT_MODEL;
  if (e !== undefined && e !== "") return { path: path.resolve(e), from: "FLUX2_DEFAULT_MODEL" };
  return { path: path.join(packageRoot(), DEFAULT_MODEL_DIR), from: "the bundled model" };
}

/**
 * The default model's folder, checked to be there. When it is missing the error says what to do:
 * pass a model, or point FLUX2_DEFAULT_MODEL at one (a git clone without the weights, or a
 * package installed without models/, ends up here).
 */
export function requireDefaultModel(env: NodeJS.ProcessEnv = process.env): string {
  const d = defaultModelPath(env);
  if (!fs.existsSync(path.join(d.path, "model_index.json"))) {
    const what = d.from === "FLUX2_DEFAULT_MODEL"
      ? `FLUX2_DEFAULT_MODEL is ${env.FLUX2_DEFAULT_MODEL}, which is not a FLUX.2 diffusers folder (no model_index.json)`
      : `no --model was given and the bundled model ${DEFAULT_MODEL_DIR} is missing (looked in ${d.path})`;
    throw new CheckpointError(`${what}. Pass --model PATH (a FLUX.2 diffusers folder; \`flux2 pull REPO_ID\` downloads one), ` +
      `set FLUX2_DEFAULT_MODEL to such a folder, or restore ${DEFAULT_MODEL_DIR} (git checkout -- ${DEFAULT_MODEL_DIR} in a clone)`);
  }
  return d.path;
}
