// Running a measurement in a child process (a bench stage in node, the PyTorch step in python):
// its stderr is progress, passed through; its stdout carries one JSON result line.

import { spawn } from "node:child_process";

/**
 * Spawn `cmd args`, echo its stderr lines, and resolve with the JSON that `resultLine` finds in its
 * stdout (the text after `prefix`); a non-zero exit or no result line rejects with `what` and the stderr tail.
 */
export function runForJson<T>(cmd: string, args: string[], what: string, echo: (s: string) => void,
                              resultLine: (stdout: string) => string | undefined): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "", err = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => {
      err += d;
      for (const line of String(d).split("\n")) if (line.trim()) echo(`  ${line}`);
    });
    child.on("error", reject);
    child.on("close", (code) => {
      const json = resultLine(out);
      if (code === 0 && json !== undefined) resolve(JSON.parse(json));
      else reject(new Error(`${what} failed with exit code ${code}${err ? `:\n${err.slice(-2000)}` : ""}`));
    });
  });
}
