"""The packed training step on fake tensors: a GPU step's memory and its host syncs, measured on a CPU.

``rexbert plan`` and the launch check (``training.plan``) size a phase's GPU memory with it, and the tests
use it to prove that the step -- forward on packed input (``cu_seqlens``, host-int ``max_seqlen``,
``label_positions``), sparse MLM loss, backward, StableAdamW step -- never reads a device value on the
host. It takes seconds at any size and allocates no tensor memory.

How it runs. The model is built on the meta device (no init, no memory) and every parameter becomes a
FakeTensor (``torch._subclasses.fake_tensor.FakeTensorMode``: shape, dtype and device, no storage). The
fake tensors are *CPU* tensors: a CPU-only torch build aborts when autograd meets a fake CUDA tensor (no
CUDA device guard), and the meta device has no autocast. Attention is forced onto the GPU's backend,
PyTorch's varlen FlashAttention op (``torch.ops.torch_attn._varlen_attn`` and its backward), which runs
here through the fake kernels torch registers for it, so the op's autograd saves exactly what it saves
on a GPU (q, k, v, out, log-sum-exp). The step runs under bf16 autocast with fp32 master weights, as the
recipes train; CPU autocast casts this model's ops as CUDA's does (Linear in bf16; the residual stream,
RoPE and the loss in fp32), except that the MLM head's LayerNorm returns bf16 here and fp32 on CUDA
(labelled tokens × hidden × 2 bytes).

Host syncs. Under FakeTensorMode every op whose result depends on tensor values raises:
``.item()``, ``int(t)``, ``float(t)``, ``bool(t)`` and ``.tolist()`` (``aten._local_scalar_dense``),
``nonzero``, boolean-mask indexing, ``masked_select`` ... (data-dependent output shapes). A copy to the
host would go unnoticed (``.cpu()`` of a CPU tensor is the tensor itself), so :class:`_HostReadGuard`
refuses ``Tensor.cpu()`` and ``Tensor.numpy()`` as well. Not caught: ``.to("cpu")``, which cannot be
told apart from the model's own ``.to(device)`` when the simulated device is the CPU; its result is
useless on a GPU without a read, and every read raises.

Memory. :class:`_PeakMemory` counts the bytes of every storage alive during the step, by category, and
keeps the peak. It is what ``torch.distributed._tools.mem_tracker.MemTracker`` reports as its total
(a test checks the two agree); MemTracker also keeps per-module snapshots, scanning every module on
every op, which makes a base-size step about ten times slower.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
import traceback
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
)
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from training.collator import STATS_KEY, PackedMLMCollator
from training.masking import MaskingConfig, SpanMasker
from training.optim import StableAdamW, param_groups

GIB = 1 << 30
_REPO = str(Path(__file__).resolve().parents[1])
_VARLEN_OPS = ("torch_attn::_varlen_attn", "torch_attn::_varlen_attn_backward")


class HostSyncError(RuntimeError):
    """The training step read a device value on the host (a GPU would stall on it)."""


@dataclass(frozen=True)
class StepShape:
    """One micro-batch of a phase, as its collator builds it.

    Args:
        rows: packed rows per micro-batch (``micro_batch_size``).
        row_tokens: tokens per row (``max_seq_len``; packed rows are full but for the last one).
        masking: the phase's masking (how many tokens the sparse head predicts).
        docs_per_row: documents per row (the attention kernels' memory does not depend on it).
        micro_batches: micro-batches per optimizer step and process; from 2 on, a micro-batch runs while
            the previous ones' gradients are held, which is the step's peak.
    """

    rows: int
    row_tokens: int
    masking: MaskingConfig
    docs_per_row: int = 4
    micro_batches: int = 1


@dataclass(frozen=True)
class DryRun:
    """What the dry run measured: the step's peak bytes and what was alive at that moment."""

    peak_bytes: int
    at_peak: dict[str, int]  # parameters, gradients, optimizer state, activations, temporaries, inputs
    tokens: int  # real tokens per micro-batch
    labelled: int  # tokens the sparse head predicts per micro-batch
    attention_calls: int  # varlen forward + backward calls (0 would mean the GPU kernel was not used)
    seconds: float

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB


class _PeakMemory(TorchDispatchMode):
    """Live bytes of every tensor storage, by category; the peak and what made it up.

    Every op's new output storages are counted under ``category`` (the step sets it) until the storage is
    freed; parameters, inputs, gradients (on accumulation) and optimizer state are (re)labelled."""

    def __init__(self) -> None:
        super().__init__()
        self.category = "activations"
        self._live: dict[int, tuple[weakref.ref, str, int]] = {}  # id(storage) -> (ref, category, bytes)
        self.current: Counter[str] = Counter()
        self.total = 0
        self.peak = 0
        self.at_peak: dict[str, int] = {}
        self.attention_calls = 0

    def set_category(self, category: str) -> None:
        self.category = category

    def track(self, tensor: torch.Tensor, category: str | None = None) -> None:
        """Count ``tensor``'s storage (once); with ``category``, move it to that category."""
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._live:
            if category is not None:
                ref, old, nbytes = self._live[key]
                self.current[old] -= nbytes
                self.current[category] += nbytes
                self._live[key] = (ref, category, nbytes)
            return
        category = category or self.category
        nbytes = storage.nbytes()
        self._live[key] = (weakref.ref(storage, functools.partial(self._freed, key)), category, nbytes)
        self.current[category] += nbytes
        self.total += nbytes
        if self.total > self.peak:
            self.peak = self.total
            self.at_peak = {k: v for k, v in self.current.items() if v}

    def _freed(self, key: int, _ref) -> None:
        _, category, nbytes = self._live.pop(key)
        self.current[category] -= nbytes
        self.total -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in _VARLEN_OPS:
            self.attention_calls += 1
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.track(leaf)
        return out


class _HostReadGuard(TorchFunctionMode):
    """Names the Python call that reads a device tensor on the host, and refuses the copies to the host
    that fake CPU tensors would let pass silently (``.cpu()``, ``.numpy()``)."""

    _READS = {
        torch.Tensor.cpu: "Tensor.cpu()",
        torch.Tensor.numpy: "Tensor.numpy()",
        torch.Tensor.item: "Tensor.item()",
        torch.Tensor.tolist: "Tensor.tolist()",
        torch.Tensor.__int__: "int(tensor)",
        torch.Tensor.__float__: "float(tensor)",
        torch.Tensor.__bool__: "bool(tensor)",
        torch.Tensor.__index__: "a tensor used as an index",
    }

    # Tensors made from host data during the step: on a GPU each is a blocking host-to-device copy (the
    # stream drains first). Host scalars belong in kernel arguments (torch.full, foreach scalar lists).
    _COPIES_IN = {torch.tensor: "torch.tensor(host data)", torch.as_tensor: "torch.as_tensor(host data)"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._READS:
            raise HostSyncError(f"{self._READS[func]} copies a device value to the host")
        if func in self._COPIES_IN:
            raise HostSyncError(f"{self._COPIES_IN[func]} is a blocking host-to-device copy")
        return func(*args, **(kwargs or {}))


def _where(error: BaseException) -> str:
    """The innermost frame of this repository's code in ``error``'s traceback (``file:line``)."""
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if f.filename.startswith(_REPO) and "site-packages" not in f.filename and f.filename != __file__
    ]
    if not frames:
        return "an unknown place"
    frame = frames[-1]
    return f"{Path(frame.filename).relative_to(_REPO)}:{frame.lineno} in {frame.name}: {frame.line}"


@contextlib.contextmanager
def _syncs_as_errors():
    """FakeTensorMode's data-dependent exceptions and the guard's refusals as one :class:`HostSyncError`
    that names the op and the line of our code that called it."""
    try:
        yield
    except (DataDependentOutputException, DynamicOutputShapeException) as error:
        op = getattr(error, "func", None) or str(error)
        raise HostSyncError(
            f"the training step reads a device value on the host: {op} at {_where(error)}"
        ) from error
    except HostSyncError as error:
        raise HostSyncError(
            f"the training step reads a device value on the host: {error} at {_where(error)}"
        ) from error


def fake_model(config, mode: FakeTensorMode):
    """``config``'s masked-LM model with fake CPU parameters of ``mode`` (built on the meta device: no init,
    no memory); tied parameters stay tied."""
    from modeling_rexbert import RexBertForMaskedLM

    with torch.device("meta"):
        model = RexBertForMaskedLM(config)
    memo: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for registry in (module._parameters, module._buffers):
            for name, tensor in list(registry.items()):
                if tensor is None:
                    continue
                if id(tensor) not in memo:
                    with mode:
                        fake = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype)
                    is_param = isinstance(tensor, torch.nn.Parameter)
                    memo[id(tensor)] = torch.nn.Parameter(fake, tensor.requires_grad) if is_param else fake
                registry[name] = memo[id(tensor)]
    return model


def gpu_training_config(config):
    """The config as the trainer runs it: sparse MLM head, no attention dropout (the varlen kernel has
    none)."""
    config = copy.deepcopy(config)
    config.sparse_prediction = True
    config.attention_dropout = 0.0
    return config


def use_gpu_attention(model) -> None:
    """Make ``model`` (a masked-LM model) attend with the kernel a GPU forward picks: PyTorch's varlen
    FlashAttention (bf16 activations, compute capability >= 8.0, no attention dropout). The simulated device
    is such a GPU; the model's own choice would see a CPU and take sdpa."""

    def varlen(*args, **kwargs) -> str:
        return "varlen"

    model.model.attention_implementation = varlen


def _rows(shape: StepShape, vocab_size: int, first_id: int, seed: int) -> list[dict]:
    """Synthetic full rows of ``docs_per_row`` documents (token values do not matter to a fake step)."""
    rng = np.random.default_rng(seed)
    base, extra = divmod(shape.row_tokens, shape.docs_per_row)
    lengths = [base + (i < extra) for i in range(shape.docs_per_row)]
    return [
        {
            "row_id": r,
            "input_ids": rng.integers(first_id, vocab_size, shape.row_tokens),
            "doc_lengths": [n for n in lengths if n],
            "spans": [],
        }
        for r in range(shape.rows)
    ]


def synthetic_micro_batch(config, shape: StepShape, seed: int) -> dict:
    """One micro-batch from the training collator (the trainer's exact input format), on the host."""
    special = sorted(
        {
            i
            for i in (config.pad_token_id, config.cls_token_id, config.sep_token_id, config.mask_token_id)
            if i is not None
        }
    )
    masker = SpanMasker(shape.masking, config.mask_token_id, special, config.vocab_size)
    collate = PackedMLMCollator(masker, seed=seed, local_window=config.local_attention)
    first_id = max(special) + 1 if max(special) + 1 < config.vocab_size else 0
    return collate(_rows(shape, config.vocab_size, first_id, seed))


def train_step(
    model, optimizer, micro_batches: list[dict], *, processes: int = 1, bf16: bool = True, on_phase=None
):
    """One optimizer step as ``RexBertTrainer`` runs it: each micro-batch's forward (bf16 autocast, the loss
    normalised by the labelled tokens of the whole step, a device tensor, and scaled by the process
    count) and backward, then the optimizer's step and ``zero_grad``. ``on_phase(name)`` is told when the
    forward ("activations") and the backward ("temporaries") start."""
    on_phase = on_phase or (lambda name: None)
    device = next(model.parameters()).device
    labelled = torch.full((), sum(mb[STATS_KEY]["labelled"] for mb in micro_batches), device=device)
    for micro_batch in micro_batches:
        inputs = {k: v for k, v in micro_batch.items() if k != STATS_KEY}
        on_phase("activations")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**inputs, num_items_in_batch=labelled).loss * processes
        on_phase("temporaries")
        loss.backward()
        del loss
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def create_optimizer_state(model, optimizer) -> None:
    """StableAdamW creates its moments on its first step: take one on zero gradients, then drop them."""
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def dry_run(
    config,
    shape: StepShape,
    *,
    bf16: bool = True,
    activation_checkpointing: bool = False,
    processes: int = 1,
    seed: int = 0,
) -> DryRun:
    """Run a steady-state training step of ``config``'s masked-LM model on fake tensors.

    :func:`train_step` with ``min(shape.micro_batches, 2)`` micro-batches from the training collator,
    after :func:`create_optimizer_state`, so the peak is that of training step 2 onwards. Raises
    :class:`HostSyncError` if any part reads a device value on the host."""
    started = time.perf_counter()
    config = gpu_training_config(config)
    host_batch = synthetic_micro_batch(config, shape, seed)
    mode = FakeTensorMode()
    model = fake_model(config, mode)
    use_gpu_attention(model)
    if activation_checkpointing:
        model.activation_checkpointing_enable()  # as the Trainer does for trainer.activation_checkpointing
    model.train()
    memory = _PeakMemory()
    with mode, memory, _HostReadGuard(), _syncs_as_errors():
        for p in model.parameters():
            memory.track(p, "parameters")
            p.register_post_accumulate_grad_hook(lambda p: memory.track(p.grad, "gradients"))
        optimizer = StableAdamW(param_groups(model, 1e-5), lr=1e-3)
        memory.category = "temporaries"
        create_optimizer_state(model, optimizer)
        for state in optimizer.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    memory.track(value, "optimizer state")
        # the host-to-device copy: the collator's tensors become device (fake) tensors
        batch = {k: mode.from_tensor(v) if torch.is_tensor(v) else v for k, v in host_batch.items()}
        for value in batch.values():
            if torch.is_tensor(value):
                memory.track(value, "inputs")
        micro_batches = [batch] * min(shape.micro_batches, 2)
        train_step(
            model, optimizer, micro_batches, processes=processes, bf16=bf16, on_phase=memory.set_category
        )
    stats = host_batch[STATS_KEY]
    return DryRun(
        peak_bytes=memory.peak,
        at_peak=dict(memory.at_peak),
        tokens=stats["real_tokens"],
        labelled=stats["labelled"],
        attention_calls=memory.attention_calls,
        seconds=time.perf_counter() - started,
    )
