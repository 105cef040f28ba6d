"""``--device`` checked before any work: ``cuda`` on a CPU-only torch build is one line naming the build,
not an ``AssertionError`` from deep inside the first ``.to(device)``."""

from __future__ import annotations

from rexbert_common.errors import UserError


def check_device(device: str, flag: str = "--device") -> str:
    """``device`` if this process can use it (``cpu``, ``cuda``, ``cuda:N``, ``mps``), else a UserError."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UserError(f"{flag} {device!r} is not a device (cpu, cuda, cuda:N, mps)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            raise UserError(f"{flag} {device}: no usable CUDA GPU here (torch {torch.__version__}, {build})")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UserError(f"{flag} {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{flag} {device}: MPS is not available on this machine")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{flag} {device!r}: only cpu, cuda and mps are supported")
    return device
