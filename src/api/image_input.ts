// An image field's value as bytes: base64 or a data: URL (BFL's API), or an
// http(s) URL fetched through the guard (fetch_image.ts: public addresses only,
// size and time limits). The server reads generation inputs and fine-tune
// images through here at submit time and stores the bytes; prepare.ts then
// reads them back by reference (and the CLI's by file path).

import { fetchImage, type UrlPolicy } from "./fetch_image.js";

const BASE64_RE = /^[A-Za-z0-9+/_-]+={0,2}$/;

/** base64 or a data: URL → bytes (strict: stray characters are an error, not silently dropped). */
export function decodeBase64Image(s: string): Buffer {
  let data = s;
  if (/^data:/i.test(s)) {
    const comma = s.indexOf(",");
    if (comma < 0 || !/;base64$/i.test(s.slice(0, comma))) throw new Error("data: URLs must be base64 (data:image/png;base64,...)");
    data = s.slice(comma + 1);
  }
  data = data.replace(/\s+/g, "");
  if (!BASE64_RE.test(data)) throw new Error("not valid base64 (or an http(s) URL)");
  const buf = Buffer.from(data, data.includes("-") || data.includes("_") ? "base64url" : "base64");
  if (buf.length === 0) throw new Error("empty image");
  return buf;
}

/** The bytes behind an image field's value (see the top of this file); URLs go where `policy` allows. */
export async function imageValueBytes(value: string, opts: { policy: UrlPolicy }): Promise<Buffer> {
  return /^https?:\/\//i.test(value) ? fetchImage(value, opts.policy) : decodeBase64Image(value);
}
