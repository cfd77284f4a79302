// Requests of the storyboard and fine-tuning pages. Paths are relative
// ("v1/…", no leading slash) so the pages work behind a path prefix too.

import { ApiError, apiKey } from "../api";

function headers(json: boolean): Record<string, string> {
  const h: Record<string, string> = { accept: "application/json" };
  const k = apiKey();
  if (k) h["x-key"] = k;
  if (json) h["content-type"] = "application/json";
  return h;
}

/** JSON request; a non-2xx answer becomes an ApiError with the server's message and field errors. */
export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(path, { method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json: unknown = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!res.ok) {
    const detail = (json as { detail?: unknown } | null)?.detail;
    if (Array.isArray(detail)) {
      const fields = detail.map((d: { loc?: unknown[]; msg?: string }) => ({ field: (d.loc ?? []).filter((x) => x !== "body").join("."), msg: String(d.msg ?? "invalid") }));
      throw new ApiError(fields.map((f) => (f.field ? `${f.field}: ${f.msg}` : f.msg)).join("; "), res.status, fields);
    }
    throw new ApiError(typeof detail === "string" ? detail : `${res.status} ${res.statusText}`, res.status);
  }
  return json as T;
}

/** Server URLs (absolute, built from --public-url or the listen address) shown as paths of this origin when they are on it. */
export function local(url: string): string {
  try {
    const u = new URL(url, location.href);
    return u.origin === location.origin ? u.pathname.replace(/^\//, "") + u.search : url;
  } catch {
    return url;
  }
}

export function readDataUrl(f: Blob): Promise<string> {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result));
    r.onerror = () => reject(r.error ?? new Error("could not read the file"));
    r.readAsDataURL(f);
  });
}

export function duration(s: number | null): string {
  if (s === null || !Number.isFinite(s)) return "–";
  const m = Math.floor(s / 60), sec = Math.round(s % 60);
  return m ? `${m} min ${sec} s` : `${sec} s`;
}
