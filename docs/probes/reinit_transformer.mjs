// Analysis helper behind the session-8 proxies in docs/flux2-mini.md; not part of the package or the tests.
// Usage (after npm run build): node docs/probes/reinit_transformer.mjs SRC DST '{"num_layers":4,"num_single_layers":2}'
// Copies a flux2-mini folder and re-initialises its transformer (init-mini's initialisation, seed 0) with a changed configuration.
import * as fs from "node:fs";
const dist = new URL("../../dist/src/", import.meta.url);
const { expectedTransformerShapes } = await import(new URL("models/transformer_weights.js", dist));
const { writeTensors } = await import(new URL("mini/model.js", dist));
const { numel } = await import(new URL("io/safetensors.js", dist));
const [src, dst, json] = process.argv.slice(2);
fs.cpSync(src, dst, { recursive: true });
const cfg = { ...JSON.parse(fs.readFileSync(`${src}/transformer/config.json`, "utf8")), ...JSON.parse(json) };
fs.writeFileSync(`${dst}/transformer/config.json`, JSON.stringify(cfg, null, 2));
const tensors = expectedTransformerShapes(cfg);
writeTensors(`${dst}/transformer/diffusion_pytorch_model.safetensors`, tensors, 0);
console.log(`${dst}: ${tensors.reduce((n, [, shape]) => n + numel(shape), 0)} transformer parameters`);
