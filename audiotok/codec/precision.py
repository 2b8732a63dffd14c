"""Numeric precision of codec inference: exact float32 by default, faster modes on request.

``fp32`` is the reference arithmetic: on CUDA it also turns off TF32, which PyTorch enables
for convolutions by default and which changes codes near ties. ``tf32`` allows TF32 matrix
units on CUDA (Ampere and later; no effect on CPU). ``bf16`` and ``fp16`` run the encoder and
decoder networks under autocast; the quantizer always measures distances in float32, since
half precision would pick the wrong codebook entry far more often than the network's own
rounding does. How many codes each mode keeps equal to ``fp32`` is measured by
``benchmarks/batch_bench.py`` (results in benchmarks/RESULTS.md). Streams
(:meth:`EncodecCodec.streaming`) always run in float32, TF32 off (:func:`exact_inference`), so
on CUDA they code as the one-pass ``fp32`` path does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..errors import DeviceError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> str:
    """Returns ``precision`` if it is known and ``device`` can run it, else raises."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError("fp16 inference needs a CUDA device; on CPU use bf16")
    return precision


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Runs the enclosed inference in ``precision`` on ``device`` (see the module docstring)."""
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            allow = precision == "tf32"
            saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow
            stack.callback(_restore_tf32, saved)
        if precision in _AUTOCAST:
            stack.enter_context(torch.autocast(device.type, dtype=_AUTOCAST[precision]))
        yield


@contextlib.contextmanager
def exact_inference(device: torch.device) -> Iterator[None]:
    """``no_grad`` (ordinary tensors out: codec.arrays.inference) in float32 with TF32 off.

    PyTorch turns TF32 on for cuDNN convolutions by default; streams without this coded
    differently from the one-pass path on a GPU."""
    with torch.no_grad(), precision_context("fp32", device):
        yield


def _restore_tf32(saved: tuple[bool, bool]) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Turns autocast off, for the quantizer's distances and lookups."""
    return torch.autocast(device.type, enabled=False)
