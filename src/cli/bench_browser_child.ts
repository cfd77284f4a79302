// Child process of `flux2 bench --browser` (src/bench/browser.ts): the Node side of the comparison.
import { nodeChild } from "./bench_browser.js";

await nodeChild(JSON.parse(process.argv[2]));
