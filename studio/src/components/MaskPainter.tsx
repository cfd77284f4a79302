import { useEffect, useRef, useState, type PointerEvent } from "react";
import type { Reference } from "../images";

interface Props {
  image: Reference;
  onChange: (mask: string | null) => void;
  /** The current mask (a PNG data URL, white = repaint), e.g. restored by Reuse; null = none. */
  value: string | null;
}

/**
 * A brush over the first reference image. The stroke canvas has the image's
 * own size; the exported mask is that canvas on black, as a PNG: white =
 * repaint, black = keep (the server's `mask_image` convention).
 */
export function MaskPainter({ image, onChange, value }: Props) {
  const hasMask = !!value;
  /** The last mask this painter exported: a different value came from outside and is drawn in. */
  const exported = useRef<string | null>(null);
  const canvas = useRef<HTMLCanvasElement>(null);
  const [brush, setBrush] = useState(Math.max(4, Math.round(Math.min(image.width, image.height) / 12)));
  const [erase, setErase] = useState(false);
  const drawing = useRef<{ x: number; y: number } | null>(null);

  // A new first image starts a new, empty mask.
  useEffect(() => {
    const c = canvas.current;
    if (!c) return;
    c.width = image.width;
    c.height = image.height;
    c.getContext("2d")!.clearRect(0, 0, c.width, c.height);
    exported.current = null;
  }, [image.id, image.width, image.height]);

  // A mask given from outside (Reuse): white pixels become painted strokes.
  useEffect(() => {
    const c = canvas.current;
    if (!c || !value || value === exported.current) return;
    let live = true;
    const img = new Image();
    img.onload = () => {
      if (!live) return;
      const ctx = c.getContext("2d")!;
      ctx.clearRect(0, 0, c.width, c.height);
      ctx.drawImage(img, 0, 0, c.width, c.height);
      const d = ctx.getImageData(0, 0, c.width, c.height);
      for (let i = 0; i < d.data.length; i += 4) {
        const lum = (d.data[i] + d.data[i + 1] + d.data[i + 2]) / 3;
        d.data[i] = d.data[i + 1] = d.data[i + 2] = 255;
        d.data[i + 3] = lum >= 128 ? 255 : 0;
      }
      ctx.putImageData(d, 0, 0);
      exported.current = value;
    };
    img.src = value;
    return () => { live = false; };
  }, [value, image.id]);

  const point = (e: PointerEvent<HTMLCanvasElement>) => {
    const c = e.currentTarget;
    const r = c.getBoundingClientRect();
    return { x: ((e.clientX - r.left) / r.width) * c.width, y: ((e.clientY - r.top) / r.height) * c.height };
  };

  const stroke = (from: { x: number; y: number }, to: { x: number; y: number }) => {
    const ctx = canvas.current!.getContext("2d")!;
    ctx.globalCompositeOperation = erase ? "destination-out" : "source-over";
    ctx.strokeStyle = "#fff";
    ctx.fillStyle = "#fff";
    ctx.lineWidth = brush;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x + 0.01, to.y);
    ctx.stroke();
  };

  const exportMask = () => {
    const c = canvas.current!;
    const ctx = c.getContext("2d")!;
    const px = ctx.getImageData(0, 0, c.width, c.height).data;
    let any = false;
    for (let i = 3; i < px.length; i += 4) if (px[i]) { any = true; break; }
    if (!any) { exported.current = null; return onChange(null); }
    const out = document.createElement("canvas");
    out.width = c.width;
    out.height = c.height;
    const o = out.getContext("2d")!;
    o.fillStyle = "#000";
    o.fillRect(0, 0, out.width, out.height);
    o.drawImage(c, 0, 0);
    const url = out.toDataURL("image/png");
    exported.current = url;
    onChange(url);
  };

  const fill = (on: boolean) => {
    const c = canvas.current!;
    const ctx = c.getContext("2d")!;
    ctx.globalCompositeOperation = "source-over";
    ctx.clearRect(0, 0, c.width, c.height);
    if (on) { ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, c.width, c.height); }
    exportMask();
  };

  const invert = () => {
    const c = canvas.current!;
    const ctx = c.getContext("2d")!;
    const d = ctx.getImageData(0, 0, c.width, c.height);
    for (let i = 0; i < d.data.length; i += 4) {
      d.data[i] = d.data[i + 1] = d.data[i + 2] = 255;
      d.data[i + 3] = 255 - d.data[i + 3];
    }
    ctx.putImageData(d, 0, 0);
    exportMask();
  };

  return (
    <div className="mask" data-testid="mask-painter">
      {/* Width and height both follow the image: as wide as the panel allows, no taller than 22rem, at the image's own ratio. */}
      <div className="mask-stage" data-testid="mask-stage"
        style={{ aspectRatio: `${image.width} / ${image.height}`, width: `min(100%, calc(22rem * ${image.width / image.height}))` }}>
        <img src={image.dataUrl} alt={`First reference, ${image.name}`} draggable={false} />
        <canvas
          ref={canvas}
          aria-label="Mask: paint over the area to repaint"
          onPointerDown={(e) => {
            // Capture keeps a stroke that leaves the canvas; a pointer the browser no longer tracks cannot be captured (harmless).
            try { e.currentTarget.setPointerCapture(e.pointerId); } catch { /* see above */ }
            const p = point(e); drawing.current = p; stroke(p, p);
          }}
          onPointerMove={(e) => { if (!drawing.current) return; const p = point(e); stroke(drawing.current, p); drawing.current = p; }}
          onPointerUp={() => { if (drawing.current) { drawing.current = null; exportMask(); } }}
          onPointerCancel={() => { drawing.current = null; exportMask(); }}
        />
      </div>
      <div className="row wrap">
        <label htmlFor="brush">Brush</label>
        <input id="brush" type="range" min={1} max={Math.max(8, Math.round(Math.max(image.width, image.height) / 4))} value={brush}
          onChange={(e) => setBrush(Number(e.target.value))} />
        <output htmlFor="brush" data-testid="brush-size">{brush} px</output>
        <div className="segmented" role="radiogroup" aria-label="Brush mode">
          <label className={!erase ? "on" : ""}><input type="radio" name="brush-mode" checked={!erase} onChange={() => setErase(false)} /> Paint</label>
          <label className={erase ? "on" : ""}><input type="radio" name="brush-mode" checked={erase} onChange={() => setErase(true)} /> Erase</label>
        </div>
        <button type="button" onClick={() => fill(true)}>Fill</button>
        <button type="button" onClick={invert}>Invert</button>
        <button type="button" onClick={() => fill(false)} disabled={!hasMask}>Clear</button>
      </div>
      <p className="hint">White = repaint. {hasMask ? "The mask is sent with the request (inpainting)." : "No mask: the whole image is used."}</p>
    </div>
  );
}
