// Analysis script behind docs/flux2-mini.md, session 15; not part of the package or the tests.
// Usage: node docs/probes/colour_variance.mjs DATA/train   (a flux2-mini training folder: N_name/ subfolders)
//
// The covariance of pixel colour (RGB in [-1, 1]) over up to 1,500 PNGs per subfolder, each
// weighted by the folder's repeat count (its N_ prefix), and the variance along brightness and
// three opponent directions: an MSE-trained autoencoder learns the directions with the least
// variance last.
import { createRequire } from "node:module";
import fs from "node:fs";
const sharp = createRequire(new URL("../../package.json", import.meta.url))("sharp");
const root = process.argv[2];
if (!root) { console.error("usage: node docs/probes/colour_variance.mjs DATA/train"); process.exit(2); }
let n = 0; const s = [0,0,0], ss = [[0,0,0],[0,0,0],[0,0,0]];
for (const d of fs.readdirSync(root)) {
  const files = fs.readdirSync(`${root}/${d}`).filter(f => f.endsWith(".png"));
  const rep = Number(d.split("_")[0]);
  for (const f of files.slice(0, 1500)) {
    const { data } = await sharp(`${root}/${d}/${f}`).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    for (let i = 0; i < data.length; i += 3) { const v = [data[i]/127.5-1, data[i+1]/127.5-1, data[i+2]/127.5-1];
      for (let a=0;a<3;a++){ s[a]+=v[a]*rep; for (let b=0;b<3;b++) ss[a][b]+=v[a]*v[b]*rep; } n+=rep; }
  }
}
const m = s.map(x=>x/n); const C = ss.map((r,a)=>r.map((x,b)=>x/n - m[a]*m[b]));
console.log("mean", m.map(x=>x.toFixed(3)), "cov", C.map(r=>r.map(x=>x.toFixed(4))));
const dirs = { lum:[1,1,1], blueYellow:[1,1,-2], redCyan:[2,-1,-1], greenMagenta:[-1,2,-1], rMinusG:[1,-1,0] };
for (const [k,v] of Object.entries(dirs)) { const nn=Math.hypot(...v); const u=v.map(x=>x/nn); let q=0; for(let a=0;a<3;a++)for(let b=0;b<3;b++)q+=u[a]*C[a][b]*u[b]; console.log(k, q.toFixed(4)); }
