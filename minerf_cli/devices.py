"""`--device auto|cpu|cuda[:N]` and `--precision auto|bf16|tf32|fp32`."""

from __future__ import annotations

import contextlib

import torch

from .errors import UsageError

PRECISIONS = ("auto", "bf16", "tf32", "fp32")


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' -> the first CUDA GPU if there is one, else the CPU; 'cuda[:N]' must exist."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"--device {spec!r}: expected auto, cpu or cuda[:N]") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: CUDA is not available (torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UsageError(f"--device {spec!r}: expected auto, cpu or cuda[:N]")
    return dev


def resolve_precision(spec: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA, fp32 on the CPU. TF32 matmuls are enabled for bf16 and tf32."""
    spec = (spec or "auto").lower()
    if spec not in PRECISIONS:
        raise UsageError(f"--precision {spec!r}: expected one of {', '.join(PRECISIONS)}")
    if spec == "auto":
        spec = "bf16" if device.type == "cuda" else "fp32"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = spec in ("bf16", "tf32")
        torch.backends.cudnn.allow_tf32 = spec in ("bf16", "tf32")
    return spec


def autocast(device: torch.device, precision: str):
    """The autocast context for a resolved precision (bf16 only; the rest run in fp32/TF32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
