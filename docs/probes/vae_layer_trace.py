# Analysis script behind docs/flux2-mini.md, session 15; not part of the package or the tests.
# Usage: python3 docs/probes/vae_layer_trace.py [VAE_DIR]   (default models/flux2-mini/vae; needs torch)
#
# Discs of a few colours on white, through the VAE encoder (the torch replay's, checked against the
# golden fixtures): at every encoder layer, how far apart two colours' activations are at the disc's
# centre, relative to the layer's scale. A VAE that has not learned a colour direction makes
# purple and grey (or green and teal, pink and orange) converge while blue and grey stay apart.
import os, sys, torch, torch.nn.functional as F
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "torch-scale"))
import flux2_mini_torch as M
vae = M.load_vae(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "models", "flux2-mini", "vae"), "cpu")
S = 64
def disc(rgb):
    x = torch.ones(1, 3, S, S)
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    m = ((yy - 32) ** 2 + (xx - 32) ** 2) < 144
    for c in range(3): x[0, c][m] = rgb[c] / 127.5 - 1
    return x
cols = {"purple": (142, 68, 173), "grey": (120, 120, 120), "green": (39, 174, 96), "teal": (46, 124, 120), "pink": (232, 67, 147), "orange": (205, 136, 95), "blue": (30, 144, 255)}
trace = {}
def run(x):
    t = []
    self = vae
    h = self.conv(x, "encoder.conv_in"); t.append(("conv_in", h))
    n = len(self.c["block_out_channels"])
    for i in range(n):
        for j in range(self.c["layers_per_block"]):
            h = self.resnet(h, f"encoder.down_blocks.{i}.resnets.{j}"); t.append((f"down{i}.res{j}", h))
        if i < n - 1:
            h = self.conv(h, f"encoder.down_blocks.{i}.downsamplers.0.conv", stride=2, pad=(0, 1, 0, 1)); t.append((f"down{i}.ds", h))
    h = self.mid(h, "encoder.mid_block"); t.append(("mid", h))
    g = self.gn(h, "encoder.conv_norm_out"); t.append(("norm_out", g))
    h = self.conv(F.silu(g), "encoder.conv_out"); t.append(("conv_out", h))
    h = self.conv(h, "quant_conv"); t.append(("quant(mean)", h[:, :h.shape[1]//2])); t.append(("logvar", h[:, h.shape[1]//2:]))
    return t
for k, c in cols.items(): trace[k] = run(disc(c))
def centre(h):  # features at the disc centre
    H = h.shape[2]; return h[0, :, H // 2, H // 2]
pairs = [("purple", "grey"), ("green", "teal"), ("pink", "orange"), ("blue", "grey")]
print("layer".ljust(12), *[f"{a}-{b}".rjust(14) for a, b in pairs], "  (centre distance / feature scale)")
for li in range(len(trace["grey"])):
    name = trace["grey"][li][0]
    row = []
    for a, b in pairs:
        fa, fb = centre(trace[a][li][1]), centre(trace[b][li][1])
        scale = trace["grey"][li][1].std().item()
        row.append(f"{((fa - fb).norm() / (scale * fa.numel() ** 0.5)).item():14.3f}")
    print(name.ljust(12), *row)
lv = trace["purple"][-1][1]; print("logvar mean per channel", [round(v, 2) for v in lv.mean((0, 2, 3)).tolist()])
