"""How the real tokens of a batch split into documents: the one layout every attention backend reads.

Shipped next to ``modeling_rexbert.py`` as remote code (torch and the standard library only).

Two input forms reach the encoder:

* packed (training): ``input_ids`` (1, N) of concatenated documents, ``cu_seqlens`` (D+1,) int32 document
  boundaries and ``max_seqlen`` (Python int), all built on the host by the collator -- transformers'
  ``DataCollatorWithFlattening`` convention plus explicit boundaries. Building the layout from them
  reads nothing back from the device, so a training step never waits on a device-to-host copy.
* padded (inference): ``input_ids`` (B, S) with an optional ``attention_mask``; one document per row.
  Finding the real tokens of a padded batch reads the mask on the host (``nonzero``), which is fine
  outside the training hot path.

:func:`check_packed_inputs` validates a packed batch on the host (collator side, or behind
``config.validate_inputs``); the forward itself never checks values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PackedBatch:
    """N real tokens in D documents, and the (B, S) shape outputs are re-padded to.

    Attributes:
        batch_size, seq_len: shape (B, S) of the input; (1, N) for packed input.
        indices: (N,) flat positions of the real tokens in B*S, or None when every position is real.
        cu_seqlens: (D+1,) int32 cumulative document lengths, on the tokens' device.
        max_seqlen: the longest document's length (host int).
        position_ids: (N,) long RoPE positions, restarting at 0 at every document.
        cache: per-forward memo for backends (CPU attention plans), shared by all layers.
    """

    batch_size: int
    seq_len: int
    indices: torch.Tensor | None
    cu_seqlens: torch.Tensor
    max_seqlen: int
    position_ids: torch.Tensor
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_tokens(self) -> int:
        return self.position_ids.shape[0]

    def host_seqlens(self) -> list[int]:
        """Document lengths as a host list: a device-to-host copy, used only by the CPU-oriented
        sdpa / eager backends, never by the varlen / flash kernels."""
        if "seqlens" not in self.cache:
            self.cache["seqlens"] = torch.diff(self.cu_seqlens).tolist()
        return self.cache["seqlens"]

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, ...) -> (N, ...)."""
        flat = x.reshape(self.batch_size * self.seq_len, *x.shape[2:])
        return flat if self.indices is None else flat.index_select(0, self.indices)

    def repad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, S, ...), zeros at padded positions."""
        if self.indices is None:
            return x.reshape(self.batch_size, self.seq_len, *x.shape[1:])
        out = x.new_zeros(self.batch_size * self.seq_len, *x.shape[1:]).index_put((self.indices,), x)
        return out.view(self.batch_size, self.seq_len, *x.shape[1:])


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(N,) positions restarting at every document, computed on the device without a host read."""
    token = torch.arange(num_tokens, device=cu_seqlens.device)
    cu = cu_seqlens.long()
    doc = torch.searchsorted(cu[1:], token, right=True)  # (N,) document of every token
    return token - cu[doc]


def pack_flat(
    num_tokens: int,
    cu_seqlens: torch.Tensor,
    max_seqlen: int | None,
    position_ids: torch.Tensor | None,
    device: torch.device,
) -> PackedBatch:
    """Layout of packed (1, N) input. Reads nothing from the device when ``max_seqlen`` is given."""
    cu = cu_seqlens.to(device=device, dtype=torch.int32)
    if max_seqlen is None:  # one host read; the collator should pass it
        max_seqlen = int(torch.diff(cu).max()) if cu.numel() > 1 else 0
    if position_ids is None:
        pos = positions_from_cu_seqlens(cu, num_tokens)
    else:
        pos = position_ids.reshape(-1).to(device=device, dtype=torch.long)
    return PackedBatch(1, num_tokens, None, cu, int(max_seqlen), pos)


def pack_padded(
    batch_size: int,
    seq_len: int,
    device: torch.device,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> PackedBatch:
    """Layout of padded (B, S) input: every row's real tokens (``attention_mask == 1``) are one document.

    ``position_ids`` (B, S), when given, are the RoPE positions (as in transformers); by default positions
    count the real tokens of each row from 0, so left and right padding give the same result."""
    B, S = batch_size, seq_len
    if attention_mask is None:  # B documents of length S: no gather / scatter at all
        cu = torch.arange(0, (B + 1) * S, S, dtype=torch.int32, device=device)
        pos = (
            torch.arange(S, device=device).repeat(B)
            if position_ids is None
            else position_ids.reshape(-1).to(device=device, dtype=torch.long)
        )
        return PackedBatch(B, S, None, cu, S, pos)
    mask = attention_mask.to(device).bool()
    lengths = mask.sum(1)  # (B,)
    cu = torch.zeros(B + 1, dtype=torch.int32, device=device)
    cu[1:] = lengths.cumsum(0)
    indices = mask.reshape(-1).nonzero().squeeze(1)  # (N,) host read: inference form only
    max_seqlen = int(lengths.max()) if B else 0
    if position_ids is None:
        pos = positions_from_cu_seqlens(cu, indices.numel())
    else:
        pos = position_ids.reshape(-1).to(device=device, dtype=torch.long).index_select(0, indices)
    return PackedBatch(B, S, indices, cu, max_seqlen, pos)


def pack_inputs(
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
) -> PackedBatch:
    """Layout of a forward's input: packed (``cu_seqlens`` given, input (1, N)) or padded (B, S).
    Checks shapes only (no values: that would read the device)."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")
    ref = input_ids if input_ids is not None else inputs_embeds
    if ref.ndim != (2 if input_ids is not None else 3):
        raise ValueError(
            "input_ids must be (batch, seq_len) / inputs_embeds (batch, seq_len, hidden); "
            f"got shape {tuple(ref.shape)}"
        )
    if 0 in ref.shape[:2]:
        raise ValueError(
            f"empty input of shape {tuple(ref.shape)}: nothing to encode (was the text empty or "
            "truncated to zero tokens?)"
        )
    (B, S), device = ref.shape[:2], ref.device
    if position_ids is not None and position_ids.shape[0] == 1 and B > 1:
        position_ids = position_ids.expand(B, -1)  # transformers-style shared (1, S) positions
    for name, t in (("attention_mask", attention_mask), ("position_ids", position_ids)):
        if t is not None and tuple(t.shape) != (B, S):
            raise ValueError(f"{name} must have shape {(B, S)} like the input; got {tuple(t.shape)}")
    if cu_seqlens is None:
        return pack_padded(B, S, device, attention_mask, position_ids)
    if B != 1 or attention_mask is not None:
        given = "given" if attention_mask is not None else "None"
        raise ValueError(
            "cu_seqlens is for packed input of shape (1, N) without attention_mask; "
            f"got input {(B, S)}, attention_mask {given}"
        )
    return pack_flat(S, cu_seqlens, max_seqlen, position_ids, device)


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
    """Value checks for either input form (``config.validate_inputs``); raise ``ValueError`` naming the
    field. Packed input goes to :func:`check_packed_inputs`."""
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

    Accepts tensors or numpy arrays. Meant for the host side (collator tests, a debug flag): every check
    reads values, which on a GPU would stall the step if done in the forward."""

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
