// Node globals the engine touches, for the browser bundle. Imported first by ./index.ts, so
// these exist before any engine module runs. Buffer comes from the `buffer` package (the
// standard browser implementation of Node's Buffer); `process` carries only what the engine
// reads (env for cache / default-model settings, pid for temporary names).
import { Buffer } from "buffer";

const g = globalThis as unknown as { Buffer?: unknown; process?: { env: Record<string, string | undefined>; pid: number; platform: string } };
g.Buffer ??= Buffer;
g.process ??= { env: {}, pid: 1, platform: "browser" };
