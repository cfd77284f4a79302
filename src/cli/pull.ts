// flux2 pull REPO_ID [--dir DIR] [--revision REV] [--include GLOB …] [--token T]

import { parseArgs } from "node:util";
import { pull } from "../hub/pull.js";
import { PullError } from "../hub/errors.js";

const HELP = `usage: flux2 pull REPO_ID [--dir DIR] [--revision REV] [--include GLOB ...] [--token T]

Downloads a FLUX.2 repository from the Hugging Face Hub (for example
black-forest-labs/FLUX.2-klein-4B) into a folder that \`flux2 generate --model
DIR\` opens.

Every file is written to DIR/<path>.incomplete first and renamed once its
checksum is right: the sha256 the Hub lists for LFS files (the weights), the
git blob sha1 and size for the others. A mismatch deletes the download and
fails. An interrupted download (network, Ctrl-C, full disk) keeps its
.incomplete file, and the next run continues it with an HTTP Range request.
Files already complete are skipped: DIR/.flux2-pull.json records what was
verified, so a re-run only lists the repository (a file found without a record
is hashed once).

Which files: by default all of them, except, in a diffusers repository (one
with model_index.json), the weights flux2.ts never reads:
  - weight files at the root (flux-2-klein-4b.safetensors, flux2-dev.safetensors,
    ae.safetensors, *.gguf ...): the BFL single-file checkpoints, the same
    weights as transformer/ and vae/ in another layout — often the biggest
    files of the repository;
  - .bin/.pt/.pth/.ckpt/.msgpack/.h5/.onnx/.gguf weights in a folder that also
    has .safetensors weights (the same tensors, in a format flux2.ts ignores).
--include replaces these rules: exactly the files matching a glob are taken.

  REPO_ID              owner/name on the Hub (a https://huggingface.co/ URL works too)
  --dir DIR            target folder (default: ./<name>, e.g. ./FLUX.2-klein-4B)
  --revision REV       branch, tag or commit to download (default: main)
  --include GLOB       take only files matching GLOB; repeat the flag, or list
                       more globs after the first (--include 'a/*' 'b/*').
                       fnmatch rules as in huggingface-cli: * matches any
                       characters including /, ? one character, [abc] a class;
                       a glob matching a folder takes all of it. '*' takes
                       every file, the single-file checkpoints included;
                       'flux-2-klein-4b.safetensors' only the BFL file
  --token T            Hub access token (hf_...) for gated or private
                       repositories (default: $HF_TOKEN). FLUX.2 repositories
                       are gated: accept the license on the model's Hub page
                       with your account first
  --endpoint URL       the Hub's address (default: $HF_ENDPOINT, else
                       https://huggingface.co), e.g. a mirror
  --retries N          automatic resumes of a broken transfer before giving up
                       (default 3; the next run resumes anyway)
  --dry-run            list what would be downloaded, download nothing
  -q, --quiet          no progress output (errors are still printed)
  -h, --help           this text

Progress goes to stderr: a redrawn status line on a terminal (file, bar,
bytes done/total, speed, ETA, overall percentage), plain lines otherwise.
Exit status: 0 done, 1 failed (the message says why), 2 bad arguments.`;

export async function runPullCommand(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        dir: { type: "string" },
        revision: { type: "string" },
        include: { type: "string", multiple: true },
        token: { type: "string" },
        endpoint: { type: "string" },
        retries: { type: "string" },
        "dry-run": { type: "boolean" },
        quiet: { type: "boolean", short: "q" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    console.error(`flux2 pull: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const include = values.include ?? [];
  if (positionals.length === 0 || (positionals.length > 1 && include.length === 0)) {
    console.error(positionals.length === 0 ? HELP : `flux2 pull: one repository at a time (got ${positionals.join(" ")})\n\n${HELP}`);
    return 2;
  }
  // Bare arguments after the first --include are more globs, as with huggingface-cli.
  include.push(...positionals.slice(1));
  let retries: number | undefined;
  if (values.retries !== undefined) {
    retries = Number(values.retries);
    if (!Number.isInteger(retries) || retries < 0) {
      console.error(`flux2 pull: --retries wants a whole number ≥ 0, got ${JSON.stringify(values.retries)}`);
      return 2;
    }
  }
  // Ctrl-C: stop the transfer cleanly (the .incomplete file stays for the next run); a second one kills.
  const stop = new AbortController();
  const onSigint = () => stop.abort(new PullError("interrupted", "stopped by Ctrl-C"));
  process.once("SIGINT", onSigint);
  try {
    await pull({
      repo: positionals[0],
      dir: values.dir,
      revision: values.revision,
      include: include.length > 0 ? include : undefined,
      token: values.token,
      hubUrl: values.endpoint,
      retries,
      dryRun: values["dry-run"],
      progress: values.quiet ? null : process.stderr,
      signal: stop.signal,
    });
    return 0;
  } catch (e) {
    if (e instanceof PullError) {
      console.error(`flux2 pull: ${e.message}`);
      return e.kind === "usage" ? 2 : 1;
    }
    throw e;
  } finally {
    process.removeListener("SIGINT", onSigint);
  }
}
