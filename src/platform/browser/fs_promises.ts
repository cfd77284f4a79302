// `node:fs/promises` for the browser bundle: the in-memory file system of ./fs.ts.
import { readFileSync } from "./fs.js";

export async function readFile(path: string, encoding?: string): Promise<any> {
  return readFileSync(path, encoding);
}
