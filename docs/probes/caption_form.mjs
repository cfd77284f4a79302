// Analysis script behind a table in docs/flux2-mini.md (session 18); not part of the package or the tests.
// Usage (after npm run build): node docs/probes/caption_form.mjs MODEL [sizes]
// Which caption forms make the model draw the shape they name: squares, triangles, stars and rings in
// six forms (hex form, in the centre, on the left; hex code or colour word), three colours, seed 0,
// each picture classified by the eval's own shape classifier. With "sizes": layout-form prompts of
// trained shape-and-place pairs with the size word said (small, medium, large) or not.
const dist = new URL("../../dist/src/", import.meta.url);
const lib = await import(new URL("index.js", dist));
const { findShape, classifyShape } = await import(new URL("eval/metrics.js", dist));
const [model, sizes] = process.argv.slice(2);
if (!model) throw new Error("usage: node docs/probes/caption_form.mjs MODEL [sizes]");
const pipe = await lib.load(model, { threads: 1 });
const drawn = async (prompt, seed = 0) => {
  const im = (await lib.generate(pipe, { prompt, seed })).images[0];
  const f = findShape({ rgb: im.rgb, width: im.width, height: im.height });
  return f.region ? classifyShape(f.region, im.width, im.height, f.box).shape : "nothing";
};
const colours = [["red", "#D62020"], ["blue", "#2040D0"], ["green", "#20A040"]];
const forms = {
  "the hex form": (word, hex, shape) => `a ${hex} ${shape} on a white background`,
  "hex colour, in the centre": (word, hex, shape) => `a ${hex} ${shape} in the centre, on a white background`,
  "colour word, in the centre": (word, hex, shape) => `a ${word} ${shape} in the centre, on a white background`,
  "colour word, no place": (word, hex, shape) => `a ${word} ${shape} on a white background`,
  "hex colour, on the left": (word, hex, shape) => `a ${hex} ${shape} on the left, on a white background`,
  "colour word, on the left": (word, hex, shape) => `a ${word} ${shape} on the left, on a white background`,
};
for (const [name, form] of Object.entries(forms)) {
  const right = {};
  let n = 0;
  for (const shape of ["square", "triangle", "star", "ring"]) for (const [word, hex] of colours) {
    n++;
    if ((await drawn(form(word, hex, shape))) === shape) right[shape] = (right[shape] ?? 0) + 1;
  }
  console.log(`${name.padEnd(28)} ${Object.values(right).reduce((a, b) => a + b, 0)}/${n} ${JSON.stringify(right)}`);
}
if (sizes) {
  // Trained pairs only (none of src/mini/scenes.ts HELD_OUT_LAYOUTS).
  const pairs = [["square", "at the top"], ["square", "on the left"], ["triangle", "at the top"], ["triangle", "on the right"], ["star", "on the left"],
    ["star", "at the bottom"], ["ring", "on the left"], ["ring", "at the top"], ["circle", "on the left"], ["circle", "at the top"]];
  for (const size of ["", "small ", "medium ", "large "]) {
    let right = 0, n = 0;
    for (const [shape, place] of pairs) for (const [word] of colours.slice(0, 2)) {
      n++;
      if ((await drawn(`a ${size}${word} ${shape} ${place}, on a white background`)) === shape) right++;
    }
    console.log(`size ${(size.trim() || "not said").padEnd(9)} ${right}/${n}`);
  }
}
await pipe.release();
