// flux2 conformance DIR [--kinds K1,K2,…] [--cases S1,S2,…] [--write-outputs OUT]

import { parseArgs } from "node:util";
import { runConformance } from "../conformance/runner.js";

const HELP = `usage: flux2 conformance DIR [--kinds K1,K2,...] [--cases NAME,...] [--write-outputs OUT]

Runs every case of the golden set in DIR (a folder with cases.json) through the
engine and compares each expected tensor and image under the case's tolerance.
Prints one line per case (PASS / FAIL / MISSING, name, worst tensor, max abs
error) and ends with "N passed, M failed". Exits 1 if any case failed.

  --kinds K1,K2        only cases of these kinds (e.g. transformer,vae_encode)
  --cases S1,S2        only cases whose name contains one of these strings
  --write-outputs OUT  write OUT/<case>.safetensors and OUT/<image path> for
                       every case run (works on a set without expected files)
  -h, --help           this text`;

export async function runConformanceCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      kinds: { type: "string" },
      cases: { type: "string" },
      "write-outputs": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (positionals.length !== 1) {
    console.error(HELP);
    return 2;
  }
  const list = (s?: string) => (s ? s.split(",").map((x) => x.trim()).filter(Boolean) : undefined);
  const summary = await runConformance(positionals[0], {
    kinds: list(values.kinds),
    cases: list(values.cases),
    writeOutputs: values["write-outputs"],
  });
  return summary.failed > 0 ? 1 : 0;
}
