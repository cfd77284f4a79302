// Provenance marks on every generated image: the invisible watermark (watermark.ts)
// and metadata that says the image is AI-generated and by which model.
//
// Metadata, written by sharp (libvips) into PNG (eXIf chunk, XMP in an
// "XML:com.adobe.xmp" text chunk), JPEG and WebP alike:
//   - EXIF IFD0 Software = "AI generated;flux2" and Make = "Black Forest Labs", the two
//     tags BFL's reference CLI writes (scripts/cli.py), plus Model = the model used;
//   - XMP with IPTC's DigitalSourceType "trainedAlgorithmicMedia" (the vocabulary term
//     for AI-generated media that Google, Meta and Adobe read) and the IPTC AI fields
//     AISystemUsed / AIPromptInformation.
//
// C2PA: not written. The well-kept npm package that signs manifests,
// @contentauth/c2pa-node (Adobe's, MIT), installs through a postinstall script that
// downloads a prebuilt native binary (or needs a Rust toolchain), requires Node 22
// (this project supports Node 20), and a signed manifest needs an X.509 signing
// certificate from a C2PA trust-list CA to be worth anything: a self-signed one is
// shown as "unknown signer" by verifiers. Decision recorded in docs/server.md.

import { encodeImage, insertPngText, type ImageFormat, type ImageTags } from "../pipeline/image.js";
import { VERSION, formatParameters, type ImageRecord } from "../pipeline/metadata.js";
import { canWatermark, embedWatermark } from "./watermark.js";

export const EXIF_SOFTWARE = "AI generated;flux2";
export const EXIF_MAKE = "Black Forest Labs";
export const WATERMARK_NAME = "flux2 dwt-dct 48-bit";
export const DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia";

/** The EXIF IFD0 tags and XMP packet that say the image is AI-generated, and by which model. */
export function provenanceTags(model: string, variant: string, prompt?: string): ImageTags & { xmp: string } {
  // No parentheses: libvips reads "text (…)" in an EXIF string as text plus its own annotation.
  const system = `FLUX.2 ${variant};${model}`;
  return {
    ifd0: { Software: EXIF_SOFTWARE, Make: EXIF_MAKE, Model: system },
    xmp: xmpPacket({ system, prompt }),
  };
}

function xmpPacket(o: { system: string; prompt?: string }): string {
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  return [
    `<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>`,
    `<x:xmpmeta xmlns:x="adobe:ns:meta/">`,
    `<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">`,
    `<rdf:Description rdf:about=""`,
    ` xmlns:xmp="http://ns.adobe.com/xap/1.0/"`,
    ` xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"`,
    ` xmp:CreatorTool="${esc(VERSION)}"`,
    ` Iptc4xmpExt:DigitalSourceType="${DIGITAL_SOURCE_TYPE}"`,
    ` Iptc4xmpExt:AISystemUsed="${esc(o.system)}"`,
    o.prompt !== undefined ? ` Iptc4xmpExt:AIPromptInformation="${esc(o.prompt)}"` : "",
    `/>`,
    `</rdf:RDF>`,
    `</x:xmpmeta>`,
    `<?xpacket end="w"?>`,
  ].filter(Boolean).join("\n");
}

/**
 * The watermark step for one image: marked when `enabled` and the image is large
 * enough (64×64 pixels in area; see watermarkBlock). The returned note
 * goes into the image's metadata, so a missing mark is never silent.
 */
export function watermarkImage(rgb: Uint8Array, width: number, height: number, enabled: boolean): { rgb: Uint8Array; watermark: string } {
  if (!enabled) return { rgb, watermark: "off" };
  if (!canWatermark(width, height)) return { rgb, watermark: `none (${width}x${height} is under 64x64 pixels)` };
  return { rgb: embedWatermark(rgb, width, height), watermark: WATERMARK_NAME };
}

/**
 * Encode one generated image with its provenance: watermark (unless `watermark` is
 * false), EXIF/XMP tags, the A1111 "parameters" text and, for PNG, the "flux2" JSON
 * record. The record returned is the one written (it says what happened to the mark).
 */
export async function encodeGenerated(rgb: Uint8Array, width: number, height: number, format: ImageFormat, record: ImageRecord, watermark: boolean): Promise<{ bytes: Buffer; record: ImageRecord }> {
  const marked = watermarkImage(rgb, width, height, watermark);
  const r: ImageRecord = { ...record, watermark: marked.watermark };
  let bytes = await encodeImage(marked.rgb, width, height, format, formatParameters(r), provenanceTags(r.model, r.variant, r.prompt));
  if (format === "png") bytes = insertPngText(bytes, "flux2", JSON.stringify(r));
  return { bytes, record: r };
}
