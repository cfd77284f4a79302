// Analysis tool behind "What more compute buys" in docs/flux2-mini.md (session 14); not part of the
// package or the tests. It packs what flux2 train's transformer stage trains on into one small file,
// so that flux2_mini_torch.py can replay that stage at a larger scale on a machine without Node.
//
// Usage (after npm run build):
//   node docs/probes/torch-scale/export_data.mjs DATA_TRAIN_DIR CACHE_FILE MODEL_DIR OUT_FILE
//     DATA_TRAIN_DIR  the --data folder of the transformer stage (data/flux2-mini/train)
//     CACHE_FILE      that run's latent cache (RUN_DIR/cache/<key>.safetensors, written by flux2 train)
//     MODEL_DIR       the model whose tokenizer renders the captions (its tokenizer/ folder)
//
// What it writes (gzipped safetensors): every sample's pixels exactly as the trainer reads them (its
// bucketed RGB; flux2_mini_torch.py encodes them with the VAE there: 9,906 latents of 64×8×8 would be
// 80 MiB even in float16, over the device's 64 MiB, while the pixels gzip to a few MiB), three of the
// trainer's cached latents and text-stage thumbnails to check that code against, the chat-rendered token ids of every distinct caption (the empty caption last, for caption
// dropout), and per sample its caption index and repeat count. The text encoder itself travels as
// the model's text_encoder/ folder: 12k captions × 64 × 192 float32 embeddings would be 0.6 GB.
import fs from "node:fs";
import path from "node:path";
const [dataDir, cacheFile, modelDir, outFile] = process.argv.slice(2);
if (!outFile) { console.error("usage: node docs/probes/torch-scale/export_data.mjs DATA_TRAIN_DIR CACHE_FILE MODEL_DIR OUT_FILE"); process.exit(2); }
const dist = new URL("../../../dist/src/", import.meta.url);
const { scanDataset, makeSamples, loadBucketed } = await import(new URL("train/data.js", dist));
const { pictureDescriptor } = await import(new URL("train/text_align.js", dist));
const { readAll, writeSafetensors } = await import(new URL("io/safetensors.js", dist));
const { PromptTokenizer } = await import(new URL("text/tokenizer.js", dist));
const zlib = await import("node:zlib");

const L = 64;
const ds = await scanDataset(dataDir);
const samples = makeSamples(ds, [64]);
const cache = readAll(cacheFile);
const captions = [...new Set(samples.flatMap((s) => ds.images[s.image].captions))];
if (!captions.includes("")) captions.push("");
const index = new Map(captions.map((c, i) => [c, i]));

const first = samples[0].bucket;
if (!samples.every((s) => s.bucket.width === first.width && s.bucket.height === first.height)) throw new Error("one bucket expected");
const per = first.width * first.height * 3;
const pixels = new Uint8Array(samples.length * per);
for (const [i, s] of samples.entries()) pixels.set(await loadBucketed(ds.images[s.image].file, s.bucket), i * per);
// A few of the trainer's cached latents, so that flux2_mini_torch.py can check its VAE encoder.
const checked = {};
for (const i of [0, 1, samples.length - 1]) {
  const t = cache.get(`latent.${i}`);
  if (!t) throw new Error(`${cacheFile}: no latent.${i}; is this the flux2 train cache of ${dataDir}?`);
  checked[`cached_latent.${i}`] = { dtype: "F32", shape: t.shape, data: t.data };
  // and the text-encoder stage's 8×8 CIELAB thumbnail of the same sample
  checked[`descriptor.${i}`] = { dtype: "F32", shape: [8 * 8 * 3], data: pictureDescriptor(pixels.subarray(i * per, (i + 1) * per), first.width, first.height, 8) };
}
if (cache.has(`latent.${samples.length}`)) throw new Error(`${cacheFile}: it has more latents than ${dataDir} has samples`);

const tok = await PromptTokenizer.load(path.join(modelDir, "tokenizer"));
const ids = new Int32Array(captions.length * L);
const lengths = new Int32Array(captions.length);
captions.forEach((c, k) => {
  const e = tok.encode([c], L);
  let n = 0;
  for (let j = 0; j < L; j++) { ids[k * L + j] = Number(e.inputIds[j]); n += Number(e.attentionMask[j]); }
  for (let j = 0; j < L; j++) if (Number(e.attentionMask[j]) !== (j < n ? 1 : 0)) throw new Error("expected right padding");
  lengths[k] = n;
});
const caption = new Int32Array(samples.map((s) => { const cs = ds.images[s.image].captions; if (cs.length !== 1) throw new Error("one caption per image expected"); return index.get(cs[0]); }));
const repeats = new Int32Array(samples.map((s) => ds.images[s.image].repeats));
const tmp = `${outFile}.tmp`;
writeSafetensors(tmp, {
  ...checked,
  pixels: { dtype: "U8", shape: [samples.length, first.height, first.width, 3], data: pixels },
  input_ids: { dtype: "I32", shape: [captions.length, L], data: ids },
  lengths: { dtype: "I32", shape: [captions.length], data: lengths },
  sample_caption: { dtype: "I32", shape: [samples.length], data: caption },
  sample_repeats: { dtype: "I32", shape: [samples.length], data: repeats },
}, { empty_caption: String(index.get("")), data: path.resolve(dataDir), cache: path.resolve(cacheFile) });
fs.writeFileSync(outFile, zlib.gzipSync(fs.readFileSync(tmp), { level: 9 }));
fs.rmSync(tmp);
console.log(`${outFile}: ${samples.length} samples (${first.width}×${first.height}), ${captions.length} captions, ${(fs.statSync(outFile).size / 2 ** 20).toFixed(1)} MiB gzipped`);
