// `node:url` for the browser bundle.
export function fileURLToPath(url: string | URL): string {
  const u = typeof url === "string" ? new URL(url) : url;
  if (u.protocol !== "file:") return u.pathname;
  return decodeURIComponent(u.pathname);
}
export function pathToFileURL(p: string): URL {
  return new URL(`file://${p}`);
}
