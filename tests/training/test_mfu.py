"""MlmFlops against torch's FLOP counter on transformers' ModernBERT, and its per-layer accounting."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import ModernBertConfig, ModernBertForMaskedLM

from modeling_rexbert import RexBertConfig
from tests.modeling_rexbert.conftest import TINY
from training.mfu import MlmFlops

SIZES = {**TINY, "num_hidden_layers": 5}  # layers 0 and 3 global


@pytest.mark.parametrize("labelled", [5, 40])
def test_forward_flops_match_torch_counter_on_transformers_modernbert(labelled):
    # all-global layers: torch counts the full S×S attention, which is then exactly the useful work
    config = ModernBertConfig(**SIZES, global_attn_every_n_layers=1, sparse_prediction=True)
    config._attn_implementation = "eager"  # matmuls torch counts (its CPU sdpa kernel is not counted)
    model = ModernBertForMaskedLM(config).eval()
    length = 40
    ids = torch.randint(5, SIZES["vocab_size"], (1, length))
    labels = torch.full_like(ids, -100)
    labels[0, :labelled] = ids[0, :labelled]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(input_ids=ids, labels=labels)
    expected = MlmFlops(config).step(length, labelled, length**2, 0) / 3.0  # step() = 3 × forward
    assert counter.get_total_flops() == pytest.approx(expected, rel=1e-9)


def test_transformers_and_rexbert_configs_count_the_same_layer_types():
    # both default to a global layer every 3; transformers keeps only `layer_types`, not the period
    hf = MlmFlops(ModernBertConfig(**SIZES))
    rex = MlmFlops(RexBertConfig(**SIZES))
    assert (hf.n_global, hf.n_local) == (rex.n_global, rex.n_local) == (2, 3)  # layers 0 and 3 global
    assert hf.step(1000, 300, 5e5, 1e5) == rex.step(1000, 300, 5e5, 1e5)


def test_config_without_layer_types_falls_back_to_global_every_n():
    class Legacy:  # a transformers-4 style config object
        hidden_size, intermediate_size, num_hidden_layers, vocab_size = 32, 48, 7, 100
        global_attn_every_n_layers = 3

    flops = MlmFlops(Legacy())
    assert (flops.n_global, flops.n_local) == (3, 4)
    # local layers are charged the local pairs, global layers the global pairs
    extra_local = flops.step(10, 3, 100, 50) - flops.step(10, 3, 100, 40)
    assert extra_local == 3.0 * flops.attn_per_pair * 4 * 10
