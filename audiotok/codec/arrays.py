"""The arrays a codec works in: torch tensors (``"pt"``) or numpy arrays (``"np"``).

A :class:`~audiotok.codec.base.Codec` names its framework (``Codec.framework``): the torch
backend's tokens and audio are tensors on its device, the ONNX Runtime backend's are numpy
arrays, so that it runs where torch is not installed. These helpers let the code around a
codec (the base class, :class:`~audiotok.codec.tokens.Tokens`, compression) take either kind
and give back the codec's, importing torch only when the array in hand is a tensor or the
framework asked for is ``"pt"``.

    >>> import numpy as np
    >>> x = as_framework([[1, 2]], "np", dtype="int64")
    >>> x.dtype, concat([x, x], axis=-1).shape
    (dtype('int64'), (1, 4))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..audio.read import is_tensor, to_numpy

FRAMEWORKS = ("pt", "np")
"""``pt``: torch tensors; ``np``: numpy arrays (the names safetensors gives them)."""


def framework_of(x: Any) -> str:
    """``"pt"`` for a torch tensor, else ``"np"``."""
    return "pt" if is_tensor(x) else "np"


def as_framework(x: Any, framework: str, *, dtype: str | None = None, device: Any = None) -> Any:
    """``x`` (a tensor, an array or a nested list) as ``framework``'s array.

    Args:
        x: The data.
        framework: ``"pt"`` or ``"np"``.
        dtype: A numpy dtype name (``"int64"``, ``"float32"``), or None to keep ``x``'s.
        device: For ``"pt"``, where to put the tensor (None: where it is, or the CPU).
    """
    if framework == "np":
        array = to_numpy(x)
        return array if dtype is None else array.astype(dtype, copy=False)
    if framework != "pt":
        raise ValueError(f"framework must be one of {', '.join(FRAMEWORKS)}, not {framework!r}")
    import torch

    if not is_tensor(x):
        array = np.ascontiguousarray(np.asarray(x))
        # torch warns of arrays it can't write to (those of files read with mmap, say).
        x = torch.from_numpy(array if array.flags.writeable else array.copy())
    if dtype is not None:
        x = x.to(getattr(torch, dtype))
    return x if device is None else x.to(device)


def concat(arrays: Sequence[Any], axis: int) -> Any:
    """Joins arrays of one framework along ``axis``."""
    if is_tensor(arrays[0]):
        import torch

        return torch.cat(list(arrays), dim=axis)
    return np.concatenate(arrays, axis=axis)


@contextlib.contextmanager
def inference(framework: str) -> Iterator[None]:
    """No autograd graph while a ``"pt"`` codec runs; nothing to do for ``"np"``.

    ``no_grad`` rather than ``inference_mode``: what the codec returns goes to the caller, and
    inference tensors can't be changed in place or saved for backward outside inference mode
    (codes fed to a trained embedding, audio in a loss, both failed). The two ran the packaged
    codec equally fast (10 s encoded and decoded: 0.224-0.236 s either way, best of 7, 2 threads).
    """
    if framework != "pt":
        yield
        return
    import torch

    with torch.no_grad():
        yield
