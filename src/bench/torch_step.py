#!/usr/bin/env python3
"""One FLUX.2 transformer forward in PyTorch, for `flux2 bench --compare torch`.

The project's own short implementation of the transformer (spec: FLUX2.md section 4), written
so that flux2.ts can be timed side by side with what a Python user would run on the same
machine: bf16 weights and compute (torch_dtype=torch.bfloat16) or float32. It reads a diffusers
transformer folder or file (.safetensors, parsed here: Debian's python3-torch has no
safetensors package) and needs nothing but PyTorch.

  torch_step.py check GOLDEN_DIR
      run every diffusers-layout transformer case of a golden set in float32 and compare with
      its expected output (one JSON line: per case the max abs error and the tolerance)
  torch_step.py bench MODEL_DIR --resolution 512 --text-length 512 --dtype bf16|fp32 [--repeats N]
      one warm-up forward, then N timed forwards on random inputs (one JSON line)
  torch_step.py matmul M N K [--rounds N]
      x [M, K] · W [N, K]ᵀ (F.linear, what every Linear of the step is) in bf16 and in float32:
      the best of N runs each, interleaved (one JSON line), for `flux2 bench --kernels`
"""

import argparse
import json
import math
import mmap
import os
import struct
import sys
import time

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64}


# ---------------------------------------------------------------------------------------------
# safetensors (the format: an 8-byte little-endian header length, a JSON header, raw tensors)

def open_safetensors(path):
    """name -> tensor, memory-mapped (read-only views; nothing is copied until converted)."""
    f = open(path, "rb")
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # copy-on-write: torch wants a writable buffer
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES[t["dtype"]]
        start, end = t["data_offsets"]
        count = (end - start) // torch.tensor([], dtype=dtype).element_size()
        x = torch.frombuffer(mm, dtype=dtype, count=count, offset=8 + n + start) if count else torch.empty(0, dtype=dtype)
        out[name] = x.view(t["shape"])
    return out


def load_weights(path, dtype):
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors"))
    else:
        files = [path]
    w = {}
    for f in files:
        w.update(open_safetensors(f))
    return {k: v.to(dtype) for k, v in w.items()}


# ---------------------------------------------------------------------------------------------
# The transformer (FLUX2.md section 4; diffusers key names, section 7.1)

def timestep_features(t, channels):
    """[cos(tau f), sin(tau f)], tau = 1000 t, f_k = exp(-ln(10000) k / half) (section 4.2)."""
    half = channels // 2
    f = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    arg = (t.float() * 1000)[:, None] * f[None]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


def rope_tables(ids, axes_dims, theta):
    """cos/sin [L, head_dim], each angle repeated for its (2m, 2m+1) pair (section 4.5)."""
    cos, sin = [], []
    pos = ids.to(torch.float64)
    for a, d in enumerate(axes_dims):
        omega = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        phi = pos[:, a:a + 1] * omega[None]
        cos.append(torch.cos(phi).repeat_interleave(2, dim=-1))
        sin.append(torch.sin(phi).repeat_interleave(2, dim=-1))
    return torch.cat(cos, -1).float(), torch.cat(sin, -1).float()


def apply_rope(x, cos, sin):
    """x [B, H, L, Dh]: (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) per adjacent pair, in float32."""
    xf = x.float()
    x0, x1 = xf[..., 0::2], xf[..., 1::2]
    c, s = cos[..., 0::2], sin[..., 0::2]
    out = torch.stack([x0 * c - x1 * s, x1 * c + x0 * s], dim=-1).flatten(-2)
    return out.to(x.dtype)


class Flux2Step:
    def __init__(self, config, weights, dtype):
        self.c = config
        self.w = weights
        self.dtype = dtype
        self.H = config["num_attention_heads"]
        self.Dh = config["attention_head_dim"]
        self.D = self.H * self.Dh
        self.M = int(self.D * config["mlp_ratio"])
        self.eps = config.get("eps", 1e-6)

    def lin(self, x, name):
        return F.linear(x, self.w[name + ".weight"])

    def ln(self, x):
        # LayerNorm without affine, computed in float32 (section 10, item 8).
        return F.layer_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)

    def rms(self, x, name):
        xf = x.float()
        y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return y * self.w[name + ".weight"]

    def heads(self, x):
        B, L, _ = x.shape
        return x.view(B, L, self.H, self.Dh).transpose(1, 2)

    def attention(self, q, k, v):
        """softmax(q kᵀ / sqrt(Dh)) v over all tokens, a few heads at a time (memory: L² per head)."""
        B, H, L, Dh = q.shape
        out = torch.empty_like(q)
        step = max(1, (1 << 28) // max(1, L * L * 4))
        for h in range(0, H, step):
            s = torch.matmul(q[:, h:h + step], k[:, h:h + step].transpose(-1, -2)) * (1.0 / math.sqrt(Dh))
            p = torch.softmax(s.float(), dim=-1).to(q.dtype)
            out[:, h:h + step] = torch.matmul(p, v[:, h:h + step])
        return out.transpose(1, 2).reshape(B, L, H * Dh)

    def qk(self, q, k, cos, sin, nq, nk):
        q, k = self.rms(self.heads(q), nq), self.rms(self.heads(k), nk)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)

    def ff(self, u, name):
        h = self.lin(u, name + ".linear_in")
        return self.lin(F.silu(h[..., :self.M]) * h[..., self.M:], name + ".linear_out")

    def double(self, i, x, c, mi, mc, cos, sin):
        p = f"transformer_blocks.{i}"
        b1, g1, a1, b2, g2, a2 = mi
        cb1, cg1, ca1, cb2, cg2, ca2 = mc
        xa = (1 + g1) * self.ln(x) + b1
        cx = (1 + cg1) * self.ln(c) + cb1
        Lc = c.shape[1]
        q = torch.cat([self.lin(cx, p + ".attn.add_q_proj"), self.lin(xa, p + ".attn.to_q")], 1)
        k = torch.cat([self.lin(cx, p + ".attn.add_k_proj"), self.lin(xa, p + ".attn.to_k")], 1)
        v = torch.cat([self.lin(cx, p + ".attn.add_v_proj"), self.lin(xa, p + ".attn.to_v")], 1)
        # The text rows use the added-projection norms, the image rows the image ones.
        qh, kh = self.heads(q), self.heads(k)
        qh = torch.cat([self.rms(qh[:, :, :Lc], p + ".attn.norm_added_q"), self.rms(qh[:, :, Lc:], p + ".attn.norm_q")], 2)
        kh = torch.cat([self.rms(kh[:, :, :Lc], p + ".attn.norm_added_k"), self.rms(kh[:, :, Lc:], p + ".attn.norm_k")], 2)
        a = self.attention(apply_rope(qh, cos, sin), apply_rope(kh, cos, sin), self.heads(v))
        ac, ax = a[:, :Lc], a[:, Lc:]
        x = x + a1 * self.lin(ax, p + ".attn.to_out.0")
        x = x + a2 * self.ff((1 + g2) * self.ln(x) + b2, p + ".ff")
        c = c + ca1 * self.lin(ac, p + ".attn.to_add_out")
        c = c + ca2 * self.ff((1 + cg2) * self.ln(c) + cb2, p + ".ff_context")
        return x, c

    def single(self, i, h, ms, cos, sin):
        p = f"single_transformer_blocks.{i}"
        b, g, a = ms
        u = (1 + g) * self.ln(h) + b
        P = self.lin(u, p + ".attn.to_qkv_mlp_proj")
        D, M = self.D, self.M
        q, k = self.qk(P[..., :D], P[..., D:2 * D], cos, sin, p + ".attn.norm_q", p + ".attn.norm_k")
        att = self.attention(q, k, self.heads(P[..., 2 * D:3 * D]))
        mlp = F.silu(P[..., 3 * D:3 * D + M]) * P[..., 3 * D + M:]
        return h + a * self.lin(torch.cat([att, mlp], -1), p + ".attn.to_out")

    @torch.no_grad()
    def forward(self, hidden, text, timestep, img_ids, txt_ids, guidance=None):
        c, dt = self.c, self.dtype
        T = c["timestep_guidance_channels"]
        emb = lambda feats, name: self.lin(F.silu(self.lin(feats.to(dt), name + ".linear_1")), name + ".linear_2")
        temb = emb(timestep_features(timestep, T), "time_guidance_embed.timestep_embedder")
        if c.get("guidance_embeds") and guidance is not None:
            temb = temb + emb(timestep_features(guidance, T), "time_guidance_embed.guidance_embedder")
        st = F.silu(temb)
        chunks = lambda m, n: [t[:, None] for t in m.chunk(n, dim=-1)]
        mi = chunks(self.lin(st, "double_stream_modulation_img.linear"), 6)
        mc = chunks(self.lin(st, "double_stream_modulation_txt.linear"), 6)
        ms = chunks(self.lin(st, "single_stream_modulation.linear"), 3)
        x = self.lin(hidden.to(dt), "x_embedder")
        t = self.lin(text.to(dt), "context_embedder")
        cos, sin = rope_tables(torch.cat([txt_ids, img_ids], 0), c["axes_dims_rope"], c["rope_theta"])
        for i in range(c["num_layers"]):
            x, t = self.double(i, x, t, mi, mc, cos, sin)
        h = torch.cat([t, x], 1)
        for i in range(c["num_single_layers"]):
            h = self.single(i, h, ms, cos, sin)
        x = h[:, t.shape[1]:]
        scale, shift = [m[:, None] for m in self.lin(st, "norm_out.linear").chunk(2, dim=-1)]
        return self.lin(self.ln(x) * (1 + scale) + shift, "proj_out").float()


# ---------------------------------------------------------------------------------------------

def blas_library():
    """The BLAS shared library this process loaded (PyTorch's float32 matmuls run on it; Debian's
    reference libblas3 is ~30× slower than OpenBLAS), read from /proc/self/maps."""
    try:
        libs = [l.split()[-1] for l in open("/proc/self/maps") if "blas" in l.rsplit("/", 1)[-1]]
    except OSError:
        return None
    return libs[0] if libs else None


def check(golden):
    cases = json.load(open(os.path.join(golden, "cases.json")))["cases"]
    results = []
    for case in cases:
        if case["kind"] != "transformer":
            continue
        m = case["model"]["transformer"]
        if m.get("format", "diffusers") != "diffusers" or not m.get("config"):
            results.append({"name": case["name"], "skipped": "BFL key layout (this implementation reads diffusers names)"})
            continue
        config = json.load(open(os.path.join(golden, m["config"])))
        model = Flux2Step(config, load_weights(os.path.join(golden, m["weights"]), torch.float32), torch.float32)
        inp = open_safetensors(os.path.join(golden, case["inputs"]))
        want = open_safetensors(os.path.join(golden, case["expected"]))["output"]
        got = model.forward(inp["hidden_states"], inp["encoder_hidden_states"], inp["timestep"],
                            inp["img_ids"].reshape(-1, 4)[: inp["hidden_states"].shape[1]],
                            inp["txt_ids"].reshape(-1, 4)[: inp["encoder_hidden_states"].shape[1]], inp.get("guidance"))
        tol = case["tolerance"]["tensors"]["output"]["abs"]
        err = (got - want).abs().max().item()
        results.append({"name": case["name"], "max_abs_error": err, "tolerance": tol, "pass": err <= tol})
    print(json.dumps({"torch": torch.__version__, "cases": results}))


def bench(a):
    threads = a.threads or os.cpu_count()
    torch.set_num_threads(threads)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[a.dtype]
    tdir = os.path.join(a.model, "transformer")
    config = json.load(open(os.path.join(tdir, "config.json")))
    t0 = time.perf_counter()
    model = Flux2Step(config, load_weights(tdir, dtype), dtype)
    load = time.perf_counter() - t0
    h = w = a.resolution // 16
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, h * w, config["in_channels"], generator=g)
    text = torch.randn(1, a.text_length, config["joint_attention_dim"], generator=g)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(ys), ys, xs, torch.zeros_like(ys)], -1).reshape(-1, 4)
    txt_ids = torch.zeros(a.text_length, 4, dtype=torch.int64)
    txt_ids[:, 3] = torch.arange(a.text_length)
    guidance = torch.tensor([4.0]) if config.get("guidance_embeds") else None
    run = lambda: model.forward(hidden, text, torch.tensor([1.0]), img_ids, txt_ids, guidance)
    t0 = time.perf_counter()
    y = run()
    first = time.perf_counter() - t0
    if not torch.isfinite(y).all():
        raise SystemExit("torch_step: output is not finite")
    runs = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        run()
        runs.append(time.perf_counter() - t0)
    peak = 0
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    print(json.dumps({"torch": torch.__version__, "dtype": a.dtype, "threads": threads, "resolution": a.resolution,
                      "text_length": a.text_length, "load_seconds": load, "first_run_seconds": first,
                      "runs": runs, "peak_rss_bytes": peak, "blas": blas_library()}))


def matmul(a):
    threads = a.threads or os.cpu_count()
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(a.M, a.K, generator=g)
    w = torch.randn(a.N, a.K, generator=g) / math.sqrt(a.K)
    cases = {"torch_bf16": (x.bfloat16(), w.bfloat16()), "torch_fp32": (x, w)}
    runs = {k: [] for k in cases}
    for xx, ww in cases.values():
        F.linear(xx, ww)  # warm-up (oneDNN picks and JIT-compiles its kernel on the first call)
    for _ in range(max(1, a.rounds)):
        for k, (xx, ww) in cases.items():
            t0 = time.perf_counter()
            F.linear(xx, ww)
            runs[k].append(time.perf_counter() - t0)
    flop = 2 * a.M * a.N * a.K
    out = [{"kernel": k, "M": a.M, "N": a.N, "K": a.K, "seconds": min(r), "gflops": flop / 1e9 / min(r), "runs": r} for k, r in runs.items()]
    print(json.dumps({"torch": torch.__version__, "threads": threads, "blas": blas_library(), "kernels": out}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("golden")
    b = sub.add_parser("bench")
    b.add_argument("model")
    b.add_argument("--resolution", type=int, default=512)
    b.add_argument("--text-length", type=int, default=512)
    b.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    b.add_argument("--repeats", type=int, default=1)
    b.add_argument("--threads", type=int, default=0)
    m = sub.add_parser("matmul")
    for d in ("M", "N", "K"):
        m.add_argument(d, type=int)
    m.add_argument("--rounds", type=int, default=3)
    m.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.cmd == "check":
        check(a.golden)
    elif a.cmd == "matmul":
        matmul(a)
    else:
        bench(a)


if __name__ == "__main__":
    main()
