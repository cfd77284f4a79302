// sRGB → CIELAB (D65) and the CIE76 colour difference ΔE*ab (the Euclidean distance in L*a*b*).
//
// Hand-written rather than a colour library: the conversion is a dozen lines of the published
// sRGB and CIELAB formulas, and the flux2-mini data builder, its eval and the text-encoder
// trainer's thumbnails must use exactly the same ones.

export type Lab = [number, number, number];

function linear(v: number): number {
  const c = v / 255;
  return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
}

// D65 reference white (CIE 1931 2°), as in the sRGB standard.
const XN = 0.95047, YN = 1.0, ZN = 1.08883;

function f(t: number): number {
  return t > 216 / 24389 ? Math.cbrt(t) : (24389 / 27 * t + 16) / 116;
}

/** 8-bit sRGB → CIELAB (D65). */
export function rgbToLab(r: number, g: number, b: number): Lab {
  const R = linear(r), G = linear(g), B = linear(b);
  const x = (0.4124564 * R + 0.3575761 * G + 0.1804375 * B) / XN;
  const y = (0.2126729 * R + 0.7151522 * G + 0.072175 * B) / YN;
  const z = (0.0193339 * R + 0.119192 * G + 0.9503041 * B) / ZN;
  const fx = f(x), fy = f(y), fz = f(z);
  return [116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)];
}

/** CIE76 ΔE*ab. */
export function deltaE(a: Lab, b: Lab): number {
  return Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
}

