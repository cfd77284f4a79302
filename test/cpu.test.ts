// CPU feature detection and the automatic choice of weights (src/backend/cpu.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { chooseWeights, cpuFeatures, int8DotProducts, parseCpuInfo } from "../src/backend/cpu.js";

const X86 = (flags: string) => `processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 ${flags}\n\nprocessor\t: 1\n`;
const ARM = (features: string) => `processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd ${features}\nCPU implementer\t: 0x41\n`;

test("features are read from /proc/cpuinfo flags (x86) and Features (Arm)", () => {
  const epyc = parseCpuInfo(X86("avx2 avx512f avx512_vnni avx512_bf16 avx_vnni"), "x64");
  assert.deepEqual([epyc.avx2, epyc.avx512vnni, epyc.avxvnni, epyc.avx512bf16, epyc.amx], [true, true, true, true, false]);
  assert.equal(epyc.model, "AMD EPYC");
  assert.deepEqual(int8DotProducts(epyc), ["AVX512-VNNI", "AVX-VNNI"]);
  const spr = parseCpuInfo(X86("avx2 avx512_vnni amx_bf16 amx_tile amx_int8"), "x64");
  assert.deepEqual(int8DotProducts(spr), ["AMX", "AVX512-VNNI"]);
  const graviton = parseCpuInfo(ARM("asimddp i8mm sve"), "arm64");
  assert.deepEqual(int8DotProducts(graviton), ["Arm i8mm", "Arm dotprod"]);
  assert.equal(parseCpuInfo("", "x64").source, "");
});

test("auto picks int8 only with int8 dot products, on the CPU, for a real-size transformer", () => {
  const big = 3.9e9;
  assert.equal(chooseWeights(parseCpuInfo(X86("avx2 avx512_vnni"), "x64"), big).weights, "int8");
  assert.equal(chooseWeights(parseCpuInfo(X86("avx2 avx_vnni"), "x64"), big).weights, "int8");
  assert.equal(chooseWeights(parseCpuInfo(ARM("asimddp"), "arm64"), big).weights, "int8");
  const avx2 = chooseWeights(parseCpuInfo(X86("avx2 fma"), "x64"), big);
  assert.equal(avx2.weights, "bf16");
  assert.match(avx2.reason, /saturate/);
  assert.equal(chooseWeights(parseCpuInfo("", "x64"), big).weights, "bf16");
  assert.equal(chooseWeights(parseCpuInfo(X86("avx512_vnni"), "x64"), 5e6).weights, "bf16", "tiny models stay float");
  assert.equal(chooseWeights(parseCpuInfo(X86("avx512_vnni"), "x64"), big, "cuda").weights, "bf16");
});

test("this machine's features are read", () => {
  const f = cpuFeatures();
  assert.ok(f.model.length > 0);
  if (process.platform === "linux") assert.equal(f.source, "/proc/cpuinfo");
});
