"""Host-side checks of a batch against the packing contract (package only, not shipped).

Every check reads values, which on a GPU would stall a training step if done in the forward; the model
checks shapes only. Call these on the host -- in a collator's tests, or behind a debug flag::

    from modeling_rexbert.validation import check_packed_inputs
    check_packed_inputs(**batch, vocab_size=model.config.vocab_size)

They raise ``ValueError`` naming the field and accept tensors or numpy arrays.
"""

from __future__ import annotations

import torch

from .packing_rexbert import document_ids


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(N,) positions restarting at 0 at every document."""
    return torch.arange(num_tokens) - cu_seqlens.long()[document_ids(cu_seqlens, num_tokens)]


def _host(x) -> torch.Tensor:
    return torch.as_tensor(x).detach().cpu()


def _check_ids(ids: torch.Tensor, vocab_size: int | None) -> None:
    if vocab_size is not None and ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"input_ids: ids must lie in [0, vocab_size={vocab_size}); got min {lo}, max {hi}"
                ": the tokenizer and the model config disagree"
            )


def check_inputs(
    input_ids,
    attention_mask=None,
    position_ids=None,
    cu_seqlens=None,
    max_seqlen=None,
    labels=None,
    label_positions=None,
    *,
    vocab_size: int | None = None,
    ignore_index: int = -100,
) -> None:
    """Value checks for either input form: id range, labels on padding; packed input goes to
    :func:`check_packed_inputs`."""
    if cu_seqlens is not None:
        if max_seqlen is None:
            max_seqlen = int(torch.diff(_host(cu_seqlens).long()).max())
        ids = input_ids if input_ids is not None else torch.zeros(1, int(_host(cu_seqlens)[-1]))
        check_packed_inputs(
            ids,
            cu_seqlens,
            max_seqlen,
            position_ids,
            labels,
            label_positions,
            vocab_size=vocab_size if input_ids is not None else None,
            ignore_index=ignore_index,
        )
        return
    if input_ids is not None:
        _check_ids(_host(input_ids), vocab_size)
    on_padding = labels is not None and attention_mask is not None
    if on_padding and bool(((_host(labels) != ignore_index) & (_host(attention_mask) == 0)).any()):
        raise ValueError(
            f"labels: targets (!= {ignore_index}) where attention_mask == 0 are never "
            "encoded, so they cannot be predicted"
        )


def check_packed_inputs(
    input_ids,
    cu_seqlens,
    max_seqlen: int,
    position_ids=None,
    labels=None,
    label_positions=None,
    *,
    vocab_size: int | None = None,
    ignore_index: int = -100,
) -> None:
    """Validate a packed batch against the packing contract; raise ``ValueError`` naming the field.

    ``max_seqlen`` below the longest document would silently truncate attention in the varlen kernel."""

    ids = _host(input_ids)
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise ValueError(f"input_ids: packed input must have shape (1, N); got {tuple(ids.shape)}")
    n = ids.shape[1]
    _check_ids(ids, vocab_size)
    cu = _host(cu_seqlens)
    if cu.dtype != torch.int32 or cu.ndim != 1 or cu.numel() < 2:
        raise ValueError(
            f"cu_seqlens: must be a 1-D int32 tensor of D+1 >= 2 boundaries; "
            f"got dtype {cu.dtype}, shape {tuple(cu.shape)}"
        )
    lengths = torch.diff(cu.long())
    if int(cu[0]) != 0 or int(cu[-1]) != n or bool((lengths < 0).any()):
        raise ValueError(
            f"cu_seqlens: must start at 0, be non-decreasing and end at N={n}; "
            f"got {cu.tolist()[:6]}...{cu.tolist()[-2:]}"
        )
    longest = int(lengths.max()) if lengths.numel() else 0
    if not isinstance(max_seqlen, int) or max_seqlen < longest:
        raise ValueError(
            f"max_seqlen: must be a Python int >= the longest document ({longest}); got {max_seqlen!r}"
        )
    if position_ids is not None:
        pos = _host(position_ids)
        if tuple(pos.shape) != (1, n):
            raise ValueError(f"position_ids: must have shape (1, {n}); got {tuple(pos.shape)}")
        expected = positions_from_cu_seqlens(cu, n)
        if not torch.equal(pos[0].long(), expected):
            bad = int((pos[0].long() != expected).nonzero()[0])
            raise ValueError(
                f"position_ids: must restart at 0 at every cu_seqlens boundary and count up; "
                f"token {bad} has {int(pos[0, bad])}, expected {int(expected[bad])}"
            )
    if labels is None:
        if label_positions is not None:
            raise ValueError("label_positions: given without labels")
        return
    lab = _host(labels)
    if tuple(lab.shape) != (1, n):
        raise ValueError(f"labels: must have shape (1, {n}); got {tuple(lab.shape)}")
    if label_positions is not None:
        expected = (lab[0] != ignore_index).nonzero().squeeze(1)
        got = _host(label_positions)
        if got.ndim != 1 or not torch.equal(got.long(), expected):
            raise ValueError(
                f"label_positions: must be the ascending indices of labels != {ignore_index} "
                f"({expected.numel()} of them); got {got.numel()} that differ"
            )
