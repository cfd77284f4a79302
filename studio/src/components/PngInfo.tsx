// "PNG info" (as A1111 calls it): every text chunk a gallery image carries, with flux2's JSON record
// shown field by field, read from the image file itself.

import { useEffect, useState } from "react";
import { readPngText } from "../png";

export function PngInfo({ url, onClose }: { url: string; onClose: () => void }) {
  const [chunks, setChunks] = useState<Record<string, string> | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    fetch(url).then((r) => { if (!r.ok) throw new Error(`${r.status} ${r.statusText}`); return r.arrayBuffer(); })
      .then(readPngText).then((c) => live && setChunks(c), (e: Error) => live && setError(e.message));
    return () => { live = false; };
  }, [url]);
  let record: Record<string, unknown> | null = null;
  try { if (chunks?.flux2) record = JSON.parse(chunks.flux2) as Record<string, unknown>; } catch { /* shown raw below */ }
  const show = (v: unknown) => (typeof v === "string" ? v : JSON.stringify(v));
  return (
    <div className="png-info" role="dialog" aria-label="PNG info" data-testid="png-info">
      <div className="row spread">
        <h3>PNG info</h3>
        <button type="button" onClick={onClose}>Close</button>
      </div>
      {error && <p className="error" role="alert">Could not read the image: {error}</p>}
      {!chunks && !error && <p className="hint">Reading…</p>}
      {record && (
        <dl className="params" data-testid="png-info-record">
          {Object.entries(record).map(([k, v]) => <div key={k}><dt>{k}</dt><dd>{show(v)}</dd></div>)}
        </dl>
      )}
      {chunks && Object.entries(chunks).filter(([k]) => !(k === "flux2" && record)).map(([k, v]) => (
        <div key={k}><h4>{k}</h4><pre className="json">{v}</pre></div>
      ))}
      {chunks && !Object.keys(chunks).length && <p className="hint">This image carries no text chunks.</p>}
    </div>
  );
}
