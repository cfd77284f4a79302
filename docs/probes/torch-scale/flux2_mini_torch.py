"""flux2-mini's text-encoder and transformer training stages, replayed in PyTorch at a larger scale.

Analysis tool behind docs/probes/torch-scale/README.md and docs/flux2-mini.md (session 14); not part
of the package or the tests. flux2.ts trains flux2-mini on a 2-core CPU in about 90 minutes; this asks
what the same model, data and objectives reach with ten to forty times the compute, on the GPU machine
some sessions are lent, where Node is not installed. It is written from the FLUX.2 spec and from
src/models/ and src/train/: the transformer stage as flux2 train --full runs it (x_t = (1 - s) x0 +
s noise, target noise - x0, MSE over every element, s uniform on the scheduler's 1000-entry table, 10%
empty captions, clip_grad_norm_ 1, AdamW (0.9, 0.999), cosine with linear warmup) and the text-encoder
stage as flux2 train --text-encoder --align-pool mean runs it. The VAE encoder and the Qwen3 text path
are here too, so latents and embeddings are computed on the GPU from pixels and token ids (the
embeddings of 9,833 captions would be 0.5 GB to carry). Hand-written rather than diffusers and
transformers: neither is installed on the CPU machine where this is developed and checked (diffusers is
on neither machine), and a reimplementation has to pass `check` against the reference's golden fixtures
either way.

  python3 flux2_mini_torch.py check GOLDEN_DIR GOLDEN_TRAIN_DIR       (this code against the fixtures)
  python3 flux2_mini_torch.py data-check TE VAE_DIR DATA CACHE_FILE    (the data path against a flux2 train cache)
  python3 flux2_mini_torch.py reduce-te TE_DIR DATA OUT [--f32]        (the text encoder, only the rows the captions use)
  python3 flux2_mini_torch.py train --te TE --vae VAE_DIR --init TRANSFORMER_DIR --data DATA --out RESULT \
      [--te-steps N --te-batch-size B --te-lr LR --te-budget S] --steps N --batch-size B --lr LR [--time-budget S]
  python3 flux2_mini_torch.py unpack RESULT BASE_MODEL_DIR FULL_TE_DIR OUT_MODEL_DIR   (a folder flux2 eval reads)

DATA is export_data.mjs's file. The safetensors reader and writer are hand-written because the CPU
machine's Debian torch has no safetensors package; the format is a JSON header and raw arrays.
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------
# safetensors

_NP = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8, "I8": np.int8, "BF16": np.uint16}


def st_read(path):
    with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        arr = np.frombuffer(body[a:b], dtype=_NP[t["dtype"]]).reshape(t["shape"])
        if t["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = torch.from_numpy(arr.copy())
    return out, meta


def bf16_bits(x):
    """float32 → the bf16 bit patterns (int64 in 0..65535), rounded to nearest even."""
    bits = x.detach().float().cpu().contiguous().view(torch.int32).long() & 0xFFFFFFFF
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def st_write_bf16(path, tensors, metadata=None):
    _st_write(path, tensors, metadata, "BF16")


def st_write_f32(path, tensors, metadata=None):
    _st_write(path, tensors, metadata, "F32")


def _st_write(path, tensors, metadata, dtype):
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if not t.is_floating_point():
            raw = t.long().numpy().tobytes()
            header[name] = {"dtype": "I64", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
            chunks.append(raw)
            offset += len(raw)
            continue
        if dtype == "BF16":
            raw = bf16_bits(t).numpy().astype(np.uint16).tobytes()
        else:
            raw = t.float().numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for c in chunks:
            f.write(c)


# --------------------------------------------------------------------------------------------
# Qwen3 prompt embeddings (transformers Qwen3Model with output_hidden_states; klein stacks 9, 18, 27)


def rms_norm(x, w, eps):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)) * w


class Qwen3:
    """weights may hold only some rows of the embedding table: then `rows` lists their token ids."""

    def __init__(self, weights, cfg, device, rows=None):
        self.w = {k: v.float().to(device) for k, v in weights.items()}
        self.c = cfg
        self.device = device
        self.rows = rows
        if rows is not None:
            self.lookup = torch.full((cfg["vocab_size"],), -1, dtype=torch.long, device=device)
            self.lookup[rows.long().to(device)] = torch.arange(len(rows), device=device)

    def hidden_states(self, ids, mask):
        """All hidden states as transformers returns them: the embeddings, then each layer's output; the last is final-normed."""
        c, w = self.c, self.w
        B, L = ids.shape
        H, KV, Dh = c["num_attention_heads"], c["num_key_value_heads"], c.get("head_dim", 128)
        eps = c["rms_norm_eps"]
        if self.rows is not None:
            ids = self.lookup[ids]
            if (ids < 0).any():
                raise ValueError("a token id outside the reduced embedding table")
        x = w["model.embed_tokens.weight"][ids]
        pos = torch.arange(L, device=self.device, dtype=torch.float32)
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, Dh, 2, device=self.device, dtype=torch.float32) / Dh))
        ang = torch.outer(pos, inv)
        cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
        causal = torch.ones(L, L, dtype=torch.bool, device=self.device).tril()
        allowed = causal[None, None] & mask.bool()[:, None, None, :]
        bias = torch.zeros(B, 1, L, L, device=self.device).masked_fill(~allowed, float("-inf"))

        def rot(t):
            t1, t2 = t[..., : Dh // 2], t[..., Dh // 2 :]
            return t * cos + torch.cat([-t2, t1], -1) * sin

        out = [x]
        for i in range(c["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
            q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, L, H, Dh)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, L, KV, Dh)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, L, KV, Dh)
            q = rot(rms_norm(q, w[p + "self_attn.q_norm.weight"], eps).transpose(1, 2))
            k = rot(rms_norm(k, w[p + "self_attn.k_norm.weight"], eps).transpose(1, 2))
            v = v.transpose(1, 2)
            k = k.repeat_interleave(H // KV, 1)
            v = v.repeat_interleave(H // KV, 1)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(Dh) + bias, -1)
            a = (att @ v).transpose(1, 2).reshape(B, L, H * Dh)
            x = x + a @ w[p + "self_attn.o_proj.weight"].T
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
            x = x + (F.silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
            out.append(x)
        out[-1] = rms_norm(x, w["model.norm.weight"], eps)
        return out

    def prompt_embeds(self, ids, mask, layers):
        hs = self.hidden_states(ids, mask)
        return torch.cat([hs[i] for i in layers], -1)


# --------------------------------------------------------------------------------------------
# AutoencoderKLFlux2's encoder, for the latents the trainer caches: VAE mode (the moments' mean),
# 2×2 patchify, latent batch-norm with the VAE's running statistics


class VaeEncoder:
    def __init__(self, weights, cfg, device):
        self.w = {k: v.float().to(device) for k, v in weights.items()}
        self.c = cfg

    def conv(self, x, name, stride=1, pad=None):
        w = self.w[name + ".weight"]
        if pad is not None:
            x = F.pad(x, pad)
            return F.conv2d(x, w, self.w[name + ".bias"], stride=stride)
        return F.conv2d(x, w, self.w[name + ".bias"], stride=stride, padding=w.shape[-1] // 2)

    def gn(self, x, name):
        return F.group_norm(x, self.c["norm_num_groups"], self.w[name + ".weight"], self.w[name + ".bias"], eps=1e-6)

    def resnet(self, x, name):
        h = self.conv(F.silu(self.gn(x, name + ".norm1")), name + ".conv1")
        h = self.conv(F.silu(self.gn(h, name + ".norm2")), name + ".conv2")
        return (self.conv(x, name + ".conv_shortcut") if name + ".conv_shortcut.weight" in self.w else x) + h

    def attention(self, x, name):
        B, C, H, W = x.shape
        n = self.gn(x, name + ".group_norm").flatten(2).transpose(1, 2)
        lin = lambda t, p: t @ self.w[f"{name}.{p}.weight"].T + self.w[f"{name}.{p}.bias"]
        q, k, v = lin(n, "to_q"), lin(n, "to_k"), lin(n, "to_v")
        o = lin(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(C), -1) @ v, "to_out.0")
        return x + o.transpose(1, 2).reshape(B, C, H, W)

    def mid(self, x, name):
        x = self.resnet(x, name + ".resnets.0")
        if self.c.get("mid_block_add_attention", True):
            x = self.attention(x, name + ".attentions.0")
        return self.resnet(x, name + ".resnets.1")

    def moments(self, x):
        h = self.conv(x, "encoder.conv_in")
        n = len(self.c["block_out_channels"])
        for i in range(n):
            for j in range(self.c["layers_per_block"]):
                h = self.resnet(h, f"encoder.down_blocks.{i}.resnets.{j}")
            if i < n - 1:
                h = self.conv(h, f"encoder.down_blocks.{i}.downsamplers.0.conv", stride=2, pad=(0, 1, 0, 1))
        h = self.mid(h, "encoder.mid_block")
        h = self.conv(F.silu(self.gn(h, "encoder.conv_norm_out")), "encoder.conv_out")
        return self.conv(h, "quant_conv") if self.c.get("use_quant_conv", True) else h

    def latents(self, rgb_u8):
        """(B, H, W, 3) uint8 → normalized packed-channel latents (B, 4C, H/2f, W/2f) as flux2 train caches them."""
        return self.normalized(rgb_u8.permute(0, 3, 1, 2).float() / 255 * 2 - 1)

    def normalized(self, x):
        mean = self.moments(x).chunk(2, 1)[0]
        B, C, H, W = mean.shape
        p = mean.view(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(B, 4 * C, H // 2, W // 2)
        rm, rv = self.w["bn.running_mean"], self.w["bn.running_var"]
        return (p - rm.view(1, -1, 1, 1)) / torch.sqrt(rv.view(1, -1, 1, 1) + self.c["batch_norm_eps"])


def load_vae_files(weights, config, device):
    w, _ = st_read(weights)
    return VaeEncoder(w, json.load(open(config)), device)


def load_vae(vae_dir, device):
    return load_vae_files(f"{vae_dir}/diffusion_pytorch_model.safetensors", f"{vae_dir}/config.json", device)


def all_latents(vae, pixels, device, chunk=512):
    with torch.no_grad():
        return torch.cat([vae.latents(pixels[a : a + chunk].to(device)) for a in range(0, pixels.shape[0], chunk)])


# --------------------------------------------------------------------------------------------
# Flux2Transformer2DModel (no biases anywhere; interleaved 4-axis RoPE; shared AdaLN modulation)


class Flux2Transformer(torch.nn.Module):
    def __init__(self, cfg, weights):
        super().__init__()
        self.c = cfg
        self.D = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        self.M = int(self.D * cfg["mlp_ratio"])
        self.p = torch.nn.ParameterDict({k.replace(".", "__"): torch.nn.Parameter(v.float().clone()) for k, v in weights.items()})

    def W(self, name):
        return self.p[name.replace(".", "__")]

    def lin(self, x, name):
        return x @ self.W(name + ".weight").T

    def named_weights(self):
        return {k.replace("__", "."): v for k, v in self.p.items()}

    def timestep_features(self, t):
        half = self.c["timestep_guidance_channels"] // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        a = (t.float() * 1000)[:, None] * freqs[None]
        return torch.cat([a.cos(), a.sin()], -1)

    def rope(self, ids):
        """(S, 4) position ids → cos, sin of shape (S, head_dim / 2), axes concatenated."""
        cos, sin = [], []
        for a, d in enumerate(self.c["axes_dims_rope"]):
            freq = 1.0 / (self.c["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64, device=ids.device) / d))
            ang = ids[:, a].double()[:, None] * freq[None]
            cos.append(ang.cos().float())
            sin.append(ang.sin().float())
        return torch.cat(cos, -1), torch.cat(sin, -1)

    def heads(self, x):
        B, S, _ = x.shape
        return x.view(B, S, self.c["num_attention_heads"], self.c["attention_head_dim"]).transpose(1, 2)

    def apply_rope(self, x, cos, sin):
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)

    def attention(self, q, k, v, cos, sin):
        q, k = self.apply_rope(q, cos, sin), self.apply_rope(k, cos, sin)
        if hasattr(F, "scaled_dot_product_attention"):
            a = F.scaled_dot_product_attention(q, k, v)
        else:
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v
        B, H, S, Dh = a.shape
        return a.transpose(1, 2).reshape(B, S, H * Dh)

    def norm(self, x):
        return F.layer_norm(x, (x.shape[-1],), eps=self.c["eps"])

    def qk(self, x, name):
        return rms_norm(self.heads(x), self.W(name + ".weight"), self.c["eps"])

    def forward(self, hidden, text, t, img_ids, txt_ids):
        D, M = self.D, self.M
        cos, sin = self.rope(torch.cat([txt_ids, img_ids], 0))
        temb = self.lin(F.silu(self.lin(self.timestep_features(t), "time_guidance_embed.timestep_embedder.linear_1")), "time_guidance_embed.timestep_embedder.linear_2")
        s = F.silu(temb)
        mod_img = self.lin(s, "double_stream_modulation_img.linear")[:, None].chunk(6, -1)
        mod_txt = self.lin(s, "double_stream_modulation_txt.linear")[:, None].chunk(6, -1)
        mod_single = self.lin(s, "single_stream_modulation.linear")[:, None].chunk(3, -1)
        x = self.lin(hidden, "x_embedder")
        c = self.lin(text, "context_embedder")
        T = c.shape[1]
        for i in range(self.c["num_layers"]):
            p = f"transformer_blocks.{i}"
            sa, ca, ga, sm, cm, gm = mod_img
            tsa, tca, tga, tsm, tcm, tgm = mod_txt
            xa = self.norm(x) * (1 + ca) + sa
            ta = self.norm(c) * (1 + tca) + tsa
            q = torch.cat([self.qk(self.lin(ta, p + ".attn.add_q_proj"), p + ".attn.norm_added_q"), self.qk(self.lin(xa, p + ".attn.to_q"), p + ".attn.norm_q")], 2)
            k = torch.cat([self.qk(self.lin(ta, p + ".attn.add_k_proj"), p + ".attn.norm_added_k"), self.qk(self.lin(xa, p + ".attn.to_k"), p + ".attn.norm_k")], 2)
            v = torch.cat([self.heads(self.lin(ta, p + ".attn.add_v_proj")), self.heads(self.lin(xa, p + ".attn.to_v"))], 2)
            a = self.attention(q, k, v, cos, sin)
            x = x + ga * self.lin(a[:, T:], p + ".attn.to_out.0")
            h = self.lin(self.norm(x) * (1 + cm) + sm, p + ".ff.linear_in")
            x = x + gm * self.lin(F.silu(h[..., :M]) * h[..., M:], p + ".ff.linear_out")
            c = c + tga * self.lin(a[:, :T], p + ".attn.to_add_out")
            h = self.lin(self.norm(c) * (1 + tcm) + tsm, p + ".ff_context.linear_in")
            c = c + tgm * self.lin(F.silu(h[..., :M]) * h[..., M:], p + ".ff_context.linear_out")
        h = torch.cat([c, x], 1)
        shift, scale, gate = mod_single
        for i in range(self.c["num_single_layers"]):
            p = f"single_transformer_blocks.{i}.attn"
            u = self.lin(self.norm(h) * (1 + scale) + shift, p + ".to_qkv_mlp_proj")
            q, k, v, mg, mv = u.split([D, D, D, M, M], -1)
            a = self.attention(self.qk(q, p + ".norm_q"), self.qk(k, p + ".norm_k"), self.heads(v), cos, sin)
            h = h + gate * self.lin(torch.cat([a, F.silu(mg) * mv], -1), p + ".to_out")
        x = h[:, T:]
        sc, sh = self.lin(s, "norm_out.linear")[:, None].chunk(2, -1)
        return self.lin(self.norm(x) * (1 + sc) + sh, "proj_out")


def image_ids(h, w, device):
    yy, xx = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    z = torch.zeros(h * w, dtype=torch.long, device=device)
    return torch.stack([z, yy.flatten(), xx.flatten(), z], -1)


def text_ids(L, device):
    z = torch.zeros(L, dtype=torch.long, device=device)
    return torch.stack([z, z, z, torch.arange(L, device=device)], -1)


def pack(x):  # (B, C, h, w) → (B, h·w, C)
    return x.flatten(2).transpose(1, 2)


def flow_loss(model, x0, embeds, noise, sigmas):
    B, C, h, w = x0.shape
    s = sigmas.view(B, 1, 1, 1)
    xt = (1 - s) * x0 + s * noise
    pred = model(pack(xt), embeds, sigmas, image_ids(h, w, x0.device), text_ids(embeds.shape[1], x0.device))
    pred = pred.transpose(1, 2).reshape(B, C, h, w)
    return ((pred - (noise - x0)) ** 2).mean(), pred


def learning_rate(lr, warmup, total, k):
    if k < warmup:
        return lr * k / max(1, warmup)
    progress = (k - warmup) / max(1, total - warmup)
    return lr * max(0.0, 0.5 * (1 + math.cos(math.pi * progress)))


# --------------------------------------------------------------------------------------------
# The text encoder in a reduced form: every tensor but the embedding table, and only the table's
# rows the captions use (the rest never get a gradient). 3 MB instead of 22: it has to travel.


def load_te_dir(te_dir):
    w, _ = st_read(f"{te_dir}/model.safetensors")
    return {k: v.float() for k, v in w.items() if not k.startswith("lm_head")}, json.load(open(f"{te_dir}/config.json"))


def reduce_te(te_dir, data_file, out, f32=False):
    w, cfg = load_te_dir(te_dir)
    data, _ = st_read(data_file)
    rows = torch.unique(data["input_ids"].long())
    w = dict(w)
    w["model.embed_tokens.weight"] = w["model.embed_tokens.weight"][rows]
    w["embed_rows"] = rows
    (st_write_f32 if f32 else st_write_bf16)(out, w, {"config": json.dumps(cfg), "from": te_dir})
    print(f"{out}: {len(rows)} of {cfg['vocab_size']} embedding rows")


def load_te(path, device):
    """A text_encoder folder, a reduced text encoder file, or a `train` result that trained one."""
    if os.path.isdir(path):
        w, cfg = load_te_dir(path)
        return Qwen3(w, cfg, device)
    w, meta = st_read(path)
    if "text_encoder.embed_rows" in w:
        w = {k[len("text_encoder."):]: v for k, v in w.items() if k.startswith("text_encoder.")}
        meta = {**meta, "config": meta["te_config"]}
    rows = w.pop("embed_rows").long()
    return Qwen3(w, json.loads(meta["config"]), device, rows)


def te_result_part(path):
    """The text encoder tensors and metadata of a `train` result, to pass on to a result trained from it."""
    if os.path.isdir(path):
        return {}, {}
    w, meta = st_read(path)
    te = {k: v for k, v in w.items() if k.startswith("text_encoder.")}
    return te, ({k: v for k, v in meta.items() if k.startswith("te_")} if te else {})


def expand_te(reduced, full_dir, out_dir):
    """Put a reduced encoder's rows back into a full one's table: a text_encoder folder (bf16) for flux2."""
    w, meta = st_read(reduced)
    rows = w.pop("embed_rows").long()
    full, cfg = load_te_dir(full_dir)
    table = full["model.embed_tokens.weight"].clone()
    table[rows] = w.pop("model.embed_tokens.weight").float()
    w["model.embed_tokens.weight"] = table
    os.makedirs(out_dir, exist_ok=True)
    st_write_bf16(f"{out_dir}/model.safetensors", w, {"format": "pt"})
    with open(f"{out_dir}/config.json", "w") as f:
        json.dump(json.loads(meta["config"]), f, indent=2)


# --------------------------------------------------------------------------------------------
# The text-encoder stage of flux2 train --text-encoder --align-pool mean: the mean over all 64
# positions of the prompt embeddings (hidden states 9, 18, 27) predicts each caption's 8×8 CIELAB
# thumbnail through fc1 (256, SiLU) and fc2; MSE; the head is dropped afterwards.


def srgb_to_lab(rgb):
    """(…, 3) in 0..255 (float) → CIELAB (D65), the formulas of src/util/colour.ts."""
    c = rgb / 255
    lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = torch.tensor([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.072175], [0.0193339, 0.119192, 0.9503041]], dtype=lin.dtype, device=lin.device)
    xyz = lin @ m.T / torch.tensor([0.95047, 1.0, 1.08883], dtype=lin.dtype, device=lin.device)
    f = torch.where(xyz > 216 / 24389, xyz.clamp(min=1e-12) ** (1 / 3), (24389 / 27 * xyz + 16) / 116)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def descriptors(pixels, grid=8):
    """(N, H, W, 3) uint8 → (N, 3·grid²): box-averaged RGB cells in CIELAB, scaled ((L−50)/50, a/50, b/50)."""
    N, H, W, _ = pixels.shape
    cells = pixels.double().view(N, grid, H // grid, grid, W // grid, 3).mean((2, 4))
    lab = srgb_to_lab(cells)
    lab = torch.stack([(lab[..., 0] - 50) / 50, lab[..., 1] / 50, lab[..., 2] / 50], -1)
    return lab.reshape(N, -1).float()


def train_loop(what, loss_of, params, opt, order_base, g, dev, steps, batch_size, lr, warmup, budget, log, measure_at, log_every, window):
    """The loop both stages share: epochs of shuffled sample indices (repeats included), the cosine
    schedule, clip 1, AdamW; the loss kept every 50 steps. When `budget` seconds cannot hold `steps`
    (timed over the first `measure_at`), it trains as many as fit, the schedule stretched to them."""
    total, k, order, pos, t0, losses = steps, 0, None, 0, time.time(), []
    while k < total:
        if order is None or pos + batch_size > len(order):
            order, pos = order_base[torch.randperm(len(order_base), generator=g)], 0
        idx = order[pos : pos + batch_size].to(dev)
        pos += batch_size
        for group in opt.param_groups:
            group["lr"] = learning_rate(lr, warmup, total, k)
        loss = loss_of(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if k % 50 == 0:
            losses.append(loss.item())
        k += 1
        if k == measure_at and budget:
            fits = int(budget / ((time.time() - t0) / measure_at))
            if fits < total:
                log(f"{what}: {total} steps do not fit {budget}s; training {fits} instead (the cosine schedule is stretched to it)")
                total = fits
        if k % log_every == 0 or k == total:
            log(f"{what} step {k}/{total} loss {sum(losses[-window:]) / len(losses[-window:]):.4f} {time.time() - t0:.0f}s")
    return total, losses, time.time() - t0


def train_text_encoder(te, ids, mask, targets, order_base, a, g, log):
    dev = te.device
    params = {k: torch.nn.Parameter(v) for k, v in te.w.items() if not k.startswith("model.norm") and not k.startswith(f"model.layers.{te.c['num_hidden_layers'] - 1}.")}
    te.w.update(params)
    J = 3 * te.c["hidden_size"]
    head = {
        "fc1.weight": torch.nn.Parameter(((torch.rand(256, J, generator=g) * 2 - 1) / math.sqrt(J)).to(dev)),
        "fc1.bias": torch.nn.Parameter(torch.zeros(256, device=dev)),
        "fc2.weight": torch.nn.Parameter(((torch.rand(targets.shape[1], 256, generator=g) * 2 - 1) / math.sqrt(256)).to(dev)),
        "fc2.bias": torch.nn.Parameter(torch.zeros(targets.shape[1], device=dev)),
    }
    every = list(params.values()) + list(head.values())
    opt = torch.optim.AdamW(every, lr=a.te_lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    def loss_of(idx):
        feats = te.prompt_embeds(ids[idx], mask[idx], [9, 18, 27]).mean(1)
        pred = F.silu(feats @ head["fc1.weight"].T + head["fc1.bias"]) @ head["fc2.weight"].T + head["fc2.bias"]
        return ((pred - targets[idx]) ** 2).mean()

    result = train_loop("text encoder", loss_of, every, opt, order_base, g, dev, a.te_steps, a.te_batch_size, a.te_lr, a.te_warmup, a.te_budget, log,
                        measure_at=100, log_every=500, window=10)
    # What ships is bf16: the transformer stage sees the embeddings of the rounded encoder.
    te.w = {n: bf16_round(v.detach()) for n, v in te.w.items()}
    return result


def bf16_round(x):
    r = bf16_bits(x) << 16
    return torch.where(r >= 2**31, r - 2**32, r).to(torch.int32).view(torch.float32)


# --------------------------------------------------------------------------------------------
# check: this code against the reference's golden fixtures


def worst(name, got, want, rel):
    err = (got.double() - want.double()).abs().max().item()
    scale = want.double().abs().max().item()
    ok = err <= rel * max(scale, 1e-12)
    print(f"  {'ok ' if ok else 'BAD'} {name}: max |diff| {err:.3e} (largest value {scale:.3e})")
    return ok


def check(golden, golden_train):
    """On the GPU when there is one (TF32 off): the numbers the training runs there will use."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"device: {torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'}, torch {torch.__version__}")
    torch.manual_seed(0)
    ok = True
    on = lambda d: {k: v.to(dev) for k, v in d.items()}
    print("transformer forward (golden transformer/klein_tiny__t2i):")
    w, _ = st_read(f"{golden}/transformer/klein_tiny.safetensors")
    m = Flux2Transformer(json.load(open(f"{golden}/transformer/klein_tiny.config.json")), w).to(dev)
    i = on(st_read(f"{golden}/transformer/klein_tiny__t2i.inputs.safetensors")[0])
    e, _ = st_read(f"{golden}/transformer/klein_tiny__t2i.expected.safetensors")
    with torch.no_grad():
        out = m(i["hidden_states"], i["encoder_hidden_states"], i["timestep"], i["img_ids"][0], i["txt_ids"][0])
    ok &= worst("output", out.cpu(), e["output"], 1e-4)

    print("Qwen3 prompt embeddings (golden text_encoder/qwen3_tiny__prompt_embeds):")
    w, _ = st_read(f"{golden}/text_encoder/qwen3_tiny.safetensors")
    q = Qwen3(w, json.load(open(f"{golden}/text_encoder/qwen3_tiny.config.json")), dev)
    i = on(st_read(f"{golden}/text_encoder/qwen3_tiny__prompt_embeds.inputs.safetensors")[0])
    e, _ = st_read(f"{golden}/text_encoder/qwen3_tiny__prompt_embeds.expected.safetensors")
    layers = json.load(open(f"{golden}/text_encoder/qwen3_tiny__prompt_embeds.params.json"))["hidden_states_layers"]
    with torch.no_grad():
        hs = [h.cpu() for h in q.hidden_states(i["input_ids"], i["attention_mask"])]
    # Padded positions are compared too: the transformer attends to them.
    ok &= worst("hidden_states", torch.stack(hs), e["hidden_states"], 1e-4)
    ok &= worst("prompt_embeds", torch.cat([hs[k] for k in layers], -1), e["prompt_embeds"], 1e-4)

    print("VAE encoder moments (golden vae/vae_tiny__encode):")
    vae = load_vae_files(f"{golden}/vae/vae_tiny.safetensors", f"{golden}/vae/vae_tiny.config.json", dev)
    i = on(st_read(f"{golden}/vae/vae_tiny__encode.inputs.safetensors")[0])
    e, _ = st_read(f"{golden}/vae/vae_tiny__encode.expected.safetensors")
    with torch.no_grad():
        ok &= worst("moments", vae.moments(i["image"]).cpu(), e["moments"], 1e-4)
    print("image → normalized latents (golden pipeline/bn_norm):")
    i = on(st_read(f"{golden}/pipeline/bn_norm.inputs.safetensors")[0])
    e, _ = st_read(f"{golden}/pipeline/bn_norm.expected.safetensors")
    with torch.no_grad():
        ok &= worst("normalized", vae.normalized(i["image"]).cpu(), e["normalized"], 1e-4)

    print("two full AdamW training steps (golden-train train/full):")
    p = json.load(open(f"{golden_train}/train/full.params.json"))
    w, _ = st_read(f"{golden_train}/models/transformer.safetensors")
    m = Flux2Transformer(json.load(open(f"{golden_train}/models/transformer.config.json")), w).to(dev)
    i = on(st_read(f"{golden_train}/train/full.inputs.safetensors")[0])
    e, _ = st_read(f"{golden_train}/train/full.expected.safetensors")
    o = p["optimizer"]
    opt = torch.optim.AdamW(m.parameters(), lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"], weight_decay=o["weight_decay"])
    for k in range(p["steps"]):
        loss, pred = flow_loss(m, i["model_input"], i["prompt_embeds"], i[f"noise_{k}"], i[f"sigmas_{k}"])
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(m.parameters(), p["max_grad_norm"])
        ok &= worst(f"loss_{k}", loss.detach().cpu(), e[f"loss_{k}"], 1e-4)
        if k == 0:
            ok &= worst("model_pred_0", pred.detach().cpu(), e["model_pred_0"], 1e-4)
            ok &= worst("grad_norm_0", norm.detach().cpu(), e["grad_norm_0"], 1e-4)
        opt.step()
    finals = [n for n in e if n.startswith("final.")]
    named = m.named_weights()
    bad = [n for n in finals if not worst(n, named[n[len("final."):]].detach().cpu(), e[n], 1e-4)]
    ok &= not bad
    print("all match" if ok else "MISMATCH")
    return ok


# --------------------------------------------------------------------------------------------
# training


def padding_mask(lengths, L):
    """Right padding: 1 for the first lengths[i] of L positions."""
    return (torch.arange(L)[None] < lengths[:, None]).long()


def all_embeds(te, ids, lengths, device, layers=(9, 18, 27), chunk=512):
    mask = padding_mask(lengths, ids.shape[1])
    out = []
    with torch.no_grad():
        for a in range(0, ids.shape[0], chunk):
            out.append(te.prompt_embeds(ids[a : a + chunk].long().to(device), mask[a : a + chunk].to(device), list(layers)))
    return torch.cat(out)


def data_check(te, vae_dir, data_file, cache_file):
    """The data path against flux2 train's own cache of the same run: embeddings, latents, thumbnails."""
    data, _ = st_read(data_file)
    cache, meta = st_read(cache_file)
    captions = json.loads(meta["flux2_train_cache"])["captions"]
    te = load_te(te, "cpu")
    picks = [0, 1, 2, len(captions) // 2, len(captions) - 2]
    got = all_embeds(te, data["input_ids"][picks], data["lengths"][picks], "cpu")
    ok = True
    for j, k in enumerate(picks):
        ok &= worst(f"embedding of caption {k} {captions[k][:40]!r}", got[j], cache[f"embed.{k}"][0], 1e-4)
    vae = load_vae(vae_dir, "cpu")
    for name in [n for n in data if n.startswith("cached_latent.")]:
        i = int(name.split(".")[1])
        lat = all_latents(vae, data["pixels"][i : i + 1], "cpu")
        # 1e-3: the encoder's float32 rounding (ORT's convolutions against torch's) is divided by the
        # latent batch-norm's smallest standard deviations; the golden encoder check above holds 1e-4.
        ok &= worst(f"latent of sample {i}", lat, data[name], 1e-3)
        ok &= worst(f"thumbnail of sample {i}", descriptors(data["pixels"][i : i + 1])[0], data[f"descriptor.{i}"], 1e-4)
    print("all match" if ok else "MISMATCH")
    return ok


def train(a):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False  # float32, as flux2 train computes
    torch.backends.cudnn.allow_tf32 = False
    g = torch.Generator(device="cpu").manual_seed(a.seed)
    torch.manual_seed(a.seed)
    log = lambda m: print(f"[{a.name}] {m}", flush=True)
    t_start = time.time()
    data, meta = st_read(a.data)
    ids, lengths = data["input_ids"], data["lengths"]
    caption = data["sample_caption"].long()
    if a.max_samples:  # smoke tests on a CPU: the first samples, and only their captions are encoded
        caption, data["pixels"], data["sample_repeats"] = caption[: a.max_samples], data["pixels"][: a.max_samples], data["sample_repeats"][: a.max_samples]
    order_base = torch.repeat_interleave(torch.arange(caption.shape[0]), data["sample_repeats"].long())
    latents = all_latents(load_vae(a.vae, dev), data["pixels"], dev)
    log(f"{latents.shape[0]} latents {tuple(latents.shape[1:])} encoded")
    te = load_te(a.te, dev)
    out, passed = te_result_part(a.te)
    info = {"trained_by": "docs/probes/torch-scale/flux2_mini_torch.py", "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "seed": str(a.seed),
            "text_encoder_from": a.te, **passed}
    if a.te_steps:
        mask = padding_mask(lengths, ids.shape[1]).to(dev)
        sample_ids, sample_mask = ids.long().to(dev)[caption.to(dev)], mask[caption.to(dev)]
        targets = descriptors(data["pixels"]).to(dev)
        steps, te_losses, secs = train_text_encoder(te, sample_ids, sample_mask, targets, order_base, a, g, log)
        for k, v in te.w.items():
            out[f"text_encoder.{k}"] = v
        out["text_encoder.embed_rows"] = te.rows
        info.update({"te_steps": str(steps), "te_batch_size": str(a.te_batch_size), "te_lr": str(a.te_lr), "te_seconds": f"{secs:.0f}",
                     "te_loss_every_50": json.dumps([round(x, 5) for x in te_losses]), "te_config": json.dumps(te.c)})
    empty = int(meta["empty_caption"])
    used = torch.unique(torch.cat([caption, torch.tensor([empty])]))
    embeds = torch.zeros(ids.shape[0], ids.shape[1], 3 * te.c["hidden_size"], device=dev)
    embeds[used.to(dev)] = all_embeds(te, ids[used], lengths[used], dev)
    del te
    log(f"{len(used)} caption embeddings {tuple(embeds.shape[1:])}")
    caption = caption.to(dev)
    w, _ = st_read(f"{a.init}/diffusion_pytorch_model.safetensors")
    model = Flux2Transformer(json.load(open(f"{a.init}/config.json")), w).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=a.weight_decay)
    sigma_table = torch.tensor([(1000 - i) / 1000 for i in range(1000)], dtype=torch.float32)

    def loss_of(idx):
        B = idx.shape[0]
        x0 = latents[idx]
        drop = (torch.rand(B, generator=g) < a.caption_dropout).to(dev)
        cap = torch.where(drop, torch.full_like(caption[idx], empty), caption[idx])
        noise = torch.randn(x0.shape, generator=g).to(dev)
        sig = sigma_table[torch.randint(0, 1000, (B,), generator=g)].to(dev)
        return flow_loss(model, x0, embeds[cap], noise, sig)[0]

    total, losses, secs = train_loop("transformer", loss_of, list(model.parameters()), opt, order_base, g, dev, a.steps, a.batch_size, a.lr, a.warmup, a.time_budget, log,
                                     measure_at=200, log_every=2000, window=40)
    for n, v in model.named_weights().items():
        out[n] = v
    info.update({"steps": str(total), "batch_size": str(a.batch_size), "lr": str(a.lr), "seconds": f"{secs:.0f}",
                 "loss_every_50": json.dumps([round(x, 5) for x in losses]), "config": json.dumps(model.c), "wall_seconds": f"{time.time() - t_start:.0f}"})
    st_write_bf16(a.out, out, info)
    log(f"wrote {a.out}: transformer {total} steps in {secs:.0f}s; {time.time() - t_start:.0f}s in all")


def unpack_model(result, base_dir, full_te_dir, out_dir):
    """A trained result file → a flux2 model folder: base_dir's tokenizer, VAE and scheduler, the result's transformer and, when it trained one, its text encoder."""
    import shutil
    w, meta = st_read(result)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    shutil.copytree(base_dir, out_dir)
    tr = {k: v for k, v in w.items() if not k.startswith("text_encoder.")}
    st_write_bf16(f"{out_dir}/transformer/diffusion_pytorch_model.safetensors", tr, {"format": "pt"})
    with open(f"{out_dir}/transformer/config.json", "w") as f:
        json.dump({"_class_name": "Flux2Transformer2DModel", **json.loads(meta["config"])}, f, indent=2)
    te = {k[len("text_encoder."):]: v for k, v in w.items() if k.startswith("text_encoder.")}
    if te:
        tmp = f"{out_dir}/te_reduced.safetensors"
        st_write_f32(tmp, te, {"config": meta["te_config"]})
        expand_te(tmp, full_te_dir, f"{out_dir}/text_encoder")
        os.remove(tmp)
    keep = {k: v for k, v in meta.items() if "loss" not in k}
    with open(f"{out_dir}/trained_by.json", "w") as f:
        json.dump(keep, f, indent=2)
    print(f"{out_dir}: {', '.join(f'{k}={v}' for k, v in keep.items() if k not in ('config', 'te_config'))}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("golden")
    c.add_argument("golden_train")
    e = sub.add_parser("data-check")
    for n in ["te", "vae", "data", "cache"]:
        e.add_argument(n)
    r = sub.add_parser("reduce-te")
    for n in ["te_dir", "data", "out"]:
        r.add_argument(n)
    r.add_argument("--f32", action="store_true", help="keep float32 (default bf16, what ships)")
    u = sub.add_parser("unpack")
    for n in ["result", "base_dir", "full_te_dir", "out_dir"]:
        u.add_argument(n)
    t = sub.add_parser("train")
    for name, kind, default in [("te", str, None), ("vae", str, None), ("init", str, None), ("data", str, None), ("out", str, None), ("name", str, "run"),
                                ("steps", int, 3500), ("batch-size", int, 16), ("lr", float, 1e-3), ("warmup", int, 100),
                                ("weight-decay", float, 0.01), ("caption-dropout", float, 0.1), ("seed", int, 0), ("time-budget", float, 0),
                                ("te-steps", int, 0), ("te-batch-size", int, 32), ("te-lr", float, 1e-3), ("te-warmup", int, 30), ("te-budget", float, 0), ("max-samples", int, 0)]:
        t.add_argument(f"--{name}", type=kind, default=default, required=default is None and kind is str)
    a = ap.parse_args()
    if a.cmd == "check":
        sys.exit(0 if check(a.golden, a.golden_train) else 1)
    if a.cmd == "data-check":
        sys.exit(0 if data_check(a.te, a.vae, a.data, a.cache) else 1)
    if a.cmd == "reduce-te":
        return reduce_te(a.te_dir, a.data, a.out, a.f32)
    if a.cmd == "unpack":
        return unpack_model(a.result, a.base_dir, a.full_te_dir, a.out_dir)
    train(a)


if __name__ == "__main__":
    main()
