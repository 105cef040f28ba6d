"""Fast ranks of the original tokens at masked positions, for any Hugging Face masked-LM.

Speed comes from (1) length bucketing: examples are sorted by length and batched under a padded-token
budget, so padding is a few percent instead of up to half the batch; (2) computing the vocabulary
projection only at masked positions (15% of the tokens):

* ``labels``: models with ``sparse_prediction`` (ModernBERT, RexBERT) get ``labels`` and return
  (N_masked, V) logits in row-major order of ``labels != -100``;
* ``gather``: models with a known head module (BERT ``cls``, RoBERTa ``lm_head``) run the encoder,
  gather the masked hidden states (N_masked, H) and apply the head to them only;
* ``full``: anything else -- (B, S, V) logits, then gathered.

Each target gets two counts: vocabulary entries with a *strictly* larger logit (``above``) and the other
entries with the *same* logit (``tied``). Top-k accuracy then counts the expected hit under a uniformly
random tie order (see :func:`evaluation.metrics.topk_hits`), so a model with constant logits scores k/V and
not 100%, and the result does not depend on ``torch.topk``'s tie order. A row with any NaN logit is a miss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from evaluation.masking import MaskedExample
from evaluation.models import check_tokenizer_fits, load_error, model_source
from rexbert_common import UserError

HEAD_MODES = ("auto", "labels", "gather", "full")


class NoMLMHeadError(UserError, ValueError):
    """The checkpoint has no trained masked-LM head (e.g. a sentence-embedding folder)."""


def load_mlm_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """The tokenizer of a checked model source (:func:`evaluation.models.model_source`)."""
    from transformers import AutoTokenizer

    source = model_source(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise load_error(name_or_path, error) from error


def load_mlm(name_or_path: str, trust_remote_code: bool = False, device: str = "cpu"):
    """Load (model, tokenizer) and refuse checkpoints whose MLM head would be randomly initialised."""
    from transformers import AutoModelForMaskedLM

    tokenizer = load_mlm_tokenizer(name_or_path, trust_remote_code)
    source = model_source(name_or_path)
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(
            source, trust_remote_code=trust_remote_code, output_loading_info=True
        )
    except ValueError as error:  # config class without a masked-LM mapping
        raise NoMLMHeadError(f"{name_or_path}: no masked-LM model class for this config ({error})") from error
    except OSError as error:
        raise load_error(name_or_path, error) from error
    prefix = model.base_model_prefix
    missing_head = [k for k in info.get("missing_keys", []) if not k.startswith(prefix + ".")]
    if missing_head:
        raise NoMLMHeadError(
            f"{name_or_path} has no trained MLM head: missing weights {sorted(missing_head)[:4]} -- "
            "masked-token recovery needs a checkpoint saved with its *ForMaskedLM head"
        )
    if tokenizer.mask_token_id is None:
        raise NoMLMHeadError(f"{name_or_path}: tokenizer has no mask token")
    check_tokenizer_fits(name_or_path, tokenizer, model.config)
    return model.to(device).eval(), tokenizer


def _gather_head(model) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]] | None:
    """(encoder, head) for architectures whose head is a known attribute; None if unknown."""
    encoder = getattr(model, model.base_model_prefix, None)
    if encoder is None:
        return None
    for name in ("cls", "lm_head"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return encoder, head
    if hasattr(model, "head") and hasattr(model, "decoder"):  # ModernBERT layout
        return encoder, lambda h: model.decoder(model.head(h))
    return None


def resolve_head_mode(model, mode: str = "auto") -> str:
    if mode not in HEAD_MODES:
        raise ValueError(f"head={mode!r}: expected one of {HEAD_MODES}")
    if mode != "auto":
        return mode
    if hasattr(model, "sparse_prediction") or hasattr(model.config, "sparse_prediction"):
        return "labels"
    return "gather" if _gather_head(model) is not None else "full"


def length_buckets(
    lengths: Sequence[int], max_tokens: int, max_batch: int = 256, max_padding: float = 0.1
) -> list[list[int]]:
    """Indices grouped into batches of similar length.

    Examples are sorted longest first and added to the current batch while (longest x count) stays
    within ``max_tokens``, the batch has fewer than ``max_batch`` rows and padding stays below
    ``max_padding`` of its real tokens (otherwise few examples spread over many lengths would share one
    badly padded batch).
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for index in order.tolist():
        if current:
            padded = lengths[current[0]] * (len(current) + 1)
            if (
                padded > max_tokens
                or len(current) >= max_batch
                or padded > (1.0 + max_padding) * (real + lengths[index])
            ):
                batches.append(current)
                current, real = [], 0
        current.append(index)
        real += lengths[index]
    if current:
        batches.append(current)
    return batches


def target_ranks(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, V) logits, (N,) targets -> (N, 2) int64 ``[above, tied]`` per target.

    ``above``: entries with a strictly larger logit; ``tied``: *other* entries with an equal logit. A row
    holding any NaN is a miss: ``above = V`` (no k <= V reaches it), ``tied = 0``.
    """
    target_logit = logits.gather(1, targets[:, None])  # (N, 1)
    above = (logits > target_logit).sum(dim=1)  # (N,)
    tied = (logits == target_logit).sum(dim=1) - 1  # (N,) the target equals itself
    broken = torch.isnan(logits).any(dim=1)  # (N,)
    above = torch.where(broken, torch.full_like(above, logits.shape[1]), above)
    tied = torch.where(broken, torch.zeros_like(tied), tied)
    return torch.stack([above, tied], dim=1)


class MaskedTokenRanker:
    """Computes target ranks for :class:`MaskedExample` lists with one model.

    Args:
        model: a Hugging Face masked-LM in eval mode.
        pad_token_id: id used for padding (attention-masked).
        max_tokens: padded tokens per forward pass.
        head: ``auto`` | ``labels`` | ``gather`` | ``full`` (see module docstring).
    """

    def __init__(self, model, pad_token_id: int, max_tokens: int = 16384, head: str = "auto"):
        self.model = model
        self.pad_token_id = pad_token_id
        self.max_tokens = max_tokens
        self.head = resolve_head_mode(model, head)
        if self.head == "labels":
            # ModernBERT reads the attribute, RexBERT the config: set both.
            model.sparse_prediction = True
            model.config.sparse_prediction = True
            model.config.sparse_pred_ignore_index = -100
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def ranks(self, examples: Sequence[MaskedExample], progress: bool = False) -> list[np.ndarray]:
        """One (n_positions, 2) ``[above, tied]`` array per example, in the example's position order."""
        from tqdm.auto import tqdm

        results: list[np.ndarray] = [np.zeros((0, 2), dtype=np.int64)] * len(examples)
        batches = length_buckets([len(e.input_ids) for e in examples], self.max_tokens)
        for batch in tqdm(batches, desc="mlm batches", disable=not progress, leave=False):
            batch = [i for i in batch if examples[i].positions]
            if not batch:
                continue
            ranks = self._batch_ranks([examples[i] for i in batch]).cpu().numpy()
            start = 0
            for i in batch:  # row-major order: example by example, positions ascending
                n = len(examples[i].positions)
                results[i] = ranks[start : start + n]
                start += n
        return results

    def _batch_ranks(self, batch: Sequence[MaskedExample]) -> torch.Tensor:
        width = max(len(e.input_ids) for e in batch)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, example in enumerate(batch):
            input_ids[row, : len(example.input_ids)] = torch.tensor(example.input_ids)
            attention[row, : len(example.input_ids)] = 1
            labels[row, example.positions] = torch.tensor(example.targets)
        input_ids, attention, labels = (t.to(self.device) for t in (input_ids, attention, labels))
        selected = labels != -100  # (B, S)
        targets = labels[selected]  # (N,)
        if self.head == "labels":
            logits = self.model(input_ids=input_ids, attention_mask=attention, labels=labels).logits
            if logits.dim() == 3:  # model ignored sparse prediction
                logits = logits[selected]
        elif self.head == "gather":
            encoder, head = _gather_head(self.model)
            hidden = encoder(input_ids=input_ids, attention_mask=attention).last_hidden_state  # (B, S, H)
            logits = head(hidden[selected])  # (N, V)
        else:
            logits = self.model(input_ids=input_ids, attention_mask=attention).logits[selected]
        if logits.shape[0] != targets.shape[0]:
            raise RuntimeError(
                f"model returned {logits.shape[0]} logit rows for {targets.shape[0]} masked tokens"
            )
        return target_ranks(logits.float(), targets)
