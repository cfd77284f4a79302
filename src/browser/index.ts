// flux2.ts in a browser tab: dist/browser/flux2.js (ESM), built by `npm run build`
// (browser.vite.config.ts). The same engine as the Node package, on ONNX Runtime Web.
//
//   import { loadModel, encodePng } from "./flux2.js";
//   const pipe = await loadModel("/v1/files/flux2-mini", { onProgress: (p) => console.log(p.loaded / p.total) });
//   const { images } = await pipe.generate({ prompt: "a red fox in the snow", seed: 42 });
//   const png = await encodePng(images[0].rgb, images[0].width, images[0].height, "a red fox in the snow");
import "./globals.js";
import type { Flux2Pipeline } from "../pipeline/flux2.js";
import { loadPipeline } from "../loaders/pretrained.js";
import { OrtWebBackend, type OrtWebBackendOptions } from "../backend/ort_web.js";
import { downloadModel, type DownloadOptions, type DownloadReport } from "./model_store.js";

export { Flux2Pipeline, validateSize, MAX_PIXELS } from "../pipeline/flux2.js";
export { InvalidRequestError } from "../util/errors.js";
export type { GenerateOptions, GenerateResult, GeneratedImage, StepInfo, InitImage } from "../pipeline/flux2.js";
export type { ReferenceImage } from "../pipeline/reference.js";
export { formatParameters, parseParameters, VERSION } from "../pipeline/metadata.js";
export { OrtWebBackend, deviceCapabilities, type DeviceCapabilities, type OrtWebBackendOptions } from "../backend/ort_web.js";
export { downloadModel, fetchManifest, type DownloadProgress, type DownloadReport, type Manifest, type StorageChoice, type StorageKind } from "./model_store.js";
export { encodePng, decodeImage, readPngText, insertPngText } from "./png.js";

export interface LoadedModel {
  pipeline: Flux2Pipeline;
  download: DownloadReport;
}

/**
 * Load a model from a URL serving its folder (`GET <url>/files.json` + the files, with Range
 * support; `flux2 serve` does this at /v1/files/<model>): files are downloaded once, cached,
 * and reused on the next visit.
 */
export async function loadModel(url: string, opts: DownloadOptions & { backend?: OrtWebBackendOptions; keepLoaded?: boolean } = {}): Promise<LoadedModel> {
  const download = await downloadModel(url, opts);
  const pipeline = loadPipeline(download.folder, { backend: new OrtWebBackend(opts.backend), keepLoaded: opts.keepLoaded ?? true });
  return { pipeline, download };
}
