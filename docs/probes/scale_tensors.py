# Analysis helper behind the session-8 proxies in docs/flux2-mini.md; not part of the package or the tests.
# Usage: python3 docs/probes/scale_tensors.py SRC.safetensors DST.safetensors FACTOR SUFFIX[,SUFFIX...]
# e.g. FACTOR 0.1336 (1/sqrt(56)) and o_proj.weight,down_proj.weight: a text encoder with GPT-2's residual scaling.
import json, struct, sys, numpy as np
src, dst, factor = sys.argv[1], sys.argv[2], float(sys.argv[3]); suffixes = sys.argv[4].split(",")
f = open(src, "rb"); n = struct.unpack("<Q", f.read(8))[0]; hdr = json.loads(f.read(n)); body = bytearray(f.read())
for k, v in hdr.items():
    if k == "__metadata__" or not any(k.endswith(s) for s in suffixes): continue
    assert v["dtype"] == "BF16"; a, b = v["data_offsets"]
    u = np.frombuffer(bytes(body[a:b]), dtype=np.uint16).astype(np.uint32) << 16
    x = u.view(np.float32) * np.float32(factor)
    bits = x.view(np.uint32); bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    body[a:b] = bits.astype(np.uint16).tobytes()
out = open(dst, "wb"); h = json.dumps(hdr).encode(); out.write(struct.pack("<Q", len(h))); out.write(h); out.write(body)
