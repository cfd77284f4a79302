// Writes a randomly initialised flux2-mini model folder (diffusers layout, loaded like a real
// klein checkpoint) and prints its size and the training-cost estimate (docs/flux2-mini.md):
//
//   npx tsc -p tsconfig.json && node dist/scripts/init-mini.js --out models/flux2-mini-init [--seed 0]
//   node dist/scripts/init-mini.js --estimate          (sizes and FLOPs only, writes nothing)

import { parseArgs } from "node:util";
import { MINI_MAX_SEQUENCE_LENGTH, MINI_RESOLUTION, miniPlan, trainingEstimate, writeMiniModel } from "../src/mini/model.js";

const HELP = `usage: node dist/scripts/init-mini.js --out DIR [--seed S] | --estimate

  --out DIR     a new or empty folder for the model
  --seed S      0 to 2^31-1 (default 0); the same seed gives the same bytes
  --estimate    print parameters, bytes and FLOPs per training sample; write nothing
  --json        print the estimate as JSON`;

const G = (x: number) => `${(x / 1e9).toFixed(3)} GFLOP`;
const M = (x: number) => `${(x / 1e6).toFixed(2)} M`;

function main(argv: string[]): number {
  const { values: v } = parseArgs({
    args: argv, allowPositionals: false,
    options: { out: { type: "string" }, seed: { type: "string" }, estimate: { type: "boolean" }, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
  });
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  if (!v.out && !v.estimate) throw new Error("give --out DIR (or --estimate); see --help");
  const plan = miniPlan();
  const est = trainingEstimate();
  if (v.json) console.log(JSON.stringify({ params: plan.params, bytes: plan.bytes, resolution: MINI_RESOLUTION, textTokens: MINI_MAX_SEQUENCE_LENGTH, flops: est }, null, 2));
  else {
    const p = plan.params;
    console.log(`flux2-mini: ${M(p.total)} parameters, ${(plan.bytes / 1e6).toFixed(1)} MB in bf16`);
    console.log(`  transformer ${M(p.transformer)}, text encoder ${M(p.textEncoder)} (of which the token embedding ${M(p.textEmbedding)}), VAE ${M(p.vae)}`);
    console.log(`  per ${MINI_RESOLUTION}x${MINI_RESOLUTION} image, ${MINI_MAX_SEQUENCE_LENGTH} text tokens: transformer forward ${G(est.forward.transformer)}, ` +
      `VAE encode+decode ${G(est.forward.vaeEncode + est.forward.vaeDecode)}, text encoder ${G(est.forward.textEncoder)}`);
    console.log(`  training (3x forward): transformer ${G(est.perSample.transformer)} per sample, VAE ${G(est.perSample.vae)} per sample`);
  }
  if (v.out) {
    const seed = v.seed === undefined ? 0 : Number(v.seed);
    writeMiniModel(v.out, seed);
    console.log(`wrote ${v.out} (seed ${seed})`);
  }
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (e) {
  console.error(`init-mini: ${(e as Error).message}`);
  process.exitCode = 1;
}
