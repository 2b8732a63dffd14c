"""Keeping models usable whether or not they were made under ``torch.inference_mode()``.

A model loaded inside ``torch.inference_mode()`` holds *inference tensors*. They keep no
version counter (reading ``_version`` raises ``Inference tensors do not track version
counter``), they can only be changed in place under inference mode, and a module holding
them that is converted with ``.to()`` outside inference mode is left with weights no
operation accepts any more (PyTorch swaps their data but keeps them versionless). The codec
and the generation LM go through these helpers wherever they would trip on that.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def tensor_version(tensor: torch.Tensor) -> int:
    """The tensor's in-place modification count, or -1 for an inference tensor.

    Caches keyed on versions must see changes to inference tensors some other way
    (replacement, ``load_state_dict``).
    """
    return -1 if tensor.is_inference() else tensor._version


def holds_inference_tensors(module: nn.Module) -> bool:
    """Whether any parameter or buffer of ``module`` was made under inference mode."""
    return any(t.is_inference() for t in itertools.chain(module.parameters(), module.buffers()))


def module_to(module: M, *args: Any, **kwargs: Any) -> M:
    """``module.to(*args, **kwargs)``, also for a module loaded under inference mode.

    Inference-tensor weights are converted under inference mode, the one place where their
    data can be swapped and stay usable; other modules convert as they always do.
    """
    inference = holds_inference_tensors(module)
    with torch.inference_mode() if inference else contextlib.nullcontext():
        return module.to(*args, **kwargs)
