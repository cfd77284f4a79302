// Analysis script behind the apple test in test/flux2_mini.test.ts (docs/flux2-mini.md, session 28);
// not part of the package or the tests.
// Usage (after npm run build): node docs/probes/apple_probe.mjs MODEL [SEEDS]
// "a red apple" for seeds 0..SEEDS-1 (default 8), each read two ways: the rank of the apple emoji
// (1f34e) among the 1,906 training emoji in the eval's retrieval feature space, and the share of
// the picture's top third that is leaf green (CIELAB hue 100–160°, chroma ≥ 20), where the
// training picture has its stem and leaf and a red blob has none.
const dist = new URL("../../dist/src/", import.meta.url);
const lib = await import(new URL("index.js", dist));
const { emojiGallery, thumbnailFeature, rankOf } = await import(new URL("eval/retrieval.js", dist));
const { listEmoji, emojiRgb } = await import(new URL("mini/emoji.js", dist));
const { leafShare } = await import(new URL("eval/metrics.js", dist));
const [model, seedsArg = "8"] = process.argv.slice(2);
if (!model) throw new Error("usage: node docs/probes/apple_probe.mjs MODEL [SEEDS]");
const all = listEmoji();
const gallery = await emojiGallery(all, 64);
const target = all.findIndex((e) => e.code === "1f34e");
const truth = await emojiRgb(all[target], 64);
console.log(`the training picture: leaf share ${(100 * leafShare({ rgb: truth, width: 64, height: 64 })).toFixed(1)}%`);
const pipe = await lib.load(model, { threads: 2 });
for (let seed = 0; seed < Number(seedsArg); seed++) {
  const im = (await lib.generate(pipe, { prompt: "a red apple", seed })).images[0];
  console.log(`seed ${seed}: rank ${rankOf(thumbnailFeature(im), gallery, target) + 1}, leaf share ${(100 * leafShare(im)).toFixed(1)}%`);
}
await pipe.release();
