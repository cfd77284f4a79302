// The flux2 command as a user runs it: generate and edit end to end on the
// tiny golden checkpoints, reproducibility, and clear errors for bad input.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import { readPngText } from "../src/pipeline/image.js";
import { goldenPath, repoRoot } from "./golden.js";

const cli = path.join(repoRoot, "dist", "src", "cli", "main.js");
const distilled = goldenPath("checkpoints/klein_distilled");
const base = goldenPath("checkpoints/klein_base");

function flux2(args: string[], cwd: string, input?: string) {
  // Without ORT_DISABLE_TELEMETRY from outside: the command must protect itself (see src/backend/ort.ts).
  const env = { ...process.env };
  delete env.ORT_DISABLE_TELEMETRY;
  const r = spawnSync(process.execPath, [cli, ...args], { cwd, encoding: "utf8", timeout: 120_000, input, env });
  return { code: r.status, out: r.stdout, err: r.stderr, signal: r.signal };
}

function tmpdir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), "flux2-cli-"));
}

async function pixels(file: string) {
  return (await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true }));
}

test("generate from the golden initial latents reproduces the reference images", async () => {
  const dir = tmpdir();
  const r = flux2(["generate", "--model", distilled, "--prompt", "A photo of a red fox sitting in the snow, 35mm",
    "--prompt", "Café sign that says \"OPEN 24/7\"  ☕\nwatercolor, soft light", "--width", "64", "--height", "48",
    "--initial-latents", goldenPath("checkpoints/klein_distilled__t2i.inputs.safetensors"), "--out", "case.png", "--quiet"], dir);
  assert.equal(r.code, 0, r.err);
  for (const i of [0, 1]) {
    const mine = await pixels(path.join(dir, `case-${i}.png`));
    const ref = await pixels(goldenPath(`checkpoints/klein_distilled__t2i.expected_${i}.png`));
    assert.equal(mine.info.width, ref.info.width);
    let same = 0, worst = 0;
    for (let p = 0; p < ref.data.length / 3; p++) {
      let eq = true;
      for (let c = 0; c < 3; c++) {
        const d = Math.abs(mine.data[p * 3 + c] - ref.data[p * 3 + c]);
        worst = Math.max(worst, d);
        if (d) eq = false;
      }
      if (eq) same++;
    }
    assert.ok(worst <= 1, `image ${i}: max diff ${worst}`);
    assert.ok(same / (ref.data.length / 3) >= 0.99, `image ${i}: only ${same} identical pixels`);
  }
});

test("the same seed and parameters give byte-identical files, with parameters embedded", () => {
  const dir = tmpdir();
  const args = ["generate", "--model", distilled, "--prompt", '{"scene": "a lighthouse", "palette": ["#1B3A5C"]}', "--width", "64", "--height", "64", "--seed", "42", "--quiet"];
  assert.equal(flux2([...args, "--out", "a.png"], dir).code, 0);
  assert.equal(flux2([...args, "--out", "b.png"], dir).code, 0);
  const a = fs.readFileSync(path.join(dir, "a.png")), b = fs.readFileSync(path.join(dir, "b.png"));
  assert.ok(a.equals(b));
  const text = readPngText(a);
  assert.match(text.parameters, /^\{"scene": "a lighthouse", "palette": \["#1B3A5C"\]\}\nSteps: 4, .*Seed: 42, Size: 64x64/);
  assert.equal(JSON.parse(text.flux2).seed, 42);
  assert.equal(flux2([...args, "--seed", "43", "--out", "c.png"], dir).code, 0);
  assert.ok(!a.equals(fs.readFileSync(path.join(dir, "c.png"))));
});

test("a 100 KB prompt works on the command line, from --prompt-file and from standard input, all alike", () => {
  const dir = tmpdir();
  // 100,000 characters: past the ~29 KB command line at which ONNX Runtime's telemetry used to crash the process.
  const sentence = "A red fox in deep snow, #FF8800 scarf, café light ☕. ";
  const prompt = sentence.repeat(Math.ceil(100_000 / sentence.length)).slice(0, 100_000);
  fs.writeFileSync(path.join(dir, "prompt.txt"), prompt + "\n");
  const args = ["generate", "--model", distilled, "--width", "64", "--height", "64", "--seed", "7", "--quiet"];
  const inline = flux2([...args, "--prompt", prompt, "--out", "argv.png"], dir);
  assert.equal(inline.signal, null, "killed by a signal");
  assert.equal(inline.code, 0, inline.err);
  const file = flux2([...args, "--prompt-file", "prompt.txt", "--out", "file.png"], dir);
  assert.equal(file.code, 0, file.err);
  const stdin = flux2([...args, "--prompt-file", "-", "--out", "stdin.png"], dir, prompt);
  assert.equal(stdin.code, 0, stdin.err);
  const png = fs.readFileSync(path.join(dir, "file.png"));
  assert.equal(JSON.parse(readPngText(png).flux2).prompt, prompt, "the file's trailing newline is dropped, nothing else");
  assert.ok(png.equals(fs.readFileSync(path.join(dir, "argv.png"))));
  assert.ok(png.equals(fs.readFileSync(path.join(dir, "stdin.png"))));

  // Prompts keep command-line order across --prompt and --prompt-file.
  fs.writeFileSync(path.join(dir, "b.txt"), "second");
  const two = flux2([...args, "--prompt", "first", "--prompt-file", "b.txt", "--out", "two.png"], dir);
  assert.equal(two.code, 0, two.err);
  assert.deepEqual([0, 1].map((i) => JSON.parse(readPngText(fs.readFileSync(path.join(dir, `two-${i}.png`))).flux2).prompt), ["first", "second"]);

  assert.match(flux2([...args, "--prompt-file", "missing.txt"], dir).err, /--prompt-file missing\.txt: cannot read missing\.txt \(ENOENT\)/);
  fs.writeFileSync(path.join(dir, "latin1.txt"), Buffer.from([0x63, 0x61, 0x66, 0xe9]));
  assert.match(flux2([...args, "--prompt-file", "latin1.txt"], dir).err, /not valid UTF-8/);
  assert.match(flux2([...args, "--prompt-file", "-", "--prompt-file", "-"], dir, "x").err, /standard input\) can be given only once/);
});

test("bad sizes are refused with a message that says what to use", () => {
  const dir = tmpdir();
  const r = flux2(["generate", "--model", distilled, "--prompt", "x", "--width", "66", "--height", "64"], dir);
  assert.equal(r.code, 1);
  assert.match(r.err, /width 66 is not a multiple of 4: use 64 or 68/);
  // At least 64, as the server says (the tiny checkpoint's own grid would allow 16).
  assert.match(flux2(["generate", "--model", distilled, "--prompt", "x", "--width", "32", "--height", "64"], dir).err, /width 32 is below the minimum of 64/);
  const big = flux2(["generate", "--model", distilled, "--prompt", "x", "--width", "4096", "--height", "2048"], dir);
  assert.match(big.err, /at most 4 MP/);
  const steps = flux2(["generate", "--model", distilled, "--prompt", "x", "--steps", "0"], dir);
  assert.match(steps.err, /--steps must be an integer from 1 to 50/);
});


test("a flag the model cannot honour is refused before loading, by the server's per-model rule", () => {
  const dir = tmpdir();
  const g = flux2(["generate", "--model", distilled, "--prompt", "x", "--width", "64", "--height", "64", "--guidance", "3"], dir);
  assert.equal(g.code, 1);
  assert.match(g.err, /klein does not take --guidance: it is guidance-distilled/);
  const n = flux2(["edit", "--model", distilled, "--prompt", "x", "-i", goldenPath("edit/klein_multi_ref__ref0.png"), "--negative-prompt", "blur"], dir);
  assert.equal(n.code, 1);
  assert.match(n.err, /klein does not take --negative-prompt: it samples without CFG/);
  assert.deepEqual(fs.readdirSync(dir), [], "nothing written");
  // klein base takes both (CFG); --steps stays open on distilled klein for previews and tests.
  const ok = flux2(["generate", "--model", base, "--prompt", "x", "--width", "64", "--height", "64", "--steps", "2", "--guidance", "3", "--negative-prompt", "blur", "--out", "b.png"], dir);
  assert.equal(ok.code, 0, ok.err);
  assert.equal(flux2(["generate", "--model", distilled, "--prompt", "x", "--width", "64", "--height", "64", "--steps", "2", "--out", "d.png"], dir).code, 0);
});
test("a checkpoint without its tokenizer, or with a corrupt shard, gives a clear error", () => {
  const dir = tmpdir();
  const ck = path.join(dir, "ck");
  fs.cpSync(base, ck, { recursive: true });
  fs.rmSync(path.join(ck, "tokenizer"), { recursive: true });
  const r = flux2(["generate", "--model", ck, "--prompt", "x", "--width", "64", "--height", "64"], dir);
  assert.equal(r.code, 1);
  assert.match(r.err, /tokenizer folder "tokenizer\/" is missing/);

  fs.cpSync(path.join(base, "tokenizer"), path.join(ck, "tokenizer"), { recursive: true });
  const shard = path.join(ck, "transformer", "diffusion_pytorch_model-00002-of-00002.safetensors");
  fs.truncateSync(shard, fs.statSync(shard).size - 4096);
  const c = flux2(["generate", "--model", ck, "--prompt", "x", "--width", "64", "--height", "64"], dir);
  assert.equal(c.code, 1);
  assert.match(c.err, /diffusion_pytorch_model-00002-of-00002\.safetensors.*truncated/);
});

test("edit with references reports crops and records them in the metadata", () => {
  const dir = tmpdir();
  const r = flux2(["edit", "--model", distilled, "-i", goldenPath("edit/klein_multi_ref__ref0.png"), "-i", goldenPath("edit/klein_multi_ref__ref1.png"),
    "--prompt", "two objects on a table", "--out", "e.png"], dir);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /reference 1: centre-cropped to 68×64/);
  const meta = JSON.parse(readPngText(fs.readFileSync(path.join(dir, "e.png"))).flux2);
  assert.deepEqual([meta.width, meta.height], [68, 64]);
  assert.equal(meta.references.length, 2);
  assert.equal(meta.references[0].resizedFrom, "70x65");
});

test("inpainting, outpainting and their input errors", async () => {
  const dir = tmpdir();
  // The golden inpaint pair is 64×48, below the 64-pixel minimum side: the same picture and mask grown to 64×64.
  const grow = (f: string, name: string) => sharp(goldenPath(f)).extend({ bottom: 16, extendWith: "copy" }).png().toFile(path.join(dir, name));
  await grow("edit/klein_inpaint__image.png", "image.png");
  await grow("edit/klein_inpaint__mask.png", "mask.png");
  const img = path.join(dir, "image.png");
  const ok = flux2(["edit", "--model", base, "-i", img, "--mask", "mask.png", "--strength", "0.6", "--steps", "5", "--prompt", "a small red boat", "--out", "in.png", "--quiet"], dir);
  assert.equal(ok.code, 0, ok.err);
  assert.equal(JSON.parse(readPngText(fs.readFileSync(path.join(dir, "in.png"))).flux2).strength, 0.6);

  const out = flux2(["edit", "--model", distilled, "-i", img, "--expand", "8,4,0,4", "--prompt", "wider", "--out", "out.png"], dir);
  assert.equal(out.code, 0, out.err);
  const meta = await sharp(path.join(dir, "out.png")).metadata();
  const src = await sharp(img).metadata();
  assert.deepEqual([meta.width, meta.height], [src.width! + 8, src.height! + 8]);

  const mismatch = flux2(["edit", "--model", base, "-i", img, "--mask", goldenPath("edit/klein_kv__ref1.png"), "--prompt", "x"], dir);
  assert.match(mismatch.err, /the mask is 72×69 but input_image is/);
  // An animated mask is refused (sharp would silently read its first frame).
  const frames = Buffer.alloc(64 * 64 * 4 * 2, 255);
  frames.fill(0, 0, 64 * 64 * 4 - 1); // two different frames (identical ones are merged)
  await sharp(frames, { raw: { width: 64, height: 64 * 2, channels: 4, pageHeight: 64 } } as never).gif().toFile(path.join(dir, "anim.gif"));
  assert.equal((await sharp(path.join(dir, "anim.gif")).metadata()).pages, 2);
  const anim = flux2(["edit", "--model", base, "-i", img, "--mask", "anim.gif", "--prompt", "x"], dir);
  assert.equal(anim.code, 1);
  assert.match(anim.err, /mask_image is animated \(2 frames\); give a single-frame PNG/);
  const bad = path.join(dir, "bad.png");
  fs.writeFileSync(bad, "not an image");
  assert.match(flux2(["edit", "--model", distilled, "-i", bad, "--prompt", "x"], dir).err, /bad\.png/);
  const many = Array.from({ length: 11 }, () => ["-i", img]).flat();
  assert.match(flux2(["edit", "--model", distilled, ...many, "--prompt", "x"], dir).err, /11 images given; at most 10/);
  assert.match(flux2(["edit", "--model", distilled, "-i", img, "--max-pixels", "100", "--prompt", "x"], dir).err, /pixels|limit/i);
});

test("--lora applies stacked LoRAs, reports them and records them; strength 0 is the base image", () => {
  const dir = tmpdir();
  const args = ["generate", "--model", distilled, "--prompt", "fox", "--width", "64", "--height", "64", "--seed", "5"];
  assert.equal(flux2([...args, "--out", "base.png", "--quiet"], dir).code, 0);
  const r = flux2([...args, "--lora", goldenPath("lora/lora_kohya.safetensors") + ":0.8", "--lora", goldenPath("lora/lora_bfl.safetensors"), "--out", "l.png"], dir);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /lora lora_kohya \(kohya, strength 0\.8\): \d+ weights applied/);
  const l = fs.readFileSync(path.join(dir, "l.png"));
  assert.deepEqual(JSON.parse(readPngText(l).flux2).loras, [{ name: "lora_kohya", strength: 0.8 }, { name: "lora_bfl", strength: 1 }]);
  assert.match(readPngText(l).parameters, /LoRAs: "lora_kohya: 0\.8, lora_bfl: 1"/);
  assert.equal(flux2([...args, "--lora", goldenPath("lora/lora_kohya.safetensors") + ":0", "--out", "zero.png", "--quiet"], dir).code, 0);
  const px = (f: string) => spawnSync(process.execPath, ["-e", `require("sharp")(${JSON.stringify(path.join(dir, f))}).raw().toBuffer().then(b=>process.stdout.write(b.toString("hex")))`], { cwd: repoRoot, encoding: "utf8" }).stdout;
  assert.equal(px("zero.png"), px("base.png"));
  assert.notEqual(px("l.png"), px("base.png"));
  assert.match(flux2([...args, "--lora", "missing.safetensors"], dir).err, /no such file "missing\.safetensors"/);
});

test("the package's bin is executable after the build, so `npx flux2` runs in a fresh clone", () => {
  // tsc writes new files without the executable bit, and npm does not link the root package's own
  // bin, so `npm install && npx flux2 …` (the README's first command) ran the file directly and
  // failed with "Permission denied" on a clean clone. The build sets the bit (package.json "build").
  assert.ok((fs.statSync(cli).mode & 0o111) !== 0, `${cli} is not executable: mode ${(fs.statSync(cli).mode & 0o777).toString(8)}`);
  const r = spawnSync(cli, ["--help"], { encoding: "utf8", timeout: 60_000 });
  assert.equal(r.error, undefined, String(r.error));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout + r.stderr, /flux2/);
});
