// Where the native addon's build (scripts/build-native.ts) looks for Node's headers, in one place:
// test/native_bf16.test.ts asks the same question to know whether the addon can be built here.

import * as fs from "node:fs";
import * as path from "node:path";

/** Folders that may hold node_api.h: beside the running node binary, then the system's. */
export const NODE_HEADER_DIRS = [path.resolve(path.dirname(process.execPath), "../include/node"), "/usr/include/node", "/usr/local/include/node"];

/** The first of NODE_HEADER_DIRS that holds node_api.h, if any. */
export function nodeHeaderDir(): string | undefined {
  return NODE_HEADER_DIRS.find((d) => fs.existsSync(path.join(d, "node_api.h")));
}
