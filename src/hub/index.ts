// Downloading FLUX.2 repositories from the Hugging Face Hub (`flux2 pull`).
export { pull, MANIFEST_NAME, type PullOptions, type PullResult, type PulledFile, type PulledStatus } from "./pull.js";
export { PullError, type PullErrorKind } from "./errors.js";
export { selectFiles, globToRegExp, matchesAnyGlob, type Selection, type SelectableFile } from "./select.js";
export { FileHasher, hashFile, checksumProblem, gitBlobSha1, type Expected, type Digest } from "./verify.js";
export { Progress, formatBytes } from "./progress.js";
