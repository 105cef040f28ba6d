"""RexBERT: a ModernBERT-architecture encoder that runs on real tokens only, on every attention backend.

Remote code (torch, transformers and the standard library only), shipped with ``configuration_rexbert.py``,
``packing_rexbert.py`` (input conventions) and ``attention_rexbert.py`` (backends). Packed (1, N) or padded
(B, S) input becomes a :class:`PackedBatch`; every Linear / MLP / LayerNorm runs on the N real tokens,
attention runs per document, and padded input is re-padded once at the end. With packed input and the
``varlen`` backend, forward and backward read nothing back from the device. State-dict names equal
transformers' ``ModernBertForMaskedLM``, so weights move both ways.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple, logging

from .attention_rexbert import ATTENTION_BACKENDS, GLOBAL_WINDOW, select_attention
from .configuration_rexbert import RexBertConfig
from .packing_rexbert import PackedBatch, pack_inputs

logger = logging.get_logger(__name__)


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float):
    """fp32 RoPE tables for (N,) positions: cos, sin of shape (N, 1, 1, head_dim / 2) (NeoX rotate-half
    uses the same angle for channels i and i + d/2)."""
    exponent = torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim
    freqs = (position_ids.float()[:, None] * (1.0 / theta**exponent)[None, :])[:, None, None, :]
    return freqs.cos(), freqs.sin()


def apply_rope(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``qk`` (N, 2, heads, d) NeoX style (pairs i, i + d/2) by fp32 (N, 1, 1, d/2) tables: computed
    in (at least) fp32 and cast back once, as transformers does."""
    x1, x2 = qk.to(torch.promote_types(qk.dtype, torch.float32)).chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(qk.dtype)


def _norm(config: RexBertConfig) -> nn.LayerNorm:
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)


class RexBertEmbeddings(nn.Module):
    def __init__(self, config: RexBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.norm, self.drop = _norm(config), nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None):
        x = inputs_embeds if inputs_embeds is not None else self.tok_embeddings(input_ids)
        return self.drop(self.norm(x))


class RexBertAttention(nn.Module):
    """Fused QKV projection, RoPE, attention per document, output projection."""

    is_causal = False  # read by transformers' flash attention functions

    def __init__(self, config: RexBertConfig, layer_idx: int):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        # FlashAttention's (left, right): query i sees keys i - left .. i + right, i.e. |i - j| <= window/2.
        local = config.layer_types[layer_idx] == "sliding_attention"
        self.window = (config.sliding_window, config.sliding_window) if local else GLOBAL_WINDOW
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.Wo = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        self.out_drop = nn.Dropout(config.attention_dropout)

    def forward(self, x, batch: PackedBatch, rope, backend: str, rows=None, need_weights=False):
        """(N, H) -> (N, H), or (M, H) for token ``rows`` only (every token still serves as a key)."""
        N = x.shape[0]
        qk, v = self.Wqkv(x).view(N, 3, self.num_heads, self.head_dim).split([2, 1], dim=1)
        q, k = apply_rope(qk, *rope).unbind(1)  # (N, heads, d)
        dropout, scale = (self.config.attention_dropout if self.training else 0.0), self.head_dim**-0.5
        if backend in ATTENTION_BACKENDS:
            kw = {"window": self.window, "dropout": dropout, "scale": scale, "need_weights": need_weights}
            out, weights = ATTENTION_BACKENDS[backend](q, k, v[:, 0], batch, **kw)
        else:  # transformers' AttentionInterface (flash_attention_2/3, Hub kernels) with its packed kwargs
            cu, m, half = batch.cu_seqlens, batch.max_seqlen, self.window[0]
            out, weights = ALL_ATTENTION_FUNCTIONS.get_interface(backend, None)(
                self, *(t.transpose(0, 1)[None] for t in (q, k, v[:, 0])), None,  # (1, heads, N, d)
                scaling=scale, dropout=dropout, deterministic=self.config.deterministic_flash_attn,
                sliding_window=half + 1 if half >= 0 else None,  # transformers' flash: (sw - 1, sw - 1)
                cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=m, max_length_k=m,
            )  # fmt: skip
        out = out.reshape(N, self.num_heads * self.head_dim)
        return self.out_drop(self.Wo(out if rows is None else out.index_select(0, rows))), weights


class RexBertMLP(nn.Module):
    """GeGLU: Wo(act(input) * gate) with input, gate = Wi(x).chunk(2)."""

    def __init__(self, config: RexBertConfig):
        super().__init__()
        self.Wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.act, self.drop = ACT2FN[config.hidden_activation], nn.Dropout(config.mlp_dropout)
        self.Wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inp, gate = self.Wi(x).chunk(2, dim=-1)
        return self.Wo(self.drop(self.act(inp) * gate))


class RexBertEncoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: RexBertConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = nn.Identity() if layer_idx == 0 else _norm(config)  # ModernBERT: layer 0 has none
        self.attn = RexBertAttention(config, layer_idx)
        self.mlp_norm, self.mlp = _norm(config), RexBertMLP(config)
        self.attention_type = config.layer_types[layer_idx]

    def forward(self, hidden, cos, sin, batch: PackedBatch, backend: str, rows=None, need_weights=False):
        """(N, H) -> (N, H), or (M, H) for ``rows`` only: all after attention is per token (sparse MLM)."""
        attn_out, weights = self.attn(self.attn_norm(hidden), batch, (cos, sin), backend, rows, need_weights)
        hidden = (hidden if rows is None else hidden.index_select(0, rows)) + attn_out
        return hidden + self.mlp(self.mlp_norm(hidden)), weights


class RexBertPredictionHead(nn.Module):
    def __init__(self, config: RexBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act, self.norm = ACT2FN[config.classifier_activation], _norm(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(x)))


class RexBertPreTrainedModel(PreTrainedModel):
    config_class = RexBertConfig  # transformers reads the annotation below, a string under __future__
    config: RexBertConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["RexBertEmbeddings", "RexBertEncoderLayer"]
    _supports_sdpa = _supports_flash_attn = True  # flash: through transformers' AttentionInterface

    def get_correct_attn_implementation(self, requested: str | None, is_init_check: bool = False) -> str:
        """One switch: RexBERT's backends (``varlen`` by default, ``sdpa``, ``eager``) or a flash function of
        transformers' ``AttentionInterface`` (its others take a dense (B, 1, S, S) mask, not documents)."""
        if requested is None or requested in ATTENTION_BACKENDS:
            return requested or "varlen"
        if "flex" in requested or "paged" in requested:
            raise ValueError(
                f"attn_implementation={requested!r}: use varlen, sdpa, eager or a flash function"
            )
        return super().get_correct_attn_implementation(requested, is_init_check)

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False) -> None:
        # transformers 5 skips, for remote code, modules without parameters of their own (RexBertMLP, ...);
        # _init_weights writes through transformers.initialization, which leaves loaded tensors alone.
        super()._initialize_weights(module, is_custom_code=False)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """ModernBERT init: truncated normal (+-cutoff sigma); 0.02 for embeddings / Wi / Wqkv,
        0.02 / sqrt(2 * layers) for both Wo, head.dense and the decoder, hidden^-0.5 for classifiers."""
        super()._init_weights(module)
        cfg = self.config
        cutoff, std_in = cfg.initializer_cutoff_factor or 3.0, cfg.initializer_range
        std_out = cfg.initializer_range / math.sqrt(2.0 * cfg.num_hidden_layers)

        def trunc(layer: nn.Module, std: float) -> None:
            init.trunc_normal_(layer.weight, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)
            if getattr(layer, "bias", None) is not None:
                init.zeros_(layer.bias)

        inits = {
            RexBertEmbeddings: [("tok_embeddings", std_in)],
            RexBertMLP: [("Wi", std_in), ("Wo", std_out)],
            RexBertAttention: [("Wqkv", std_in), ("Wo", std_out)],
            RexBertPredictionHead: [("dense", std_out)],
            RexBertForMaskedLM: [("decoder", std_out)],
            _RexBertClassifier: [("classifier", cfg.hidden_size**-0.5)],
        }
        for cls, layers in inits.items():
            if isinstance(module, cls):
                for name, std in layers:
                    trunc(getattr(module, name), std)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Write ``auto_map`` for every Auto class (transformers only records the saved class)."""
        self.config.auto_map = {"AutoConfig": "configuration_rexbert.RexBertConfig"} | {
            f"AutoModel{task}": f"modeling_rexbert.RexBert{task or 'Model'}"
            for task in ("", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification")
        }
        return super().save_pretrained(save_directory, *args, **kwargs)


class RexBertModel(RexBertPreTrainedModel):
    """The bare encoder: ``last_hidden_state`` (B, S, H), zeros at padding; (1, N, H) for packed input."""

    def __init__(self, config: RexBertConfig):
        super().__init__(config)
        config.validate_rexbert()
        self.embeddings = RexBertEmbeddings(config)
        self.layers = nn.ModuleList(RexBertEncoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = _norm(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.tok_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.tok_embeddings = value

    def attention_implementation(self, device: torch.device, dtype: torch.dtype, output_attentions=False):
        """The attention a forward on ``device`` with ``dtype`` activations uses (see attention_rexbert)."""
        return select_attention(self.config, device, dtype, self.training, output_attentions)

    def encode(self, batch, input_ids, inputs_embeds, output_attentions, output_hidden_states, rows=None):
        """Final states (N, H) of the N real tokens of ``batch`` (a :class:`PackedBatch`), or (M, H) of
        ``rows`` only, and the output fields ``hidden_states`` (per layer, re-padded) and ``attentions``."""
        cfg = self.config
        if batch.max_seqlen > cfg.max_position_embeddings:
            logger.warning_once(
                f"A document of {batch.max_seqlen} tokens exceeds max_position_embeddings="
                f"{cfg.max_position_embeddings}; RoPE extrapolates past the trained length and "
                "quality may drop. Truncate it (tokenizer truncation=True) if that is not intended."
            )
        weights = bool(cfg.output_attentions if output_attentions is None else output_attentions)
        states = bool(cfg.output_hidden_states if output_hidden_states is None else output_hidden_states)
        ids, embeds = (batch.unpad(x) if x is not None else None for x in (input_ids, inputs_embeds))
        hidden = self.embeddings(ids, embeds)  # (N, H)
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        backend = self.attention_implementation(hidden.device, dtype, weights)
        ropes = {
            t: rope_cos_sin(batch.position_ids, cfg.head_dim, cfg.rope_theta_for(t))
            for t in set(cfg.layer_types)
        }
        all_hidden, attentions = [hidden] if states else None, [] if weights else None
        for i, layer in enumerate(self.layers):
            only = rows if i == len(self.layers) - 1 and not states else None
            hidden, w = layer(hidden, *ropes[layer.attention_type], batch, backend, only, weights)
            if states:
                all_hidden.append(hidden)
            if weights:
                attentions.append(w)
        if rows is not None and (states or not self.layers):
            hidden = hidden.index_select(0, rows)
        extras = {
            "hidden_states": tuple(batch.repad(h) for h in all_hidden) if states else None,
            "attentions": tuple(attentions) if weights else None,
        }
        return self.final_norm(hidden), extras

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutput | tuple:
        r"""
        Args:
            input_ids: (B, S) token ids, or inputs_embeds: (B, S, H).
            attention_mask: (B, S) 1 = real token, 0 = padding (dropped before any computation).
                A row that is all zeros yields an all-zero hidden-state row (never NaN).
            position_ids: (B, S) RoPE positions; for packed input (1, N), restarting at every document
                (alone, they also mark the documents, as in transformers' DataCollatorWithFlattening).
            cu_seqlens, max_seqlen: packed input (1, N): (D+1,) int32 document boundaries and the longest
                document's length (host int). Attention never crosses a boundary.
            kwargs: the same as transformers names them (cu_seq_lens_q/k, max_length_q/k, seq_idx), or
                token_type_ids (ignored: no segment embeddings); any other name raises TypeError.
        Returns `BaseModelOutput`, states re-padded to (B, S); attentions (B, heads, S, S) run eager.
        """
        batch = pack_inputs(
            input_ids, inputs_embeds, attention_mask, position_ids, cu_seqlens, max_seqlen, **kwargs
        )
        hidden, extras = self.encode(batch, input_ids, inputs_embeds, output_attentions, output_hidden_states)
        return BaseModelOutput(last_hidden_state=batch.repad(hidden), **extras)


def masked_lm_loss(logits, targets, ignore_index: int, num_items_in_batch=None, all_valid=False):
    """sum(CE) over targets != ignore_index, divided by ``num_items_in_batch`` when given (transformers'
    gradient-accumulation convention) or by this batch's target count; 0 (with a graph) when empty.
    ``all_valid``: no target is ignored (the sparse head). Reads nothing back from the device."""
    divisor = num_items_in_batch
    if divisor is None:
        divisor = targets.numel() if all_valid else (targets != ignore_index).sum().clamp(min=1)
    elif torch.is_tensor(divisor):
        divisor = divisor.to(logits.device)
    if all_valid:
        divisor = max(divisor, 1) if isinstance(divisor, int) else divisor
        return _SparseCrossEntropy.apply(logits, targets) / divisor
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index, reduction="sum") / divisor


class _SparseCrossEntropy(torch.autograd.Function):
    """sum(CE) of (M, V) logits, all M targets valid; keeps the logits and their fp32 log-sum-exp only."""

    @staticmethod
    def log_sum_exp(logits: torch.Tensor) -> torch.Tensor:  # (M,) in (at least) fp32
        return torch.logsumexp(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)

    @staticmethod
    def softmax_minus_onehot(logits, targets, lse, scale) -> torch.Tensor:  # a new (M, V) in logits' dtype
        grad = (logits.to(lse.dtype) - lse[:, None]).exp_()
        grad[torch.arange(targets.numel(), device=grad.device), targets] -= 1.0
        return grad.mul_(scale).to(logits.dtype)

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor):
        lse = _SparseCrossEntropy.log_sum_exp(logits)
        ctx.save_for_backward(logits, targets, lse)
        return (lse - logits.gather(1, targets[:, None]).squeeze(1).to(lse.dtype)).sum()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        return _SparseCrossEntropy.softmax_minus_onehot(*ctx.saved_tensors, grad_out), None


class RexBertForMaskedLM(RexBertPreTrainedModel):
    """Encoder + ModernBERT MLM head (dense -> act -> norm) + decoder tied to the token embeddings.

    With ``labels`` and ``config.sparse_prediction`` the head runs only on labelled tokens and ``logits``
    is (M, V) in token order; otherwise (B, S, V) with zeros at padding.
    """

    _tied_weights_keys = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}

    def __init__(self, config: RexBertConfig):
        super().__init__(config)
        self.model, self.head = RexBertModel(config), RexBertPredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.decoder = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        label_positions: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput | tuple:
        r"""
        labels: (B, S) or packed (1, N) targets, ``config.sparse_pred_ignore_index`` where not predicted.
        label_positions: packed input, (M,) ascending indices of the labelled tokens in the (1, N) row (the
            collator's host copy of ``labels != -100``), so the sparse head gathers without a host read.
        num_items_in_batch: labelled tokens of the whole optimizer step; the loss is then sum / that.
        (Other arguments as :meth:`RexBertModel.forward`.)
        """
        if label_positions is not None and attention_mask is not None:
            raise ValueError("label_positions index the (1, N) row of packed input: pass no attention_mask")
        ignore = self.config.sparse_pred_ignore_index
        batch = pack_inputs(
            input_ids, inputs_embeds, attention_mask, position_ids, cu_seqlens, max_seqlen, **kwargs
        )
        targets, rows = (batch.unpad(labels) if labels is not None else None), None  # (N,)
        if targets is not None and self.config.sparse_prediction:
            if label_positions is None:  # host read: the padded form only
                label_positions = (targets != ignore).nonzero().squeeze(1)
            rows = label_positions.to(targets.device)
            targets = targets.index_select(0, rows)  # (M,)
        hidden, extras = self.model.encode(
            batch, input_ids, inputs_embeds, output_attentions, output_hidden_states, rows
        )
        logits = self.decoder(self.head(hidden))  # (N or M, V)
        loss = (
            None
            if targets is None
            else masked_lm_loss(logits, targets, ignore, num_items_in_batch, rows is not None)
        )
        logits = batch.repad(logits) if rows is None else logits
        return MaskedLMOutput(loss=loss, logits=logits, **extras)


class _RexBertClassifier(RexBertPreTrainedModel):
    """Encoder -> prediction head -> dropout -> linear classifier, on packed or padded input."""

    accepts_loss_kwargs = False  # the loss is a per-batch mean: Trainer scales it for accumulation itself

    def __init__(self, config: RexBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model, self.head = RexBertModel(config), RexBertPredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.drop(self.head(x)))

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ):
        """Arguments as :meth:`RexBertModel.forward`, plus ``labels``."""
        batch = pack_inputs(
            input_ids, inputs_embeds, attention_mask, position_ids, cu_seqlens, max_seqlen, **kwargs
        )
        hidden, extras = self.model.encode(
            batch, input_ids, inputs_embeds, output_attentions, output_hidden_states
        )
        logits, loss = self.predict(batch, hidden, labels)
        return self.output_class(loss=loss, logits=logits, **extras)


class RexBertForSequenceClassification(_RexBertClassifier):
    """One prediction per document: per row of padded input, per document of packed input; logits
    (D, num_labels), labels (D,) or (D, num_labels). Token states are pooled per document by
    ``config.classifier_pooling`` (first token or mean). Loss: transformers' sequence-classification loss
    by ``config.problem_type`` (regression, single- or multi-label; inferred from the labels when unset)."""

    output_class = SequenceClassifierOutput

    def predict(self, batch: PackedBatch, hidden: torch.Tensor, labels: torch.Tensor | None):
        cu = batch.cu_seqlens.long()
        lengths = (cu[1:] - cu[:-1])[:, None]  # (D, 1)
        if self.config.classifier_pooling == "cls":  # the first token of every document
            pooled = hidden.index_select(0, cu[:-1].clamp(max=batch.num_tokens - 1)) * (lengths > 0)
        else:  # empty documents pool to zeros, not NaN
            sums = hidden.new_zeros(batch.num_docs, hidden.shape[1]).index_add_(0, batch.doc_ids(), hidden)
            pooled = sums / lengths.clamp(min=1)
        logits = self.classify(pooled)  # (D, num_labels)
        return logits, (self.loss_function(labels, logits, self.config) if labels is not None else None)


class RexBertForTokenClassification(_RexBertClassifier):
    """A prediction per real token; logits (B, S, C) with zeros at padding, (1, N, C) for packed input.
    Loss: transformers' token-classification loss, the mean cross-entropy over labels != -100."""

    output_class = TokenClassifierOutput

    def predict(self, batch: PackedBatch, hidden: torch.Tensor, labels: torch.Tensor | None):
        logits = self.classify(hidden)  # (N, C)
        loss = self.loss_function(logits, batch.unpad(labels), self.config) if labels is not None else None
        return batch.repad(logits), loss
