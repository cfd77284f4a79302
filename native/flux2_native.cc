// flux2.ts's native addon: ONNX Runtime sessions that can run the `BfMatMul` custom op.
//
// Why a second binding next to onnxruntime-node: that package cannot register custom operators,
// and ONNX Runtime has no bfloat16 MatMul on x86 CPUs. This file drives the same
// libonnxruntime.so.1 that onnxruntime-node loads (through ONNX Runtime's C API) for the trainer's
// sessions only; everything else keeps using onnxruntime-node. src/backend/ort_native.ts is its
// TypeScript side; docs/training.md ("bf16 matrix products") says when it is used.
//
// JavaScript API (run returns a Promise; the rest are synchronous):
//   info() -> { bf16: boolean, apiVersion: number }
//   createSession(model: Uint8Array | path, options) -> { handle, inputNames, outputNames }
//       options: { threads?, optimization? (0|1|2|99), memPattern?, memArena?, profilePrefix?,
//                  config?: {key: value} }
//   run(handle, names: string[], tensors: {data, shape}[], outputNames: string[]) -> Promise<{data, shape}[]>
//   release(handle)
#include <node_api.h>

#include <array>
#include <climits>
#include <memory>
#include <mutex>
#include <cstring>
#include <string>
#include <vector>

#include "bf16_gemm.h"
#include "third_party/onnxruntime/onnxruntime_c_api.h"

namespace {

const OrtApi* ort = nullptr;
OrtEnv* env = nullptr;

// ---- errors ----------------------------------------------------------------------------------

struct JsError {
  std::string message;
};

void check(OrtStatus* status) {
  if (!status) return;
  std::string message = ort->GetErrorMessage(status);
  ort->ReleaseStatus(status);
  throw JsError{message};
}

void checkNapi(napi_status status, const char* what) {
  if (status != napi_ok) throw JsError{std::string("flux2 native: ") + what + " failed"};
}

// ---- the BfMatMul custom op ------------------------------------------------------------------
//
// Y = alpha * op(A) op(B) with FusedMatMul's attributes (transA, transB, alpha), float32 in and
// out, the products in bfloat16. Batched inputs: leading dims of A and B must be equal, or one of
// the two must be 2-D (it is then shared by every batch); no other broadcasting.

struct BfMatMulKernel {
  int64_t transA = 0, transB = 0;
  float alpha = 1.f;
};

std::vector<int64_t> shapeOf(const OrtValue* v) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  check(ort->GetTensorTypeAndShape(v, &info));
  size_t n = 0;
  check(ort->GetDimensionsCount(info, &n));
  std::vector<int64_t> dims(n);
  check(ort->GetDimensions(info, dims.data(), n));
  ort->ReleaseTensorTypeAndShapeInfo(info);
  return dims;
}

void parallelFor(void* ctx, size_t count, void (*task)(void*, size_t), void* data) {
  check(ort->KernelContext_ParallelFor(static_cast<OrtKernelContext*>(ctx), task, count, 0, data));
}

OrtStatus* computeBfMatMul(void* kernelPtr, OrtKernelContext* ctx) {
  try {
    const BfMatMulKernel& k = *static_cast<BfMatMulKernel*>(kernelPtr);
    const OrtValue* a = nullptr;
    const OrtValue* b = nullptr;
    check(ort->KernelContext_GetInput(ctx, 0, &a));
    check(ort->KernelContext_GetInput(ctx, 1, &b));
    const std::vector<int64_t> sa = shapeOf(a), sb = shapeOf(b);
    if (sa.size() < 2 || sb.size() < 2) throw JsError{"BfMatMul: both inputs need at least 2 dims"};
    const int64_t M = k.transA ? sa[sa.size() - 1] : sa[sa.size() - 2];
    const int64_t Ka = k.transA ? sa[sa.size() - 2] : sa[sa.size() - 1];
    const int64_t Kb = k.transB ? sb[sb.size() - 1] : sb[sb.size() - 2];
    const int64_t N = k.transB ? sb[sb.size() - 2] : sb[sb.size() - 1];
    if (Ka != Kb) throw JsError{"BfMatMul: inner dims differ (" + std::to_string(Ka) + " and " + std::to_string(Kb) + ")"};
    const std::vector<int64_t> batchA(sa.begin(), sa.end() - 2), batchB(sb.begin(), sb.end() - 2);
    std::vector<int64_t> batch;
    if (batchB.empty()) batch = batchA;
    else if (batchA.empty()) batch = batchB;
    else if (batchA == batchB) batch = batchA;
    else throw JsError{"BfMatMul: batch dims of A and B must be equal, or one input 2-D"};
    // op(A) rows of a 2-D A shared by a batched B cannot fold into M; only equal or shared batches.
    size_t batches = 1;
    for (int64_t d : batch) batches *= size_t(d);
    if (M > INT_MAX || N > INT_MAX || Ka > INT_MAX) throw JsError{"BfMatMul: a dimension is too large"};
    std::vector<int64_t> outShape(batch);
    outShape.push_back(M);
    outShape.push_back(N);
    OrtValue* y = nullptr;
    check(ort->KernelContext_GetOutput(ctx, 0, outShape.data(), outShape.size(), &y));
    const float* pa = nullptr;
    const float* pb = nullptr;
    float* py = nullptr;
    check(ort->GetTensorMutableData(const_cast<OrtValue*>(a), (void**)&pa));
    check(ort->GetTensorMutableData(const_cast<OrtValue*>(b), (void**)&pb));
    check(ort->GetTensorMutableData(y, (void**)&py));
    flux2::GemmShape s{int(M), int(Ka), int(N), k.transA != 0, k.transB != 0, k.alpha};
    // A 2-D B under a batched, untransposed A: one product with the batches stacked into M.
    if (batchB.empty() && !batchA.empty() && !k.transA) {
      s.M = int(M * int64_t(batches));
      flux2::gemmBf16(s, pa, 0, pb, 0, py, 0, 1, parallelFor, ctx);
      return nullptr;
    }
    const size_t strideA = batchA.empty() ? 0 : size_t(M * Ka);
    const size_t strideB = batchB.empty() ? 0 : size_t(Ka * N);
    flux2::gemmBf16(s, pa, strideA, pb, strideB, py, size_t(M * N), batches, parallelFor, ctx);
    return nullptr;
  } catch (const JsError& e) {
    return ort->CreateStatus(ORT_INVALID_ARGUMENT, e.message.c_str());
  }
}

OrtStatus* createBfMatMul(const OrtCustomOp*, const OrtApi*, const OrtKernelInfo* info, void** out) {
  auto* k = new BfMatMulKernel();
  int64_t v = 0;
  float f = 0;
  // Absent attributes keep their defaults (the status says "not found"; it is not an error here).
  if (OrtStatus* s = ort->KernelInfoGetAttribute_int64(info, "transA", &v)) ort->ReleaseStatus(s); else k->transA = v;
  if (OrtStatus* s = ort->KernelInfoGetAttribute_int64(info, "transB", &v)) ort->ReleaseStatus(s); else k->transB = v;
  if (OrtStatus* s = ort->KernelInfoGetAttribute_float(info, "alpha", &f)) ort->ReleaseStatus(s); else k->alpha = f;
  *out = k;
  return nullptr;
}

OrtCustomOp makeBfMatMulOp() {
  OrtCustomOp op;
  std::memset(&op, 0, sizeof op);
  op.version = ORT_API_VERSION;
  op.GetName = [](const OrtCustomOp*) { return "BfMatMul"; };
  op.GetExecutionProviderType = [](const OrtCustomOp*) -> const char* { return nullptr; };  // CPU
  op.GetInputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; };
  op.GetInputTypeCount = [](const OrtCustomOp*) -> size_t { return 2; };
  op.GetOutputType = [](const OrtCustomOp*, size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; };
  op.GetOutputTypeCount = [](const OrtCustomOp*) -> size_t { return 1; };
  op.KernelDestroy = [](void* k) { delete static_cast<BfMatMulKernel*>(k); };
  op.GetInputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
  op.GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return INPUT_OUTPUT_REQUIRED; };
  op.GetInputMemoryType = [](const OrtCustomOp*, size_t) { return OrtMemTypeDefault; };
  op.GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  op.GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  op.CreateKernelV2 = createBfMatMul;
  op.KernelComputeV2 = computeBfMatMul;
  op.GetStartVersion = [](const OrtCustomOp*) { return 1; };
  op.GetEndVersion = [](const OrtCustomOp*) { return INT_MAX; };
  op.GetMayInplace = [](int**, int**) -> size_t { return 0; };
  op.ReleaseMayInplace = [](int*, int*) {};
  op.GetAliasMap = [](int**, int**) -> size_t { return 0; };
  op.ReleaseAliasMap = [](int*, int*) {};
  return op;
}

OrtCustomOp bfMatMulOp = makeBfMatMulOp();
OrtCustomOpDomain* domain = nullptr;  // shared by every session, alive for the process

// Once per process: `flux2 train --workers N` loads the addon in N threads.
void init() {
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    const OrtApiBase* base = OrtGetApiBase();
    const OrtApi* api = base->GetApi(ORT_API_VERSION);
    if (!api) {
      failure = std::string("flux2 native: ONNX Runtime ") + base->GetVersionString() + " is older than the C API this addon was built for";
      return;
    }
    ort = api;
    try {
      check(ort->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "flux2ts-native", &env));
      check(ort->CreateCustomOpDomain("ai.flux2ts", &domain));
      check(ort->CustomOpDomain_Add(domain, &bfMatMulOp));
    } catch (const JsError& e) {
      failure = e.message;
    }
  });
  if (!failure.empty()) throw JsError{failure};
}

// ---- sessions --------------------------------------------------------------------------------

struct Session {
  OrtSession* session = nullptr;
  int running = 0;  // runs queued or in flight: the session is not released under them
  std::vector<std::string> inputs, outputs;
  ~Session() {
    if (session) ort->ReleaseSession(session);
  }
};

// Runs when a session's handle is garbage-collected, so that a session JavaScript dropped without
// release() (a trainer that threw between createSession and release) does not keep its weights
// until exit. A queued run holds a reference to the handle (RunJob's keepAlive), so this never
// frees a session under a run.
void finalizeSession(napi_env, void* data, void*) { delete static_cast<Session*>(data); }

napi_value str(napi_env e, const std::string& s) {
  napi_value v;
  checkNapi(napi_create_string_utf8(e, s.c_str(), s.size(), &v), "string");
  return v;
}

std::string getString(napi_env e, napi_value v) {
  size_t n = 0;
  checkNapi(napi_get_value_string_utf8(e, v, nullptr, 0, &n), "string argument");
  std::string s(n, '\0');
  checkNapi(napi_get_value_string_utf8(e, v, s.data(), n + 1, &n), "string argument");
  return s;
}

bool getProp(napi_env e, napi_value obj, const char* key, napi_value* out) {
  bool has = false;
  checkNapi(napi_has_named_property(e, obj, key, &has), "property");
  if (!has) return false;
  checkNapi(napi_get_named_property(e, obj, key, out), "property");
  napi_valuetype t;
  checkNapi(napi_typeof(e, *out, &t), "typeof");
  return t != napi_undefined && t != napi_null;
}

int64_t getInt(napi_env e, napi_value v) {
  int64_t x = 0;
  checkNapi(napi_get_value_int64(e, v, &x), "number argument");
  return x;
}

bool getBool(napi_env e, napi_value v) {
  bool x = false;
  checkNapi(napi_get_value_bool(e, v, &x), "boolean argument");
  return x;
}

napi_value stringArray(napi_env e, const std::vector<std::string>& xs) {
  napi_value arr;
  checkNapi(napi_create_array_with_length(e, xs.size(), &arr), "array");
  for (size_t i = 0; i < xs.size(); i++) checkNapi(napi_set_element(e, arr, i, str(e, xs[i])), "array");
  return arr;
}

// The first N arguments of a call; fewer is an error that shows the call's form.
template <size_t N>
std::array<napi_value, N> args(napi_env e, napi_callback_info cb, const char* usage) {
  size_t argc = N;
  std::array<napi_value, N> argv{};
  checkNapi(napi_get_cb_info(e, cb, &argc, argv.data(), nullptr, nullptr), "arguments");
  if (argc < N) throw JsError{std::string("flux2 native: ") + usage};
  return argv;
}

napi_value createSession(napi_env e, napi_callback_info cb) {
  const auto argv = args<2>(e, cb, "createSession(model, options)");
  // The model: its bytes (a Uint8Array), or the path of an .onnx file (external weights beside it).
  napi_valuetype modelType;
  checkNapi(napi_typeof(e, argv[0], &modelType), "typeof");
  std::string modelPath;
  void* bytes = nullptr;
  size_t length = 0;
  if (modelType == napi_string) {
    modelPath = getString(e, argv[0]);
  } else {
    napi_typedarray_type type;
    napi_value ab;
    size_t offset = 0;
    checkNapi(napi_get_typedarray_info(e, argv[0], &type, &length, &bytes, &ab, &offset), "model (a Uint8Array or a path)");
  }
  init();
  OrtSessionOptions* so = nullptr;
  check(ort->CreateSessionOptions(&so));
  try {
    napi_value v;
    if (getProp(e, argv[1], "threads", &v)) {
      check(ort->SetIntraOpNumThreads(so, int(getInt(e, v))));
      check(ort->SetInterOpNumThreads(so, 1));
    }
    int level = 99;
    if (getProp(e, argv[1], "optimization", &v)) level = int(getInt(e, v));
    check(ort->SetSessionGraphOptimizationLevel(so, GraphOptimizationLevel(level)));
    if (getProp(e, argv[1], "memPattern", &v) && !getBool(e, v)) check(ort->DisableMemPattern(so));
    if (getProp(e, argv[1], "memArena", &v) && !getBool(e, v)) check(ort->DisableCpuMemArena(so));
    check(ort->SetSessionLogSeverityLevel(so, 3));
    if (getProp(e, argv[1], "profilePrefix", &v)) check(ort->EnableProfiling(so, getString(e, v).c_str()));
    if (getProp(e, argv[1], "config", &v)) {
      napi_value keys;
      uint32_t n = 0;
      checkNapi(napi_get_property_names(e, v, &keys), "config");
      checkNapi(napi_get_array_length(e, keys, &n), "config");
      for (uint32_t i = 0; i < n; i++) {
        napi_value key, value;
        checkNapi(napi_get_element(e, keys, i, &key), "config");
        checkNapi(napi_get_property(e, v, key, &value), "config");
        check(ort->AddSessionConfigEntry(so, getString(e, key).c_str(), getString(e, value).c_str()));
      }
    }
    check(ort->AddCustomOpDomain(so, domain));
    auto owned = std::make_unique<Session>();  // freed here on any error until the handle owns it
    Session* s = owned.get();
    OrtStatus* st = modelPath.empty() ? ort->CreateSessionFromArray(env, bytes, length, so, &s->session)
                                      : ort->CreateSession(env, modelPath.c_str(), so, &s->session);
    ort->ReleaseSessionOptions(so);
    so = nullptr;
    check(st);
    OrtAllocator* alloc = nullptr;
    check(ort->GetAllocatorWithDefaultOptions(&alloc));
    size_t ni = 0, no = 0;
    check(ort->SessionGetInputCount(s->session, &ni));
    check(ort->SessionGetOutputCount(s->session, &no));
    for (size_t i = 0; i < ni + no; i++) {
      char* name = nullptr;
      check(i < ni ? ort->SessionGetInputName(s->session, i, alloc, &name) : ort->SessionGetOutputName(s->session, i - ni, alloc, &name));
      (i < ni ? s->inputs : s->outputs).push_back(name);
      check(ort->AllocatorFree(alloc, name));
    }
    napi_value result, handle;
    checkNapi(napi_create_object(e, &result), "object");
    checkNapi(napi_create_external(e, s, finalizeSession, nullptr, &handle), "handle");
    owned.release();
    checkNapi(napi_set_named_property(e, result, "handle", handle), "object");
    checkNapi(napi_set_named_property(e, result, "inputNames", stringArray(e, s->inputs)), "object");
    checkNapi(napi_set_named_property(e, result, "outputNames", stringArray(e, s->outputs)), "object");
    return result;
  } catch (...) {
    if (so) ort->ReleaseSessionOptions(so);
    throw;
  }
}

Session* sessionOf(napi_env e, napi_value v) {
  void* p = nullptr;
  checkNapi(napi_get_value_external(e, v, &p), "session handle");
  auto* s = static_cast<Session*>(p);
  if (!s->session) throw JsError{"flux2 native: the session was released"};
  return s;
}

struct TypeMap {
  napi_typedarray_type js;
  ONNXTensorElementDataType onnx;
  size_t bytes;
};
const TypeMap TYPES[] = {
    {napi_float32_array, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4},
    {napi_bigint64_array, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, 8},
    {napi_int32_array, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32, 4},
    {napi_uint8_array, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1},
    {napi_float64_array, ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE, 8},
};

std::vector<int64_t> getShape(napi_env e, napi_value arr) {
  uint32_t n = 0;
  checkNapi(napi_get_array_length(e, arr, &n), "shape (an array)");
  std::vector<int64_t> dims(n);
  for (uint32_t i = 0; i < n; i++) {
    napi_value d;
    checkNapi(napi_get_element(e, arr, i, &d), "shape");
    dims[i] = getInt(e, d);
  }
  return dims;
}

// One run, prepared on the JavaScript thread, executed on a libuv worker thread (so the event loop
// keeps serving timers, signals and I/O during a training step, as onnxruntime-node's run does),
// and turned back into JavaScript values on the JavaScript thread.
struct RunJob {
  Session* session = nullptr;
  OrtMemoryInfo* mem = nullptr;
  std::vector<std::string> inNames, outNames;
  std::vector<OrtValue*> inputs, outputs;
  std::vector<napi_ref> keepAlive;  // the session's handle, and the input arrays ORT reads in place
  std::string error;
  napi_deferred deferred = nullptr;
  napi_async_work work = nullptr;

  void release(napi_env e) {
    for (OrtValue* v : inputs) if (v) ort->ReleaseValue(v);
    for (OrtValue* v : outputs) if (v) ort->ReleaseValue(v);
    for (napi_ref r : keepAlive) napi_delete_reference(e, r);
    if (mem) ort->ReleaseMemoryInfo(mem);
    if (work) napi_delete_async_work(e, work);
  }
};

napi_value outputsToJs(napi_env e, RunJob& job) {
  napi_value result;
  checkNapi(napi_create_array_with_length(e, job.outputs.size(), &result), "array");
  for (size_t i = 0; i < job.outputs.size(); i++) {
    OrtTensorTypeAndShapeInfo* info = nullptr;
    check(ort->GetTensorTypeAndShape(job.outputs[i], &info));
    ONNXTensorElementDataType et;
    size_t count = 0, nd = 0;
    check(ort->GetTensorElementType(info, &et));
    check(ort->GetTensorShapeElementCount(info, &count));
    check(ort->GetDimensionsCount(info, &nd));
    std::vector<int64_t> dims(nd);
    check(ort->GetDimensions(info, dims.data(), nd));
    ort->ReleaseTensorTypeAndShapeInfo(info);
    const TypeMap* tm = nullptr;
    for (const TypeMap& m : TYPES) if (m.onnx == et) tm = &m;
    if (et == ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL) tm = &TYPES[3];
    if (!tm) throw JsError{"flux2 native: output " + job.outNames[i] + " has an unsupported element type"};
    void* src = nullptr;
    check(ort->GetTensorMutableData(job.outputs[i], &src));
    void* dst = nullptr;
    napi_value buffer, array, shape, t;
    checkNapi(napi_create_arraybuffer(e, count * tm->bytes, &dst, &buffer), "output buffer");
    if (count) std::memcpy(dst, src, count * tm->bytes);
    checkNapi(napi_create_typedarray(e, tm->js, count, buffer, 0, &array), "output array");
    checkNapi(napi_create_array_with_length(e, nd, &shape), "shape");
    for (size_t d = 0; d < nd; d++) {
      napi_value x;
      checkNapi(napi_create_int64(e, dims[d], &x), "shape");
      checkNapi(napi_set_element(e, shape, d, x), "shape");
    }
    checkNapi(napi_create_object(e, &t), "object");
    checkNapi(napi_set_named_property(e, t, "data", array), "object");
    checkNapi(napi_set_named_property(e, t, "shape", shape), "object");
    checkNapi(napi_set_element(e, result, i, t), "array");
  }
  return result;
}

void executeRun(napi_env, void* data) {
  auto* job = static_cast<RunJob*>(data);
  std::vector<const char*> in(job->inNames.size()), out(job->outNames.size());
  for (size_t i = 0; i < in.size(); i++) in[i] = job->inNames[i].c_str();
  for (size_t i = 0; i < out.size(); i++) out[i] = job->outNames[i].c_str();
  if (OrtStatus* st = ort->Run(job->session->session, nullptr, in.data(), job->inputs.data(), in.size(), out.data(), out.size(), job->outputs.data())) {
    job->error = ort->GetErrorMessage(st);
    ort->ReleaseStatus(st);
  }
}

void completeRun(napi_env e, napi_status, void* data) {
  auto* job = static_cast<RunJob*>(data);
  job->session->running--;
  napi_value value = nullptr;
  std::string error = job->error;
  if (error.empty()) {
    try {
      value = outputsToJs(e, *job);
    } catch (const JsError& err) {
      error = err.message;
    }
  }
  if (error.empty()) {
    napi_resolve_deferred(e, job->deferred, value);
  } else {
    napi_value msg, err;
    napi_create_string_utf8(e, error.c_str(), error.size(), &msg);
    napi_create_error(e, nullptr, msg, &err);
    napi_reject_deferred(e, job->deferred, err);
  }
  job->release(e);
  delete job;
}

// run(handle, names, tensors, outputNames) -> Promise<{data, shape}[]>
napi_value run(napi_env e, napi_callback_info cb) {
  const auto argv = args<4>(e, cb, "run(handle, names, tensors, outputNames)");
  auto* job = new RunJob();
  try {
    job->session = sessionOf(e, argv[0]);
    napi_ref handleRef;
    checkNapi(napi_create_reference(e, argv[0], 1, &handleRef), "reference");
    job->keepAlive.push_back(handleRef);
    uint32_t nIn = 0, nOut = 0;
    checkNapi(napi_get_array_length(e, argv[1], &nIn), "input names");
    checkNapi(napi_get_array_length(e, argv[3], &nOut), "output names");
    check(ort->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &job->mem));
    job->inNames.resize(nIn);
    job->outNames.resize(nOut);
    job->inputs.assign(nIn, nullptr);
    job->outputs.assign(nOut, nullptr);
    for (uint32_t i = 0; i < nIn; i++) {
      napi_value name, t, data, shape;
      checkNapi(napi_get_element(e, argv[1], i, &name), "input names");
      job->inNames[i] = getString(e, name);
      checkNapi(napi_get_element(e, argv[2], i, &t), "tensors");
      checkNapi(napi_get_named_property(e, t, "data", &data), "tensor.data");
      checkNapi(napi_get_named_property(e, t, "shape", &shape), "tensor.shape");
      napi_typedarray_type type;
      size_t length = 0, offset = 0;
      void* ptr = nullptr;
      napi_value ab;
      checkNapi(napi_get_typedarray_info(e, data, &type, &length, &ptr, &ab, &offset), "tensor.data (a typed array)");
      const TypeMap* tm = nullptr;
      for (const TypeMap& m : TYPES) if (m.js == type) tm = &m;
      if (!tm) throw JsError{"flux2 native: input " + job->inNames[i] + " has an unsupported element type"};
      const std::vector<int64_t> dims = getShape(e, shape);
      napi_ref ref;
      checkNapi(napi_create_reference(e, data, 1, &ref), "reference");
      job->keepAlive.push_back(ref);
      // ORT wants a non-null pointer even for an empty tensor.
      static float empty = 0;
      check(ort->CreateTensorWithDataAsOrtValue(job->mem, ptr ? ptr : &empty, length * tm->bytes, dims.data(), dims.size(), tm->onnx, &job->inputs[i]));
    }
    for (uint32_t i = 0; i < nOut; i++) {
      napi_value name;
      checkNapi(napi_get_element(e, argv[3], i, &name), "output names");
      job->outNames[i] = getString(e, name);
    }
    napi_value promise, resource;
    checkNapi(napi_create_promise(e, &job->deferred, &promise), "promise");
    checkNapi(napi_create_string_utf8(e, "flux2.native.run", NAPI_AUTO_LENGTH, &resource), "string");
    checkNapi(napi_create_async_work(e, nullptr, resource, executeRun, completeRun, job, &job->work), "async work");
    checkNapi(napi_queue_async_work(e, job->work), "async work");
    job->session->running++;
    return promise;
  } catch (...) {
    job->release(e);
    delete job;
    throw;
  }
}

napi_value release(napi_env e, napi_callback_info cb) {
  const auto argv = args<1>(e, cb, "release(handle)");
  void* p = nullptr;
  checkNapi(napi_get_value_external(e, argv[0], &p), "session handle");
  auto* s = static_cast<Session*>(p);
  if (s->running) throw JsError{"flux2 native: the session is still running; await its runs before releasing it"};
  if (s->session) ort->ReleaseSession(s->session);
  s->session = nullptr;  // the Session struct stays until the handle's finalizer (a later use gets a clear error)
  return nullptr;
}

napi_value info(napi_env e, napi_callback_info) {
  napi_value result, bf16, version;
  checkNapi(napi_create_object(e, &result), "object");
  checkNapi(napi_get_boolean(e, flux2::cpuHasBf16(), &bf16), "boolean");
  checkNapi(napi_create_int32(e, ORT_API_VERSION, &version), "number");
  checkNapi(napi_set_named_property(e, result, "bf16", bf16), "object");
  checkNapi(napi_set_named_property(e, result, "apiVersion", version), "object");
  checkNapi(napi_set_named_property(e, result, "ortVersion", str(e, OrtGetApiBase()->GetVersionString())), "object");
  return result;
}

// Every exported function turns a C++ failure into a thrown JavaScript Error.
template <napi_value (*F)(napi_env, napi_callback_info)>
napi_value guarded(napi_env e, napi_callback_info cb) {
  try {
    return F(e, cb);
  } catch (const JsError& err) {
    napi_throw_error(e, nullptr, err.message.c_str());
  } catch (const std::exception& err) {
    napi_throw_error(e, nullptr, err.what());
  }
  return nullptr;
}

}  // namespace

NAPI_MODULE_INIT() {
  const struct {
    const char* name;
    napi_callback fn;
  } fns[] = {{"info", guarded<info>}, {"createSession", guarded<createSession>}, {"run", guarded<run>}, {"release", guarded<release>}};
  for (const auto& f : fns) {
    napi_value v;
    napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.fn, nullptr, &v);
    napi_set_named_property(env, exports, f.name, v);
  }
  return exports;
}
