// Turning files and URLs into the base64 data URLs the API takes.

export interface Reference {
  id: string;
  name: string;
  dataUrl: string;
  width: number;
  height: number;
}

let counter = 0;
export const newId = (): string => `r${Date.now().toString(36)}${(counter++).toString(36)}`;

export function blobToDataUrl(b: Blob): Promise<string> {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result));
    r.onerror = () => reject(r.error ?? new Error("could not read the file"));
    r.readAsDataURL(b);
  });
}

export function imageSize(src: string): Promise<{ width: number; height: number }> {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve({ width: img.naturalWidth, height: img.naturalHeight });
    img.onerror = () => reject(new Error("not an image the browser can read"));
    img.src = src;
  });
}

export async function referenceFromBlob(b: Blob, name: string): Promise<Reference> {
  if (b.type && !b.type.startsWith("image/")) throw new Error(`${name} is not an image`);
  const dataUrl = await blobToDataUrl(b);
  const { width, height } = await imageSize(dataUrl);
  return { id: newId(), name, dataUrl, width, height };
}

export async function referenceFromUrl(url: string, name: string): Promise<Reference> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`could not load ${url}: ${res.status}`);
  return referenceFromBlob(await res.blob(), name);
}

export function fileName(url: string, fallback: string): string {
  try {
    const last = new URL(url, location.href).pathname.split("/").pop();
    return last && /\.\w+$/.test(last) ? decodeURIComponent(last) : fallback;
  } catch {
    return fallback;
  }
}
