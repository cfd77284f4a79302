// Storyboards: boards parsed from text or JSON, references attached to the shots
// that name them; `flux2 storyboard` and POST /v1/storyboard make 3 panels from
// 3 shots and 2 named references, with a contact sheet (PNG, PDF) and a frames
// manifest; re-making one shot leaves the other panels byte-identical.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { parseStoryboard, planShots, StoryboardError } from "../src/storyboard/board.js";
import { parseShotList, shotListRequest } from "../src/storyboard/write_shots.js";
import { api, TINY, waitFor } from "./helpers/net.js";
import { pngImage, tempDir, testServer } from "./helpers/server.js";

const CLI = path.resolve("dist/src/cli/main.js");
const ROOT = tempDir("flux2-storyboard-");

async function solid(file: string, r: number, g: number, b: number): Promise<Buffer> {
  const png = await sharp({ create: { width: 96, height: 64, channels: 3, background: { r, g, b } } }).png().toBuffer();
  fs.writeFileSync(file, png);
  return png;
}

const BOARD = (shot2Seed = "") => `Title: The harbour job
Brief: Two thieves meet at dawn.
Style: muted film still
Size: 64x64
Seed: 5
@Mara (character): mara.png — a tall woman in a red coat
@Harbour (place): harbour.png
1. Mara waits on the Harbour wall.
2. ${shot2Seed}Close-up of Mara's hands.
3. The Harbour at dawn, empty.
`;

test("a text board: settings, references with kinds and descriptions, shots; references attach to the shots that name them", () => {
  const board = parseStoryboard(BOARD("[seed 9] "));
  assert.equal(board.title, "The harbour job");
  assert.deepEqual([board.width, board.height, board.seed], [64, 64, 5]);
  assert.deepEqual(board.references.map((r) => [r.name, r.kind, r.image, r.description ?? null]),
    [["Mara", "character", "mara.png", "a tall woman in a red coat"], ["Harbour", "place", "harbour.png", null]]);
  const plans = planShots(board);
  assert.deepEqual(plans.map((p) => [p.id, p.references, p.seed]), [["shot01", ["Mara", "Harbour"], 5], ["shot02", ["Mara"], 9], ["shot03", ["Harbour"], 5]]);
  assert.match(plans[0].prompt, /^Mara waits on the Harbour wall\. References: image 1 is Mara \(character\): a tall woman in a red coat; image 2 is Harbour \(place\)\. Style: muted film still$/);
});

test("a JSON board: explicit reference lists, style references go to every shot; bad boards are refused naming the problem", () => {
  const board = parseStoryboard(JSON.stringify({
    references: [{ name: "Ann", image: "a.png" }, { name: "ink", kind: "style", image: "s.png" }, { name: "Bob", image: "b.png" }],
    shots: [{ id: "open", prompt: "Ann and Bob talk", references: ["Bob"] }, { prompt: "a street" }],
  }));
  assert.deepEqual(planShots(board).map((p) => [p.id, p.references]), [["open", ["Bob", "ink"]], ["shot02", ["ink"]]]);
  assert.throws(() => parseStoryboard("1. a shot\nthis line means nothing"), (e: Error) => e instanceof StoryboardError && /line 2 .* is neither a setting/.test(e.message));
  assert.throws(() => parseStoryboard("Title: no shots"), /shots: a storyboard needs at least one shot/);
  assert.throws(() => planShots(parseStoryboard(JSON.stringify({ references: [], shots: [{ prompt: "x", references: ["Zed"] }] }))), /names the reference "Zed", which the board does not define/);
  assert.throws(() => planShots(parseStoryboard(JSON.stringify({ references: [{ name: "a", image: "x" }, { name: "A", image: "y" }], shots: [{ prompt: "x" }] }))), /two references are named/);
  assert.throws(() => planShots(parseStoryboard(JSON.stringify({ references: [{ name: "a", image: "x" }, { name: "b", image: "y" }], shots: [{ prompt: "a b" }] })), 1), /has 2 references but the model takes at most 1/);
});

test("a shot list written by an LLM is read from its numbered lines; too few shots are refused, quoting the answer", () => {
  assert.deepEqual(parseShotList("Sure!\n1. Wide shot of the pier.\n2) Mara turns.\nShot 3: Close-up.\n", 3), ["Wide shot of the pier.", "Mara turns.", "Close-up."]);
  assert.throws(() => parseShotList("I cannot do that", 2), /wrote 0 numbered shot\(s\) where 2 were asked for .*I cannot do that/);
  assert.match(shotListRequest("a heist", 4, ["Mara"]), /Brief: a heist\nNames to use: Mara\.\nWrite 4 shots\./);
});

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("flux2 storyboard: 3 shots + 2 named references → 3 frames, contact sheet PNG and PDF, manifest; --shot re-makes one and leaves the others byte-identical", async () => {
  const dir = path.join(ROOT, "cli");
  fs.mkdirSync(dir);
  await solid(path.join(dir, "mara.png"), 200, 30, 30);
  await solid(path.join(dir, "harbour.png"), 30, 60, 200);
  fs.writeFileSync(path.join(dir, "board.txt"), BOARD());
  const out = path.join(dir, "out");
  const r = cli(["storyboard", "--model", TINY, "--board", path.join(dir, "board.txt"), "--out", out, "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const m = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  assert.equal(m.format, "flux2-storyboard/1");
  assert.deepEqual(m.frames.map((f: any) => [f.file, f.references, f.seed, f.width, f.height, f.start_s]),
    [["frames/01-shot01.png", ["Mara", "Harbour"], 5, 64, 64, 0], ["frames/02-shot02.png", ["Mara"], 5, 64, 64, 2], ["frames/03-shot03.png", ["Harbour"], 5, 64, 64, 4]]);
  const frames = m.frames.map((f: any) => fs.readFileSync(path.join(out, f.file)));
  for (const f of frames) assert.deepEqual([(await sharp(f).metadata()).width, (await sharp(f).metadata()).height], [64, 64]);
  assert.ok(!frames[0].equals(frames[1]) && !frames[1].equals(frames[2]), "the panels differ");
  const sheet = await sharp(path.join(out, "contact_sheet.png")).metadata();
  assert.equal(sheet.format, "png");
  assert.ok(sheet.width! > 3 * 300, `3 panels side by side, got ${sheet.width} px wide`);
  const pdf = fs.readFileSync(path.join(out, "contact_sheet.pdf"));
  assert.equal(pdf.subarray(0, 5).toString(), "%PDF-");
  assert.match(fs.readFileSync(path.join(out, "frames.ffconcat"), "utf8"), /^ffconcat version 1\.0\nfile 'frames\/01-shot01\.png'\nduration 2\n/);

  // Shot 2 with another seed, alone.
  fs.writeFileSync(path.join(dir, "board.txt"), BOARD("[seed 9] "));
  const again = cli(["storyboard", "--model", TINY, "--board", path.join(dir, "board.txt"), "--out", out, "--shot", "shot02", "--json"]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /re-made shot02/);
  assert.equal((again.stderr.match(/^panel /gm) ?? []).length, 1, "only one panel is generated");
  const after2 = m.frames.map((f: any) => fs.readFileSync(path.join(out, f.file)));
  assert.ok(after2[0].equals(frames[0]) && after2[2].equals(frames[2]), "shots 1 and 3 are byte-identical");
  assert.ok(!after2[1].equals(frames[1]), "shot 2 changed");
  assert.equal(JSON.parse(again.stdout.trim().split("\n").at(-1)!).frames[1].seed, 9);

  const bad = cli(["storyboard", "--model", TINY, "--board", path.join(dir, "board.txt"), "--out", out, "--shot", "nope"]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--shot nope: the board has no such shot \(it has shot01, shot02, shot03\)/);
});

test("flux2 storyboard --write-shots: the text encoder's LLM writes the shot list; an answer without numbered shots is refused, quoting it", () => {
  // The tiny checkpoint's random-weight text encoder generates, but not a shot list: the refusal path, end to end.
  const r = cli(["storyboard", "--model", TINY, "--brief", "Two thieves meet at a harbour at dawn", "--write-shots", "1", "--out", path.join(ROOT, "llm")]);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /writing 1 shots from the brief/);
  assert.match(r.stderr, /the text encoder's LLM wrote 0 numbered shot\(s\) where 1 were asked for \(it wrote: ".+"\); write the shot list yourself/);
  assert.ok(!fs.existsSync(path.join(ROOT, "llm", "manifest.json")), "nothing is exported");
});

const server = testServer();
after(async () => (await server).close());

test("POST /v1/storyboard: 3 shots + 2 named references → 3 panels and a contact sheet; re-making a shot leaves the others byte-identical", async () => {
  const s = await server;
  const mara = (await pngImage(96, 64)).toString("base64");
  const harbour = (await solid(path.join(ROOT, "h.png"), 30, 60, 200)).toString("base64");
  const board = { ...parseStoryboard(BOARD()), references: [
    { name: "Mara", kind: "character", image: mara, description: "a tall woman in a red coat" }, { name: "Harbour", kind: "place", image: harbour },
  ] };
  const sub = await api(s.url, "POST", "/v1/storyboard", board);
  assert.equal(sub.status, 200, JSON.stringify(sub.body));
  assert.deepEqual(sub.body.shots.map((x: any) => [x.id, x.references]), [["shot01", ["Mara", "Harbour"]], ["shot02", ["Mara"]], ["shot03", ["Harbour"]]]);
  // Each panel is an ordinary job with the references as its input images.
  const job = await api(s.url, "GET", `/v1/jobs/${sub.body.shots[0].job_id}`);
  assert.ok(job.body.request.input_image && job.body.request.input_image_2 && !job.body.request.input_image_3);
  assert.equal(job.body.request.seed, 5);

  const ready = async () => waitFor("the storyboard", async () => {
    const r = await api(s.url, "GET", `/v1/storyboard/${sub.body.id}`);
    assert.notEqual(r.body.status, "Error", JSON.stringify(r.body));
    return r.body.status === "Ready" ? r.body : null;
  }, 120_000, 200);
  const done = await ready();
  assert.equal(done.shots.length, 3);
  const bytes = async (url: string) => Buffer.from(await (await fetch(url)).arrayBuffer());
  const panels = await Promise.all(done.shots.map((x: any) => bytes(x.image)));
  // The same board through `flux2 storyboard` gives the same pixels: both fill one request per
  // shot (shotRequest) and hand it to the request layer.
  const cliDir = path.join(ROOT, "parity");
  fs.mkdirSync(cliDir);
  fs.writeFileSync(path.join(cliDir, "mara.png"), Buffer.from(mara, "base64"));
  fs.writeFileSync(path.join(cliDir, "harbour.png"), Buffer.from(harbour, "base64"));
  fs.writeFileSync(path.join(cliDir, "board.txt"), BOARD());
  const viaCli = cli(["storyboard", "--model", TINY, "--board", path.join(cliDir, "board.txt"), "--out", path.join(cliDir, "out"), "--json"]);
  assert.equal(viaCli.code, 0, viaCli.stderr);
  const cliFrames = JSON.parse(viaCli.stdout.trim().split("\n").at(-1)!).frames;
  assert.equal(cliFrames.length, panels.length);
  for (const [i, f] of cliFrames.entries()) {
    const a = await sharp(fs.readFileSync(path.join(cliDir, "out", f.file))).raw().toBuffer(), b = await sharp(panels[i]).raw().toBuffer();
    assert.ok(a.equals(b), `panel ${i + 1}: the CLI's and the server's pixels differ`);
  }
  const sheet = await fetch(done.exports.contact_sheet_png);
  assert.equal(sheet.headers.get("content-type"), "image/png");
  assert.ok((await sharp(Buffer.from(await sheet.arrayBuffer())).metadata()).width! > 900);
  assert.equal((await bytes(done.exports.contact_sheet_pdf)).subarray(0, 5).toString(), "%PDF-");
  const manifest = (await api(s.url, "GET", `/v1/storyboard/${sub.body.id}/manifest.json`)).body;
  assert.deepEqual(manifest.frames.map((f: any) => [f.file, f.url]), done.shots.map((x: any, i: number) => [`frames/0${i + 1}-${x.id}.png`, x.image]));

  const redo = await api(s.url, "POST", `/v1/storyboard/${sub.body.id}/shots/shot02`, { seed: 9 });
  assert.equal(redo.status, 200, JSON.stringify(redo.body));
  assert.deepEqual(redo.body.shots[1].previous_jobs, [done.shots[1].job_id]);
  assert.deepEqual([redo.body.shots[0].job_id, redo.body.shots[2].job_id], [done.shots[0].job_id, done.shots[2].job_id]);
  const done2 = await ready();
  const panels2 = await Promise.all(done2.shots.map((x: any) => bytes(x.image)));
  assert.ok(panels2[0].equals(panels[0]) && panels2[2].equals(panels[2]), "shots 1 and 3 are byte-identical");
  assert.ok(!panels2[1].equals(panels[1]), "shot 2 changed");
  assert.equal(done2.shots[1].seed, 9);
});

test("POST /v1/storyboard refuses what it cannot do, naming the field", async () => {
  const s = await server;
  const unknownRef = await api(s.url, "POST", "/v1/storyboard", { references: [], shots: [{ prompt: "x", references: ["Zed"] }] });
  assert.equal(unknownRef.status, 422);
  assert.match(JSON.stringify(unknownRef.body), /Zed/);
  const extra = await api(s.url, "POST", "/v1/storyboard", { shots: [{ prompt: "x" }], colour: "red" });
  assert.equal(extra.status, 422);
  assert.deepEqual(extra.body.detail[0].loc, ["body", "colour"]);
  const badImage = await api(s.url, "POST", "/v1/storyboard", { references: [{ name: "A", image: "not base64!" }], shots: [{ prompt: "A walks" }] });
  assert.equal(badImage.status, 422, JSON.stringify(badImage.body));
  assert.equal(badImage.body.detail[0].loc[1], "shots");
  const missing = await api(s.url, "GET", "/v1/storyboard/00000000-0000-0000-0000-000000000000");
  assert.equal(missing.status, 404);
});
