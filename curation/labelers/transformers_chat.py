"""A local ``transformers`` chat model as labeler (the paper uses Phi-4; Llama-3-70B as auditor).

Greedy decoding of a few tokens after the chat template; the answer is parsed strictly.
"""

from __future__ import annotations

from collections.abc import Sequence

from curation.config import LabelerConfig
from curation.labelers.base import Labeler, LabelResult
from curation.relevance import MalformedAnswer, PromptVersion, parse_answer


class TransformersChatLabeler(Labeler):
    def __init__(self, config: LabelerConfig, model=None, tokenizer=None):
        if not config.model and model is None:
            raise ValueError("labeler.model is required for kind 'transformers' (e.g. microsoft/phi-4)")
        self.config = config
        self.identity = f"transformers:{config.model or type(model).__name__}:chars={config.max_chars}"
        self._model, self._tokenizer = model, tokenizer

    @property
    def model_identity(self) -> str:
        from pathlib import Path

        from curation.digests import weights_digest

        if self.config.model and Path(self.config.model).exists():
            return f"weights:{weights_digest(self.config.model)}"
        return f"hub:{self.config.model or type(self._model).__name__}"

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.config.model)
            self._model = AutoModelForCausalLM.from_pretrained(self.config.model, dtype="auto")
            self._model.eval()
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._tokenizer.padding_side = "left"  # decoder-only batched generation continues from the right edge
        return self._model, self._tokenizer

    def label_batch(self, texts: Sequence[str], prompt: PromptVersion) -> list[LabelResult]:
        import torch

        model, tokenizer = self._load()
        prompts = [
            tokenizer.apply_chat_template(
                prompt.messages(t[: self.config.max_chars]), tokenize=False, add_generation_prompt=True
            )
            for t in texts
        ]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                input_ids=batch["input_ids"],  # only ids + mask: some tokenizers add token_type_ids
                attention_mask=batch["attention_mask"],
                max_new_tokens=self.config.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        answers = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        results = []
        for answer in answers:
            try:
                results.append(LabelResult(parse_answer(answer), "ok", answer))
            except MalformedAnswer:  # not a label: an error for this document, asked again on the next run
                results.append(LabelResult(None, "error", f"not a label: {answer[:200]!r}"))
        return results
