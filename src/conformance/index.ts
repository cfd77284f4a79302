// "flux2/conformance": run a golden case set (testdata/golden) through the engine and compare
// with the reference's outputs, as `flux2 conformance DIR` does.

export { runConformance, type RunOptions, type RunSummary, type CaseReport, type Status } from "./runner.js";
