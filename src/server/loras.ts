// LoRAs named in requests: `loras: [{name, strength}]`, where a name is a
// .safetensors file in the server's --lora-dir. Names are checked against a
// strict pattern and resolved inside the folder only, so a request can never
// read an arbitrary path.

import * as fs from "node:fs";
import * as path from "node:path";
import type { LoraUse } from "../loaders/pretrained.js";

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export class LoraNameError extends Error {}

export function resolveLoras(loraDir: string | undefined, loras: { name: string; strength: number }[] | undefined): LoraUse[] {
  if (!loras?.length) return [];
  if (!loraDir) throw new LoraNameError("this server has no LoRA folder: start it with --lora-dir DIR");
  return loras.map((l) => {
    const name = l.name.replace(/\.safetensors$/, "");
    if (!NAME.test(name)) throw new LoraNameError(`LoRA name "${l.name}" is not a plain file name`);
    const file = path.join(loraDir, `${name}.safetensors`);
    if (!fs.existsSync(file)) throw new LoraNameError(`no LoRA "${name}" in the server's LoRA folder`);
    return { file, strength: l.strength, name };
  });
}

/** Names of the LoRA files a folder offers (for GET /v1/loras). */
export function listLoras(loraDir: string | undefined): string[] {
  if (!loraDir || !fs.existsSync(loraDir)) return [];
  return fs.readdirSync(loraDir).filter((f) => f.endsWith(".safetensors")).map((f) => f.slice(0, -".safetensors".length)).sort();
}
