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
const { toSignedUnit } = await import(new URL("pipeline/conditioning.js", dist));
const { toUint8Diffusers } = await import(new URL("pipeline/image.js", dist));
const { randn } = await import(new URL("util/random.js", dist));
const [model, out, stdList, ...pictures] = process.argv.slice(2);
if (!model || !out || !stdList || !pictures.length) { console.error("usage: node docs/probes/vae_noise.mjs MODEL_DIR OUT.png 0.1,0.2,0.4 PICTURE..."); process.exit(2); }
const stds = [0, ...stdList.split(",").map(Number)];
const vae = await Flux2Vae.fromFiles(new OrtBackend({ threads: 1 }), path.join(model, "vae/diffusion_pytorch_model.safetensors"), path.join(model, "vae/config.json"));
const { mean, std } = vae.bnStats();
const tiles = [];
let side = 0;
for (const [k, file] of pictures.entries()) {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const H = info.height, W = info.width;
  side = Math.max(H, W) * 2;
  const enc = await vae.encode(toSignedUnit({ rgb: new Uint8Array(data), width: W, height: H }));
  const z = L.bnNormalize(L.patchify(tensor(enc.mean.data, enc.mean.shape)), mean, std);
  for (const [j, s] of stds.entries()) {
    const noise = randn(k * stds.length + j, z.data.length); // seeded: the same picture gets the same noise each run
    const noisy = tensor(Float32Array.from(z.data, (v, i) => v + s * noise[i]), z.shape);
    const lat = L.unpatchify(L.bnDenormalize(noisy, mean, std));
    const img = await vae.decode({ data: lat.data, shape: lat.shape });
    const rgb = toUint8Diffusers(img.data, 1, H, W);
    tiles.push(await sharp(Buffer.from(rgb), { raw: { width: W, height: H, channels: 3 } }).resize(W * 2, H * 2, { kernel: "nearest" }).png().toBuffer());
  }
}
const cell = side + 2;
await sharp({ create: { width: stds.length * cell, height: pictures.length * cell, channels: 3, background: "#808080" } })
  .composite(tiles.map((t, i) => ({ input: t, left: (i % stds.length) * cell, top: Math.floor(i / stds.length) * cell }))).png().toFile(out);
console.log(`${out}: ${pictures.length} picture(s) × noise std ${stds.join(", ")}`);
await vae.release();
