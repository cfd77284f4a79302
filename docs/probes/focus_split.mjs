// Analysis helper behind docs/flux2-mini.md, session 28; not part of the package or the tests.
// Usage (after npm run build): node docs/probes/focus_split.mjs GROUP EVAL.json [EVAL.json ...]
// Splits `flux2 eval --json`'s 100 emoji cases by whether the emoji is in emojibase group GROUP
// (food-drink: version 8's focus stage reads those 105 more times per epoch), so that a score
// raised by training one group harder can be read apart from the rest. For each file it prints
// the top-5 count and median rank of each part, and the red apple's rank.
import fs from "node:fs";
const dist = new URL("../../dist/src/", import.meta.url);
const { listEmoji } = await import(new URL("mini/emoji.js", dist));
const { evalPlan } = await import(new URL("mini/eval_plan.js", dist));
const [group, ...files] = process.argv.slice(2);
if (!group || !files.length) { console.error("usage: node docs/probes/focus_split.mjs GROUP EVAL.json [EVAL.json ...]"); process.exit(2); }
const groupOf = new Map(listEmoji().map((e) => [e.code, e.group]));
if (![...groupOf.values()].includes(group)) { console.error(`no emoji group "${group}"`); process.exit(2); }
const inGroup = new Set(evalPlan().emoji.filter((c) => groupOf.get(c.code) === group).map((c) => c.prompt));
const median = (r) => { r = [...r].sort((a, b) => a - b); return r.length ? (r[(r.length - 1) >> 1] + r[r.length >> 1]) / 2 : NaN; };
for (const file of files) {
  const cases = JSON.parse(fs.readFileSync(file, "utf8")).cases.filter((c) => c.measure === "emoji")
    .map((c) => ({ ...c, rank: Number(/rank (\d+)/.exec(c.detail)[1]) }));
  const part = (want) => {
    const p = cases.filter((c) => inGroup.has(c.prompt) === want);
    return `${p.filter((c) => c.pass).length}/${p.length} (median rank ${median(p.map((c) => c.rank))})`;
  };
  const apple = cases.find((c) => c.prompt === "a red apple");
  console.log(`${file}: ${group} ${part(true)}, the rest ${part(false)}, all ${cases.filter((c) => c.pass).length}/${cases.length}; a red apple: rank ${apple ? apple.rank : "-"}`);
}
