"""The local chat-model labeler with offline stand-ins: a scripted model (parse path) and a tiny random Llama
(real ``generate`` with left padding). No real chat model is available offline."""

import pytest
import torch

from curation.config import LabelerConfig
from curation.labelers.transformers_chat import TransformersChatLabeler
from curation.relevance import get_prompt


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from curation.labelers.zero_shot import bundled_minilm_path

    tok = AutoTokenizer.from_pretrained(bundled_minilm_path())
    tok.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    return tok


class ScriptedModel:
    """Answers "relevant" for documents mentioning a laptop, 'not relevant' otherwise, 'maybe' for '???'."""

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, pad_token_id):
        rows = []
        for ids in input_ids:
            text = self.tok.decode(ids, skip_special_tokens=True)
            answer = "maybe" if "???" in text else "relevant" if "laptop" in text else "not relevant"
            new = self.tok(answer, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
            new = torch.cat([new, torch.full((max_new_tokens - len(new),), pad_token_id)])[:max_new_tokens]
            rows.append(torch.cat([ids, new]))
        return torch.stack(rows)


def test_scripted_answers_are_parsed_and_an_answer_that_is_no_label_is_an_error(tokenizer):
    labeler = TransformersChatLabeler(
        LabelerConfig(kind="transformers"), model=ScriptedModel(tokenizer), tokenizer=tokenizer
    )
    results = labeler.label_batch(
        ["best price for a laptop", "a long poem about the sea", "??? what"], get_prompt("v1")
    )
    assert [(r.label, r.status) for r in results] == [(1, "ok"), (0, "ok"), (None, "error")]


def test_tiny_random_llama_generates_without_crashing(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    labeler = TransformersChatLabeler(
        LabelerConfig(kind="transformers", max_new_tokens=3), model=model, tokenizer=tokenizer
    )
    results = labeler.label_batch(["short", "a much longer document " * 5], get_prompt("v2"))
    assert len(results) == 2 and all(r.status in ("ok", "error") for r in results)
    assert all((r.label is None) == (r.status == "error") for r in results)


def test_missing_model_is_a_config_error():
    with pytest.raises(ValueError, match="labeler.model"):
        TransformersChatLabeler(LabelerConfig(kind="transformers"))
