"""int8 language models on a CPU: every linear layer's weights in 8 bits, quantized per call.

:func:`quantize_int8_` applies PyTorch's dynamic quantization (``quantize_dynamic``, fbgemm
kernels) to every ``nn.Linear`` of the LM, the attention in-projections included (moved into
modules first, :meth:`MultiheadAttention.split_in_proj_`): the weights are stored as int8 with
one scale per tensor, activations are quantized on the fly at each call, and the products are
accumulated in int32. A decoding step reads a quarter of the fp32 bytes. The embeddings, the
norms and the conditioning projections outside the LM stay in float32.

On a 2-core CPU, one 1024x4096 and one 4096x1024 layer at batch 2 ran in half the fp32 time
(ad hoc, 2026-12-05); torchao's weight-only int8 ran 3.5x slower than fp32 there, which is why
PyTorch's own dynamic quantization is used. Its API is marked deprecated in favour of torchao;
the warning is silenced here, and a torch without it raises one line.

    >>> model.set_precision("int8")                                   # doctest: +SKIP
"""

from __future__ import annotations

import warnings

from torch import nn

from .generation import GenerationError
from .transformer import MultiheadAttention


def is_int8(lm: nn.Module) -> bool:
    """Whether ``lm``'s linear layers were quantized by :func:`quantize_int8_`."""
    return bool(getattr(lm, "_audiotok_int8", False))


def quantize_int8_(lm: nn.Module) -> nn.Module:
    """Quantizes the linear layers of ``lm`` (in place) to int8 weights; returns it.

    Raises:
        GenerationError: This torch has no dynamic quantization, or no int8 kernels.
    """
    import torch

    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        raise GenerationError(
            "this torch has no dynamic quantization: int8 is unavailable"
        ) from None
    if "fbgemm" not in torch.backends.quantized.supported_engines and (
        "x86" not in torch.backends.quantized.supported_engines
    ):
        raise GenerationError("this CPU build of torch has no int8 kernels (fbgemm)")
    for module in lm.modules():
        if isinstance(module, MultiheadAttention) and module.in_proj is None:
            module.split_in_proj_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice of torch.ao.quantization
        quantize_dynamic(lm, {nn.Linear}, dtype=torch.qint8, inplace=True)
    lm._audiotok_int8 = True
    return lm
