// The "Run in this browser" toggle: this device's capabilities, the model download (once, with
// progress; cached for the next visit) and which engine runs.
import { useEffect, useState } from "react";
import { loadBundle, type Capabilities, type DownloadProgress, type LocalModel } from "./engine";

export interface LocalState {
  enabled: boolean;
  device: "cpu" | "webgpu";
  model: LocalModel | null;
  progress: DownloadProgress | null;
  loading: boolean;
  error: string | null;
}

export const LOCAL_KEY = "flux2.studio.local";

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

export function LocalRun({ state, onToggle, onDevice }: { state: LocalState; onToggle: (on: boolean) => void; onDevice: (d: "cpu" | "webgpu") => void }) {
  const [caps, setCaps] = useState<Capabilities | null>(null);
  const [capsError, setCapsError] = useState<string | null>(null);
  useEffect(() => {
    if (!state.enabled || caps) return;
    loadBundle().then((b) => b.deviceCapabilities()).then(setCaps, (e: Error) => setCapsError(e.message));
  }, [state.enabled, caps]);
  const p = state.progress;
  return (
    <fieldset className="panel local-run" data-testid="local-run">
      <legend>Where it runs</legend>
      <label>
        <input type="checkbox" checked={state.enabled} onChange={(e) => onToggle(e.target.checked)} data-testid="local-toggle" />
        {" "}Run in this browser (no server generation; the model is downloaded once and cached)
      </label>
      {state.enabled && (
        <div className="hint" data-testid="local-status">
          {capsError && <p className="error">Cannot load the in-browser engine: {capsError}</p>}
          {caps && (
            <p data-testid="local-caps">
              WebGPU: {caps.webgpu ? `yes (${caps.adapter}; storage buffers up to ${caps.maxBufferBytes ? mb(caps.maxBufferBytes) : "?"})` : "no adapter"} ·
              {" "}WASM threads: {caps.threads}{caps.crossOriginIsolated ? " (cross-origin isolated)" : " (page not cross-origin isolated)"} ·
              {" "}memory: {caps.deviceMemoryGiB ? `${caps.deviceMemoryGiB} GB or more` : "not told"}
            </p>
          )}
          {caps?.webgpu && (
            <label>Engine{" "}
              <select value={state.device} onChange={(e) => onDevice(e.target.value as "cpu" | "webgpu")} data-testid="local-device">
                <option value="cpu">WebAssembly (CPU)</option>
                <option value="webgpu">WebGPU</option>
              </select>
            </label>
          )}
          {state.loading && p && (
            <p>
              <progress max={p.total} value={p.loaded} data-testid="local-download" /> {p.fromCache ? "from cache" : "downloading"} {p.file}: {mb(p.loaded)} of {mb(p.total)}
            </p>
          )}
          {state.loading && !p && <p>Loading the engine…</p>}
          {state.model && (
            <p data-testid="local-ready">
              {state.model.id} ready in this tab ({state.model.device === "webgpu" ? "WebGPU" : "WebAssembly"}):
              {" "}{state.model.download.files} files, {mb(state.model.download.bytes)}
              {state.model.download.downloadedBytes ? `, ${mb(state.model.download.downloadedBytes)} downloaded` : ", all from the cache"}
              {state.model.download.storage ? ` (kept in ${state.model.download.storage === "opfs" ? "the origin private file system (OPFS)" : "Cache Storage"})` : ""}
              {state.model.download.cacheUnavailable ? ` (not cached: ${state.model.download.cacheUnavailable})` : ""}.
            </p>
          )}
          {state.error && <p className="error" role="alert" data-testid="local-error">{state.error}</p>}
        </div>
      )}
    </fieldset>
  );
}
