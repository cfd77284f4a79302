# Analysis script behind a number in docs/flux2-mini.md (session 7); not part of the package or the tests.
# Usage: python3 docs/probes/hex_probe.py RUN_DIR/cache/<key>.safetensors   (numpy; the cache flux2 train writes for a --full run)
# Is a hex colour linearly readable from flux2-mini's frozen text features? Ridge regression from
# the cached prompt embeddings (flux2 train's cache) of "a #RRGGBB <shape> on a white background"
# captions to the colour, scored as CIELAB ΔE on a held-out split.
# The split is of *training* captions: right for a frozen, never-trained encoder; for a trained one
# (versions 2 and later) use heldout_hex_probe.mjs, which scores the eval's unseen colours.
import json, struct, re, sys, numpy as np
f = sys.argv[1]
# The safetensors header is read by hand: numpy is the only dependency (the safetensors package is not installed here).
b = open(f, 'rb'); n = struct.unpack('<Q', b.read(8))[0]; h = json.loads(b.read(n)); base = 8 + n
caps = json.loads(h['__metadata__']['flux2_train_cache'])['captions']
pat = re.compile(r'^a #([0-9A-F]{6}) (circle|square|triangle) on a white background$')
rows = [(i, m.group(1)) for i, c in enumerate(caps) for m in [pat.match(c)] if m]
print(len(caps), 'captions,', len(rows), 'of the exact hex form')
def emb(i):
    e = h[f'embed.{i}']; s, t = e['data_offsets']; b.seek(base + s)
    return np.frombuffer(b.read(t - s), dtype=np.float32).reshape(e['shape'][1:])
X = np.stack([emb(i) for i, _ in rows])          # N × 128 × 192
rgb = np.array([[int(x[k:k+2], 16) for k in (0, 2, 4)] for _, x in rows], dtype=np.float64)
def lab(c):
    # The eval's colour maths (src/util/colour.ts rgbToLab, CIE76 on CIELAB D65), with the same
    # constants, so that the ΔE printed here is the ΔE flux2 eval scores; repeated in numpy because
    # this script is Python (the ridge regression needs a linear solver).
    c = c / 255.0; c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.072175], [0.0193339, 0.119192, 0.9503041]]).T
    xyz /= np.array([0.95047, 1.0, 1.08883])
    fx = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * fx[:, 1] - 16, 500 * (fx[:, 0] - fx[:, 1]), 200 * (fx[:, 1] - fx[:, 2])], 1)
rng = np.random.default_rng(0); idx = rng.permutation(len(rows)); ntr = int(0.8 * len(rows)); tr, te = idx[:ntr], idx[ntr:]
def score(F, name, lam_grid=(1e-3, 1e-2, 1e-1, 1, 10, 100, 1000, 1e4, 1e5)):
    F = np.hstack([F, np.ones((len(F), 1))]); best = None
    for lam in lam_grid:
        A = F[tr]
        if A.shape[1] <= A.shape[0]: w = np.linalg.solve(A.T @ A + lam * np.eye(A.shape[1]), A.T @ rgb[tr]); p = F[te] @ w
        else: p = F[te] @ (A.T @ np.linalg.solve(A @ A.T + lam * np.eye(len(A)), rgb[tr]))  # dual form: N × N, not D × D
        p = np.clip(p, 0, 255); d = np.linalg.norm(lab(p) - lab(rgb[te]), axis=1)
        if best is None or d.mean() < best[0]: best = (d.mean(), np.median(d), (d <= 15).mean(), lam)
    print(f'{name:46s} mean ΔE {best[0]:5.1f}  median {best[1]:5.1f}  within 15: {100*best[2]:4.1f}%  (ridge λ {best[3]})')
print('train', len(tr), 'test', len(te))
d0 = np.linalg.norm(lab(np.repeat(rgb[tr].mean(0, keepdims=True), len(te), 0)) - lab(rgb[te]), axis=1)
print(f'{"baseline: always the mean colour":46s} mean ΔE {d0.mean():5.1f}')
digits = np.array([[int(ch == d) for k in range(6) for d in '0123456789ABCDEF' for ch in [x[k]]] for _, x in rows], dtype=np.float64)
score(digits, 'one-hot hex digits (96 numbers)')
score(X.mean(1), 'text features, mean over the 128 tokens (192)')
score(X.reshape(len(X), -1), 'text features, all 128 tokens (24,576)')
