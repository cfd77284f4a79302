// Analysis helper behind docs/flux2-mini.md, session 17; not part of the package or the tests.
// Usage (after npm run build): node docs/probes/vae_noise.mjs MODEL_DIR OUT.png STDS PICTURE...
// How robust the VAE decoder is to errors in the latents the transformer makes: each picture is
// encoded (the training cache's way: mean, 2×2 patchify, latent batch-norm), then Gaussian noise
// of each standard deviation in STDS (comma-separated, in units of the normalised latents) is
// added and the result decoded. One row per picture: the clean round trip, then one column per STD.
import * as path from "node:path";
import sharp from "sharp";
const dist = new URL("../../dist/src/", import.meta.url);
const { OrtBackend } = await import(new URL("backend/ort.js", dist));
const { Flux2Vae } = await import(new URL("models/vae.js", dist));
const L = await import(new URL("pipeline/latents.js", dist));
const { tensor } = await import(new URL("util/tensor.js", dist));
const [model, out, stdList, ...pictures] = process.argv.slice(2);
if (!model || !out || !stdList || !pictures.length) { console.error("usage: node docs/probes/vae_noise.mjs MODEL_DIR OUT.png 0.1,0.2,0.4 PICTURE..."); process.exit(2); }
const stds = [0, ...stdList.split(",").map(Number)];
const vae = await Flux2Vae.fromFiles(new OrtBackend({ threads: 1 }), path.join(model, "vae/diffusion_pytorch_model.safetensors"), path.join(model, "vae/config.json"));
const { mean, std } = vae.bnStats();
// A small seeded generator (not the pipeline's noise): the probe only needs repeatable Gaussian draws.
let state = 1;
const uniform = () => { state = (state * 1103515245 + 12345) % 2147483648; return state / 2147483648; };
const gauss = () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
const tiles = [];
let side = 0;
for (const file of pictures) {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const H = info.height, W = info.width, px = new Float32Array(3 * H * W);
  side = Math.max(H, W) * 2;
  for (let i = 0; i < H * W; i++) for (let c = 0; c < 3; c++) px[c * H * W + i] = data[i * 3 + c] / 127.5 - 1;
  const enc = await vae.encode({ data: px, shape: [1, 3, H, W] });
  const z = L.bnNormalize(L.patchify(tensor(enc.mean.data, enc.mean.shape)), mean, std);
  for (const s of stds) {
    const noisy = tensor(Float32Array.from(z.data, (v) => v + s * gauss()), z.shape);
    const lat = L.unpatchify(L.bnDenormalize(noisy, mean, std));
    const img = await vae.decode({ data: lat.data, shape: lat.shape });
    const rgb = Buffer.alloc(H * W * 3);
    for (let i = 0; i < H * W; i++) for (let c = 0; c < 3; c++) rgb[i * 3 + c] = Math.max(0, Math.min(255, Math.round((img.data[c * H * W + i] + 1) * 127.5)));
    tiles.push(await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).resize(W * 2, H * 2, { kernel: "nearest" }).png().toBuffer());
  }
}
const cell = side + 2;
await sharp({ create: { width: stds.length * cell, height: pictures.length * cell, channels: 3, background: "#808080" } })
  .composite(tiles.map((t, i) => ({ input: t, left: (i % stds.length) * cell, top: Math.floor(i / stds.length) * cell }))).png().toFile(out);
console.log(`${out}: ${pictures.length} picture(s) × noise std ${stds.join(", ")}`);
await vae.release();
