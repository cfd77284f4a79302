// Builds native/ (the BfMatMul custom op and the ONNX Runtime binding that can load it) into
// build/native/flux2_native.node. `npm run build` runs it; so `npm install` does too.
//
// Why not node-gyp: node-gyp downloads Node's headers, and this project installs offline from
// the npm registry alone. Node ships its headers (node_api.h) beside the binary or in
// /usr/include/node, and ONNX Runtime's library comes with onnxruntime-node, so one g++ call is
// all the build is.
//
// The addon is optional: without it `flux2 train --matmul bf16` says what is missing and every
// other command is unaffected. So a machine without g++ or Node's headers gets a warning and exit
// code 0, unless --strict is given. (test/native_bf16.test.ts fails where the addon could be built
// but is missing, so CI notices a build that stopped working.)

import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import { createRequire } from "node:module";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { NODE_HEADER_DIRS, nodeHeaderDir } from "./native-inputs.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const strict = process.argv.includes("--strict");
const out = path.join(root, "build/native/flux2_native.node");

function skip(reason: string): never {
  const msg = `build-native: not built: ${reason}. \`flux2 train --matmul bf16\` needs it; nothing else does.`;
  if (strict) {
    console.error(msg);
    process.exit(1);
  }
  console.warn(msg);
  process.exit(0);
}

if (process.platform !== "linux" || process.arch !== "x64") skip(`its kernels are for x86-64 Linux (this is ${process.platform}-${process.arch})`);

const nodeHeaders = nodeHeaderDir();
if (!nodeHeaders) skip(`Node's headers (node_api.h) are not in ${NODE_HEADER_DIRS.join(", ")}`);

const ortPackage = path.dirname(createRequire(import.meta.url).resolve("onnxruntime-node/package.json"));
const ortBin = path.join(ortPackage, "bin");
const ortLibDir = fs.existsSync(ortBin)
  ? fs.readdirSync(ortBin).map((napi) => path.join(ortBin, napi, "linux/x64")).find((d) => fs.existsSync(path.join(d, "libonnxruntime.so.1")))
  : undefined;
if (!ortLibDir) skip(`onnxruntime-node's libonnxruntime.so.1 is not under ${ortBin}`);

const cxx = process.env.CXX ?? "g++";
const sources = ["native/flux2_native.cc", "native/bf16_gemm.cc"].map((f) => path.join(root, f));
const newest = Math.max(...sources.map((f) => fs.statSync(f).mtimeMs), fs.statSync(path.join(root, "native/bf16_gemm.h")).mtimeMs);
if (fs.existsSync(out) && fs.statSync(out).mtimeMs > newest && !process.argv.includes("--force")) {
  console.log(`build-native: ${path.relative(root, out)} is up to date`);
  process.exit(0);
}
fs.mkdirSync(path.dirname(out), { recursive: true });
// The library is found at run time relative to the addon, so a moved clone keeps working.
const rpath = `$ORIGIN/${path.relative(path.dirname(out), ortLibDir)}`;
const args = ["-std=c++17", "-O3", "-fPIC", "-shared", "-Wno-psabi", `-I${nodeHeaders}`, ...sources, "-o", `${out}.tmp`,
  `-L${ortLibDir}`, "-l:libonnxruntime.so.1", `-Wl,-rpath,${rpath}`];
try {
  execFileSync(cxx, args, { stdio: ["ignore", "inherit", "inherit"] });
} catch (e) {
  skip(`${cxx} failed (${(e as Error).message.split("\n")[0]})`);
}
fs.renameSync(`${out}.tmp`, out);
console.log(`build-native: built ${path.relative(root, out)}`);
