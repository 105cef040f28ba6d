"""How the real tokens of a batch split into documents: the one layout every attention backend reads.
Four input conventions become one :class:`PackedBatch` of N real tokens in D documents:

* (1, N) with ``cu_seqlens`` (D+1,) int32 and ``max_seqlen`` (host int): RexBERT's collator (training).
  Nothing is read back from the device.
* (1, N) with ``cu_seq_lens_q`` / ``cu_seq_lens_k`` and ``max_length_q`` / ``max_length_k``: transformers'
  ``DataCollatorWithFlattening(return_flash_attn_kwargs=True)``, the same boundaries under its names.
* (1, N) with ``position_ids`` restarting at every document and nothing else:
  ``DataCollatorWithFlattening()``. Boundaries are found on the host (one device-to-host read).
* (B, S) with an optional ``attention_mask``: one document per row (inference); the mask is read on the
  host. ``position_ids`` are then RoPE positions only, as in transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# transformers' names for packed input (DataCollatorWithFlattening; seq_idx only alongside the others).
FLASH_PACKING_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx")
# BERT tokenizers, pipelines and sentence-transformers pass token_type_ids: no segment embeddings read them.
IGNORED_KWARGS = ("token_type_ids",)


@dataclass
class PackedBatch:
    """N real tokens in D documents, and the (B, S) shape that outputs are re-padded to."""

    batch_size: int
    seq_len: int
    indices: torch.Tensor | None  # (N,) flat positions of the real tokens in B*S; None: every one is real
    cu_seqlens: torch.Tensor  # (D+1,) int32 document boundaries, on the tokens' device
    max_seqlen: int  # the longest document's length (host int)
    position_ids: torch.Tensor | None = None  # (N,) RoPE positions
    cache: dict = field(default_factory=dict, repr=False)  # per-forward memo shared by all layers

    @property
    def num_tokens(self) -> int:
        return self.batch_size * self.seq_len if self.indices is None else self.indices.shape[0]

    @property
    def num_docs(self) -> int:
        return self.cu_seqlens.shape[0] - 1

    def doc_ids(self) -> torch.Tensor:
        """(N,) document of every token, computed on the device."""
        if "doc_ids" not in self.cache:
            self.cache["doc_ids"] = document_ids(self.cu_seqlens, self.num_tokens)
        return self.cache["doc_ids"]

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


def document_ids(cu_seqlens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(N,) document index of every token, on the device."""
    token = torch.arange(num_tokens, device=cu_seqlens.device)
    return torch.searchsorted(cu_seqlens[1:].long(), token, right=True)


def pack_inputs(
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
    **flash_kwargs,
) -> PackedBatch:
    """Layout of a forward's input in any of the conventions above; checks shapes, never values."""
    unknown = sorted(set(flash_kwargs) - set(FLASH_PACKING_KWARGS) - set(IGNORED_KWARGS))
    if unknown:
        raise TypeError(
            f"forward() got unexpected keyword argument(s) {', '.join(unknown)}: RexBERT reads input_ids or "
            "inputs_embeds, attention_mask, position_ids, and packed input as cu_seqlens + max_seqlen or "
            "cu_seq_lens_q/k + max_length_q/k (transformers' DataCollatorWithFlattening)"
        )
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")
    ref = input_ids if input_ids is not None else inputs_embeds
    if ref.ndim != (2 if input_ids is not None else 3) or 0 in ref.shape[:2]:
        raise ValueError(
            "input_ids must be a non-empty (batch, seq_len) / inputs_embeds (batch, seq_len, hidden); got "
            f"shape {tuple(ref.shape)} (was the text empty or truncated to zero tokens?)"
        )
    (B, S), device = ref.shape[:2], ref.device
    if position_ids is not None and position_ids.shape[0] == 1 and B > 1:
        position_ids = position_ids.expand(B, -1)  # transformers-style shared (1, S) positions
    for name, t in (("attention_mask", attention_mask), ("position_ids", position_ids)):
        if t is not None and tuple(t.shape) != (B, S):
            raise ValueError(f"{name} must have shape {(B, S)} like the input; got {tuple(t.shape)}")
    cu_seqlens, max_seqlen = _flash_boundaries(cu_seqlens, max_seqlen, position_ids, **flash_kwargs)
    if cu_seqlens is None and B == 1 and S > 1 and attention_mask is None and position_ids is not None:
        cu_seqlens, max_seqlen = boundaries_from_positions(position_ids[0])
    indices = None
    if cu_seqlens is not None:  # packed: documents side by side in one row
        if B != 1 or attention_mask is not None:
            raise ValueError(
                "cu_seqlens is for packed input of shape (1, N) without attention_mask; got input "
                f"{(B, S)}, attention_mask {'given' if attention_mask is not None else 'None'}"
            )
        cu_seqlens = cu_seqlens.to(device=device, dtype=torch.int32)
        if max_seqlen is None:  # one host read; collators pass it
            max_seqlen = int(torch.diff(cu_seqlens).max())
    elif attention_mask is None:  # B documents of length S: no gather / scatter at all
        cu_seqlens, max_seqlen = torch.arange(0, (B + 1) * S, S, dtype=torch.int32, device=device), S
    else:  # each row's real tokens are one document, wherever the padding is
        mask = attention_mask.to(device).bool()
        lengths = mask.sum(1)  # (B,)
        cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
        indices = mask.reshape(-1).nonzero().squeeze(1)  # (N,) host read: inference form only
        max_seqlen = lengths.max()
    batch = PackedBatch(B, S, indices, cu_seqlens, int(max_seqlen))
    if position_ids is None:  # each document's tokens count from 0 (so left and right padding agree)
        token = torch.arange(batch.num_tokens, device=device)
        batch.position_ids = token - cu_seqlens.long()[batch.doc_ids()]
    else:
        batch.position_ids = batch.unpad(position_ids.to(device, torch.long))
    return batch


def _flash_boundaries(cu_seqlens, max_seqlen, position_ids, **kw):
    """cu_seqlens / max_seqlen from transformers' names; an encoder attends within each document, so the
    key boundaries must be the query ones (compared by shape: comparing values would read the device)."""
    cu_q, cu_k, max_q, max_k = (kw.get(name) for name in FLASH_PACKING_KWARGS[:4])
    if cu_q is None and cu_k is None:
        if max_q is not None or max_k is not None:
            raise ValueError("max_length_q / max_length_k need cu_seq_lens_q / cu_seq_lens_k")
        if kw.get("seq_idx") is not None and cu_seqlens is None and position_ids is None:
            raise ValueError("seq_idx alone is not read: pass position_ids or cu_seq_lens_q/k with it")
        return cu_seqlens, max_seqlen
    if cu_seqlens is not None:
        raise ValueError("pass cu_seqlens or cu_seq_lens_q/k, not both")
    cus = [cu for cu in (cu_q, cu_k) if cu is not None]
    maxes = {int(m) for m in (max_q, max_k) if m is not None}  # int(tensor): a host read
    if len({cu.shape for cu in cus}) > 1 or len(maxes) > 1:
        raise ValueError(
            "cu_seq_lens_k / max_length_k must equal cu_seq_lens_q / max_length_q: RexBERT is an encoder "
            "(self-attention within each document)"
        )
    return cus[0], (maxes.pop() if maxes else None)


def boundaries_from_positions(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(D+1,) boundaries of a (N,) row whose positions restart at every document, as transformers reads
    them: a document starts wherever the position equals the row's smallest. A host read."""
    starts = (position_ids == position_ids.min()).nonzero().flatten().tolist()
    if starts[0] != 0:
        raise ValueError(
            f"position_ids: a packed row must start a document at token 0 (position {int(position_ids.min())}"
            f"); its first restart is at token {starts[0]}"
        )
    bounds = [*starts, position_ids.shape[0]]
    cu = torch.tensor(bounds, dtype=torch.int32, device=position_ids.device)
    return cu, max(b - a for a, b in zip(bounds, bounds[1:]))
