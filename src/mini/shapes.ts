// The shapes of the flux2-mini scene set, drawn with anti-aliasing into an RGB canvas.
//
// Each shape is an inside test in unit coordinates (centre 0,0, y down, the shape's extent
// about ±1). The same tests draw the data set and, in the eval, draw the templates a generated
// shape is compared with, so the classifier and the data agree by construction.

import type { Rgb } from "./colour.js";

export const SHAPES = ["circle", "square", "triangle", "star", "ring"] as const;
export type ShapeKind = (typeof SHAPES)[number];

type Pt = [number, number];

const TRIANGLE: Pt[] = [[0, -0.95], [0.95, 0.75], [-0.95, 0.75]];
const SQUARE: Pt[] = [[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]];
const STAR: Pt[] = Array.from({ length: 10 }, (_, k) => {
  const r = k % 2 === 0 ? 1 : 0.45;
  const a = -Math.PI / 2 + (k * Math.PI) / 5;
  return [r * Math.cos(a), r * Math.sin(a) + 0.1] as Pt; // +0.1 centres the star's box vertically
});

function inPolygon(poly: Pt[], x: number, y: number): boolean {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i], [xj, yj] = poly[j];
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/** Whether unit-coordinate point (x, y) is inside a shape. */
export function insideShape(kind: ShapeKind, x: number, y: number): boolean {
  switch (kind) {
    case "circle": return x * x + y * y <= 1;
    case "ring": { const d = x * x + y * y; return d <= 1 && d >= 0.36; }
    case "square": return inPolygon(SQUARE, x, y);
    case "triangle": return inPolygon(TRIANGLE, x, y);
    case "star": return inPolygon(STAR, x, y);
  }
}

function polyBox(p: Pt[]): [number, number, number, number] {
  return [Math.min(...p.map((q) => q[0])), Math.min(...p.map((q) => q[1])), Math.max(...p.map((q) => q[0])), Math.max(...p.map((q) => q[1]))];
}

/** The shape's bounding box in unit coordinates: [x0, y0, x1, y1]. */
export const SHAPE_BOX: Record<ShapeKind, [number, number, number, number]> = {
  circle: [-1, -1, 1, 1], ring: [-1, -1, 1, 1], square: polyBox(SQUARE), triangle: polyBox(TRIANGLE), star: polyBox(STAR),
};

export interface PlacedShape {
  kind: ShapeKind;
  /** Centre, in pixels. */
  cx: number;
  cy: number;
  /** Half-size in pixels (unit coordinates are scaled by this). */
  r: number;
  colour: Rgb;
}

/** Supersampling grid per pixel side (16 samples per pixel). */
const SS = 4;

/** Draw shapes (in order, later on top) on a plain background; returns packed RGB bytes. */
export function renderScene(size: number, background: Rgb, shapes: PlacedShape[]): Uint8Array {
  const out = new Uint8Array(size * size * 3);
  const acc = new Float64Array(3);
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      acc.fill(0);
      for (let sy = 0; sy < SS; sy++) {
        for (let sx = 0; sx < SS; sx++) {
          const x = px + (sx + 0.5) / SS, y = py + (sy + 0.5) / SS;
          let c = background;
          for (const s of shapes) if (insideShape(s.kind, (x - s.cx) / s.r, (y - s.cy) / s.r)) c = s.colour;
          acc[0] += c[0]; acc[1] += c[1]; acc[2] += c[2];
        }
      }
      const o = (py * size + px) * 3;
      for (let k = 0; k < 3; k++) out[o + k] = Math.round(acc[k] / (SS * SS));
    }
  }
  return out;
}

/** A binary mask (1 inside) of a shape fitted to the box [x0, x1) × [y0, y1) of a W×H canvas, sampled at pixel centres. */
export function shapeMaskInBox(kind: ShapeKind, W: number, H: number, box: [number, number, number, number]): Uint8Array {
  const [bx0, by0, bx1, by1] = SHAPE_BOX[kind];
  const [x0, y0, x1, y1] = box;
  const m = new Uint8Array(W * H);
  for (let py = y0; py < y1; py++) {
    for (let px = x0; px < x1; px++) {
      const ux = bx0 + ((px + 0.5 - x0) / (x1 - x0)) * (bx1 - bx0);
      const uy = by0 + ((py + 0.5 - y0) / (y1 - y0)) * (by1 - by0);
      if (insideShape(kind, ux, uy)) m[py * W + px] = 1;
    }
  }
  return m;
}
