"""Tiny configs and helpers shared by the modeling tests; ``cpu_varlen`` runs PyTorch's varlen op on CPU."""

from __future__ import annotations

import pytest
import torch

from modeling_rexbert import RexBertConfig
from modeling_rexbert.varlen_reference import reference_varlen, varlen_on_cpu  # noqa: F401 (re-exported)

TINY = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=4,
    num_attention_heads=2,
    max_position_embeddings=1024,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    cls_token_id=1,
    sep_token_id=2,
    mask_token_id=3,
)


def tiny_config(**overrides) -> RexBertConfig:
    return RexBertConfig(**{**TINY, **overrides})


def right_padded(lengths: list[int], vocab: int = 97, low: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids right-padded with 0 to the longest length, plus the 0/1 attention mask."""
    S = max(lengths)
    ids = torch.randint(low, vocab, (len(lengths), S))
    mask = (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask


def cu_seqlens(lengths: list[int]) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


@pytest.fixture
def tiny() -> RexBertConfig:
    return tiny_config()


@pytest.fixture
def cpu_varlen():
    with varlen_on_cpu():
        yield
