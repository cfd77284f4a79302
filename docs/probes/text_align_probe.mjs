// Analysis script behind the session-9 numbers in docs/flux2-mini.md; not part of the package or the tests.
// Usage (after npm run build): node docs/probes/text_align_probe.mjs MODEL DATA_DIR OUT_DIR [STEPS=600] [THREADS=1]
// Trains MODEL's text encoder with flux2 train --text-encoder's objective (src/train/text_align.ts: the
// prompt embeddings predict each caption's 8×8 CIELAB thumbnail) on the captioned images of DATA_DIR,
// holding out every 10th pair, and every 100 steps prints the held-out error: the CIELAB ΔE between
// the predicted and the true mean colour of the thumbnail cells the shape covers (cells more than
// ΔE 30 from white). Writes OUT_DIR/encoder_trained.safetensors (float32, the head left out).
// Session 9: DATA_DIR = the 3,308 scenes of the exact form "a #RRGGBB <shape> on a white background".
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
const dist = new URL("../../dist/src/", import.meta.url);
const { OrtBackend } = await import(new URL("backend/ort.js", dist));
const { PromptTokenizer } = await import(new URL("text/tokenizer.js", dist));
const { TextEncoderAligner, pictureDescriptor, alignHead, ALIGN_GRID: G } = await import(new URL("train/text_align.js", dist));
const { AdamW, clipGradNorm } = await import(new URL("train/optim.js", dist));
const { writeSafetensors } = await import(new URL("io/safetensors.js", dist));
const { Xoshiro128 } = await import(new URL("util/random.js", dist));
const [model, data, out, stepsArg = "600", threads = "1"] = process.argv.slice(2);
if (!out) throw new Error("usage: node docs/probes/text_align_probe.mjs MODEL DATA_DIR OUT_DIR [STEPS] [THREADS]");
const steps = Number(stepsArg), B = 32, L = 40, lr = 1e-3;
fs.mkdirSync(out, { recursive: true });
const items = [];
for (const f of fs.readdirSync(data).filter((f) => f.endsWith(".txt")).sort()) {
  const png = path.join(data, f.replace(/\.txt$/, ".png"));
  if (fs.existsSync(png)) items.push({ caption: fs.readFileSync(path.join(data, f), "utf8").trim(), png });
}
for (const it of items) {
  const { data: px } = await sharp(it.png).removeAlpha().resize(64, 64, { fit: "fill" }).raw().toBuffer({ resolveWithObject: true });
  it.desc = pictureDescriptor(new Uint8Array(px), 64, 64, G);
}
const tok = await PromptTokenizer.load(`${model}/tokenizer`);
const val = items.filter((_, i) => i % 10 === 0).slice(0, 256), train = items.filter((_, i) => i % 10 !== 0);
console.log(`${items.length} pairs: ${train.length} to train on, ${val.length} held out`);
const al = TextEncoderAligner.open(new OrtBackend({ threads: Number(threads) }), `${model}/text_encoder`, null, [9, 18, 27], alignHead(G), 0);
const opt = new AdamW(al.params, { lr, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 });
const rng = new Xoshiro128(1);
const K = 3 * G * G;
const batchOf = (list) => {
  const e = tok.encode(list.map((x) => x.caption), L);
  const targets = new Float32Array(list.length * K);
  list.forEach((x, i) => targets.set(x.desc, i * K));
  return { inputIds: e.inputIds, attentionMask: e.attentionMask, B: list.length, L, targets };
};
const lab = (d, i) => [d[i] * 50 + 50, d[i + 1] * 50, d[i + 2] * 50];
async function heldOutError() {
  let dE = 0, n = 0;
  for (let i = 0; i + B <= val.length; i += B) {
    const part = val.slice(i, i + B), r = await al.lossAndGrads(batchOf(part)); // the gradients are computed and dropped
    part.forEach((x, j) => {
      const P = r.predictions.subarray(j * K, (j + 1) * K), t = [0, 0, 0], p = [0, 0, 0];
      let k = 0;
      for (let c = 0; c < G * G; c++) {
        const tc = lab(x.desc, c * 3);
        if (Math.hypot(tc[0] - 100, tc[1], tc[2]) <= 30) continue;
        const pc = lab(P, c * 3);
        for (let q = 0; q < 3; q++) { t[q] += tc[q]; p[q] += pc[q]; }
        k++;
      }
      if (k) { dE += Math.hypot(...t.map((v, q) => (v - p[q]) / k)); n++; }
    });
  }
  return dE / n;
}
const t0 = Date.now();
for (let step = 1; step <= steps; step++) {
  const part = Array.from({ length: B }, () => train[Math.floor(rng.nextDouble() * train.length)]);
  const r = await al.lossAndGrads(batchOf(part));
  clipGradNorm(r.grads, 1.0);
  opt.step(r.grads, lr * Math.min(1, step / 30) * 0.5 * (1 + Math.cos(Math.PI * step / steps)));
  if (step % 100 === 0 || step === steps) console.log(`step ${step} loss ${r.loss.toFixed(4)} ${((Date.now() - t0) / 1000).toFixed(0)} s | held-out shape colour ΔE ${(await heldOutError()).toFixed(1)}`);
}
const tensors = {};
for (const [k, v] of al.encoderParams()) tensors[k] = { dtype: "F32", shape: al.paramShape(k), data: v };
writeSafetensors(`${out}/encoder_trained.safetensors`, tensors);
await al.release();
