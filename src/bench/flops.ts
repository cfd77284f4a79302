// FLOP counts of one forward of each component, from the configs (multiply-add = 2 FLOPs).
//
// Linear layers: 2 · N · K per row they are applied to (the "2 · params touched · tokens" of
// the issue, counting each weight only for the tokens that pass through it: in a double block
// the image weights see the image tokens and the text weights the text tokens; single blocks
// see all tokens). Attention: 4 · L² · (heads · head_dim) per layer (QKᵀ and PV, no causal
// saving: ORT computes the masked half too). Norms, activations, RoPE, softmax: not counted.

import { innerDim, mlpDim, type TransformerConfig } from "../models/transformer.js";
import type { DecoderConfig } from "../models/decoder.js";
import type { VaeConfig } from "../models/vae.js";
import { decoderChannels } from "../models/vae_weights.js";

export interface FlopCount {
  total: number;
  linear: number;
  attention: number;
}

/** One transformer forward for batch 1 with `img` image tokens and `txt` text tokens. */
export function transformerFlops(c: TransformerConfig, img: number, txt: number): FlopCount {
  const D = innerDim(c), M = mlpDim(c), S = img + txt;
  const mm = (rows: number, n: number, k: number) => 2 * rows * n * k;
  let linear = mm(img, D, c.in_channels) + mm(txt, D, c.joint_attention_dim);
  linear += mm(1, D, c.timestep_guidance_channels) + mm(1, D, D) + (c.guidance_embeds ? mm(1, D, c.timestep_guidance_channels) + mm(1, D, D) : 0);
  linear += mm(1, 6 * D, D) * 2 + mm(1, 3 * D, D) + mm(1, 2 * D, D); // modulation, norm_out
  const doubleSide = (rows: number) => 4 * mm(rows, D, D) + mm(rows, 2 * M, D) + mm(rows, D, M);
  linear += c.num_layers * (doubleSide(img) + doubleSide(txt));
  linear += c.num_single_layers * (mm(S, 3 * D + 2 * M, D) + mm(S, D, D + M));
  linear += mm(img, (c.out_channels ?? c.in_channels) * c.patch_size ** 2, D);
  const attention = (c.num_layers + c.num_single_layers) * 4 * S * S * D;
  return { total: linear + attention, linear, attention };
}

/** Parameters of the transformer Linear layers a token passes through (for the 2·P·tokens view). */
export function decoderFlops(c: DecoderConfig, layers: number, L: number): FlopCount {
  const D = c.hidden_size, Dh = c.head_dim, q = c.num_attention_heads * Dh, kv = c.num_key_value_heads * Dh;
  const perLayer = 2 * L * (q * D + 2 * kv * D + D * q + 3 * c.intermediate_size * D);
  const attention = layers * 4 * L * L * q;
  return { total: layers * perLayer + attention, linear: layers * perLayer, attention };
}

/** VAE decode of latents (1, C, h, w): convolutions, the mid-block attention and its projections. */
export function vaeDecodeFlops(c: VaeConfig, h: number, w: number): FlopCount {
  let conv = 0, attention = 0, linear = 0;
  const convF = (cin: number, cout: number, k: number, hh: number, ww: number) => 2 * cin * cout * k * k * hh * ww;
  const resnet = (cin: number, cout: number, hh: number, ww: number) =>
    convF(cin, cout, 3, hh, ww) + convF(cout, cout, 3, hh, ww) + (cin === cout ? 0 : convF(cin, cout, 1, hh, ww));
  const widths = [...decoderChannels(c)].reverse();
  const Lc = c.latent_channels;
  if (c.use_post_quant_conv) conv += convF(Lc, Lc, 1, h, w);
  conv += convF(Lc, widths[0], 3, h, w);
  conv += 2 * resnet(widths[0], widths[0], h, w);
  if (c.mid_block_add_attention) {
    const n = h * w, C = widths[0];
    linear += 4 * 2 * n * C * C;
    attention += 4 * n * n * C;
  }
  let hh = h, ww = w;
  widths.forEach((cout, i) => {
    const cin = i === 0 ? widths[0] : widths[i - 1];
    for (let j = 0; j < c.layers_per_block + 1; j++) conv += resnet(j === 0 ? cin : cout, cout, hh, ww);
    if (i < widths.length - 1) {
      hh *= 2;
      ww *= 2;
      conv += convF(cout, cout, 3, hh, ww);
    }
  });
  conv += convF(widths[widths.length - 1], c.out_channels, 3, hh, ww);
  return { total: conv + linear + attention, linear: conv + linear, attention };
}
