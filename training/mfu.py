"""Model FLOPs and a measured peak FLOP/s, for the MFU estimate (model FLOPs/s ÷ peak FLOP/s).

Peak is *measured*, not taken from a datasheet: a short matmul probe in the training dtype on the
training device. Model FLOPs count the useful work only (real tokens, the local window, the sparse
head on labelled tokens), so padding and recomputation never inflate MFU.
"""

from __future__ import annotations

import torch

from rexbert_common.precision import time_matmul


def measure_peak_flops(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    size: int = 1024,
    seconds: float = 0.5,
) -> float:
    """FLOP/s of repeated ``size × size`` matmuls (best of a few timed bursts)."""
    return time_matmul(size, size, size, device, dtype, seconds)


class MlmFlops:
    """Training FLOPs (forward + backward = 3 × forward) of a ModernBERT-style MLM step.

    Args:
        config: the encoder config (hidden_size, intermediate_size, num_hidden_layers, vocab_size, and
            ``layer_types`` or, for older configs, ``global_attn_every_n_layers``).
    """

    def __init__(self, config) -> None:
        d, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
        # transformers-5 configs (ModernBertConfig, RexBertConfig) name each layer's attention in
        # `layer_types` and do not keep `global_attn_every_n_layers` as an attribute.
        layer_types = getattr(config, "layer_types", None)
        if layer_types is None:
            every = getattr(config, "global_attn_every_n_layers", 1) or 1
            layer_types = ["full_attention" if i % every == 0 else "sliding_attention" for i in range(layers)]
        self.n_global = sum(1 for t in layer_types if t == "full_attention")
        self.n_local = layers - self.n_global
        self.dense_per_token = 2 * layers * (4 * d * d + 3 * d * inter)  # Wqkv, Wo, Wi (2I), Wo (I)
        self.attn_per_pair = 4 * d  # QKᵀ and AV: 2·d each per (query, key) pair and layer
        self.head_per_label = 2 * (d * d + d * config.vocab_size)  # head.dense + decoder

    def step(
        self, real_tokens: int, labelled: int, global_pairs: int, local_pairs: int, sparse_head: bool = True
    ) -> float:
        forward = (
            self.dense_per_token * real_tokens
            + self.attn_per_pair * (self.n_global * global_pairs + self.n_local * local_pairs)
            + self.head_per_label * (labelled if sparse_head else real_tokens)
        )
        return 3.0 * forward
