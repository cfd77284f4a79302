// Which files of a repository listing `flux2 pull` downloads.
//
// Default (no --include): everything, except — when the repository is a
// diffusers folder (it has a root model_index.json) — weight files that no
// flux2.ts run reads:
//  - weight files at the repository root (flux-2-klein-4b.safetensors,
//    flux2-dev.safetensors, ae.safetensors, *.gguf …): the BFL single-file
//    checkpoints, duplicates of transformer/ and vae/ in another layout;
//  - non-safetensors weights (*.bin, *.pt, *.pth, *.ckpt, *.msgpack, *.h5,
//    *.onnx, *.gguf and their *.index.json) inside a folder that also holds
//    .safetensors weights: the same tensors in a format flux2.ts never opens.
// With --include, exactly the files matching one of the globs are taken.

export interface SelectableFile {
  path: string;
  size: number;
}

export interface Selection<T extends SelectableFile> {
  selected: T[];
  /** Files left out, each with the reason shown to the user. */
  skipped: { file: T; reason: string }[];
}

const WEIGHT_EXT = /\.(safetensors|sft|ckpt|pt|pth|bin|gguf|onnx|onnx_data|msgpack|h5|pkl)$/i;
const NON_SAFETENSORS_WEIGHT = /\.(ckpt|pt|pth|bin|gguf|onnx|onnx_data|msgpack|h5|pkl)(\.index\.json)?$/i;

function dirOf(p: string): string {
  const i = p.lastIndexOf("/");
  return i < 0 ? "" : p.slice(0, i);
}

/**
 * A glob as `huggingface-cli download --include` reads it (Python fnmatch):
 * `*` matches any run of characters, `/` included; `?` one character; `[abc]`,
 * `[a-z]`, `[!abc]` a character class. A pattern also matches every file under
 * a folder it matches, so `transformer`, `transformer/` and `trans*` all take
 * the whole transformer/ folder.
 */
export function globToRegExp(glob: string): RegExp {
  let pat = glob.replace(/^\.\//, "");
  if (pat.endsWith("/")) pat = pat.slice(0, -1);
  let re = "";
  for (let i = 0; i < pat.length; i++) {
    const c = pat[i];
    if (c === "*") {
      while (pat[i + 1] === "*") i++;
      re += ".*";
    } else if (c === "?") {
      re += ".";
    } else if (c === "[") {
      const close = pat.indexOf("]", i + 2);
      if (close < 0) {
        re += "\\[";
        continue;
      }
      let body = pat.slice(i + 1, close);
      const negate = body.startsWith("!");
      if (negate) body = body.slice(1);
      body = body.replace(/[\\\]^]/g, (m) => "\\" + m);
      re += `[${negate ? "^" : ""}${body}]`;
      i = close;
    } else {
      re += c.replace(/[.+^${}()|\\]/g, (m) => "\\" + m);
    }
  }
  return new RegExp(`^${re}(?:/.*)?$`, "s");
}

export function matchesAnyGlob(filePath: string, globs: readonly string[]): boolean {
  return globs.some((g) => globToRegExp(g).test(filePath));
}

/** Apply --include globs, or the default rules above when there are none. */
export function selectFiles<T extends SelectableFile>(files: readonly T[], include?: readonly string[]): Selection<T> {
  const selected: T[] = [];
  const skipped: { file: T; reason: string }[] = [];
  if (include && include.length > 0) {
    const res = include.map(globToRegExp);
    for (const f of files) {
      if (res.some((r) => r.test(f.path))) selected.push(f);
      else skipped.push({ file: f, reason: "not matched by --include" });
    }
    return { selected, skipped };
  }
  const isDiffusers = files.some((f) => f.path === "model_index.json");
  if (!isDiffusers) return { selected: [...files], skipped };
  const safetensorsDirs = new Set(files.filter((f) => /\.safetensors$/i.test(f.path)).map((f) => dirOf(f.path)));
  for (const f of files) {
    const dir = dirOf(f.path);
    if (dir === "" && WEIGHT_EXT.test(f.path)) {
      skipped.push({ file: f, reason: "single-file checkpoint at the root; the diffusers folders hold the same weights" });
    } else if (dir !== "" && safetensorsDirs.has(dir) && NON_SAFETENSORS_WEIGHT.test(f.path)) {
      skipped.push({ file: f, reason: `duplicate of the .safetensors weights in ${dir}/, in a format flux2.ts does not read` });
    } else {
      selected.push(f);
    }
  }
  return { selected, skipped };
}
