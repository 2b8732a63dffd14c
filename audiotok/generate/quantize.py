"""int8 and int4 language models on a CPU: the linear layers' weights in 8 or 4 bits.

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

:func:`quantize_int4_` stores each linear layer's weights in 4 bits (weight-only, asymmetric,
a bf16 scale and offset per group of :data:`INT4_GROUP` inputs) and runs PyTorch's CPU int4
kernel (``_weight_int4pack_mm_for_cpu``) on bf16 activations: an eighth of the fp32 bytes
(plus the group scales). Example, one weight row of 64 inputs in one group: its min ``m``
and max ``M`` give ``scale = (M - m) / 15``; each weight ``w`` is stored as
``q = round((w - m) / scale)`` in 0..15 and read back as ``(q - 8) * scale + (m + 8 * scale)``.
The kernel needs ``out_features % 16 == 0`` and ``in_features % INT4_GROUP == 0``: other layers
(none in the official models) stay in float32.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .generation import GenerationError
from .transformer import MultiheadAttention


def _split_in_projections(lm: nn.Module) -> None:
    """Makes the attention in-projections modules, so that module-wise quantization reaches
    them (:meth:`MultiheadAttention.split_in_proj_`)."""
    for module in lm.modules():
        if isinstance(module, MultiheadAttention) and module.in_proj is None:
            module.split_in_proj_()


def is_int8(lm: nn.Module) -> bool:
    """Whether ``lm``'s linear layers were quantized by :func:`quantize_int8_`."""
    return bool(getattr(lm, "_audiotok_int8", False))


def quantize_int8_(lm: nn.Module) -> nn.Module:
    """Quantizes the linear layers of ``lm`` (in place) to int8 weights; returns it.

    Raises:
        GenerationError: This torch has no dynamic quantization, or no int8 kernels.
    """
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
    _split_in_projections(lm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice of torch.ao.quantization
        quantize_dynamic(lm, {nn.Linear}, dtype=torch.qint8, inplace=True)
    lm._audiotok_int8 = True
    return lm


INT4_GROUP = 64
"""Inputs per int4 scale (the kernel takes 32, 64, 128 or 256; smaller is closer to fp32)."""


class Int4Linear(nn.Module):
    """A linear layer with int4 weights (see the module doc): ``[..., in] -> [..., out]``.

    Args:
        linear: The float layer to quantize (not kept).
        group_size: Inputs per scale and offset.
    """

    def __init__(self, linear: nn.Linear, group_size: int = INT4_GROUP) -> None:
        super().__init__()
        weight = linear.weight.detach().float()  # [out, in]
        out_features, in_features = weight.shape
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = weight.reshape(out_features, in_features // group_size, group_size)
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        scale = (high - low).clamp(min=1e-8) / 15
        q = ((groups - low) / scale).round().clamp(0, 15).to(torch.int32)
        offset = low + 8 * scale  # the kernel reads (q - 8) * scale + offset
        pairs = torch.stack([scale, offset], dim=-1).squeeze(2)  # [out, in / g, 2]
        self.register_buffer(
            "packed",
            torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                q.reshape(out_features, in_features), 1
            ),
        )
        self.register_buffer("scales", pairs.transpose(0, 1).contiguous().to(torch.bfloat16))
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @staticmethod
    def fits(linear: nn.Linear, group_size: int = INT4_GROUP) -> bool:
        """Whether the kernel takes ``linear``'s shape."""
        return linear.out_features % 16 == 0 and linear.in_features % group_size == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            flat, self.packed, self.group_size, self.scales
        )
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, group_size={self.group_size}"


def is_int4(lm: nn.Module) -> bool:
    """Whether ``lm``'s linear layers were quantized by :func:`quantize_int4_`."""
    return bool(getattr(lm, "_audiotok_int4", False))


def quantize_int4_(lm: nn.Module, group_size: int = INT4_GROUP) -> nn.Module:
    """Replaces (in place) every linear layer of ``lm`` the kernel takes by an
    :class:`Int4Linear`; returns ``lm``.

    Raises:
        GenerationError: This torch has no CPU int4 kernel (it came with PyTorch 2.6).
    """
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        raise GenerationError("this torch has no CPU int4 kernel (PyTorch >= 2.6): use int8")
    _split_in_projections(lm)
    for parent in list(lm.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Linear and Int4Linear.fits(child, group_size):
                setattr(parent, name, Int4Linear(child, group_size))
    lm._audiotok_int4 = True
    return lm
