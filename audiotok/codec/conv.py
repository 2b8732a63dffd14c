"""Convolutions with EnCodec's padding rules and normalisations.

The module tree reproduces the ``encodec`` package's, so the state-dict keys are the official
ones: ``SConv1d.conv`` (a :class:`NormConv1d`) holds ``conv`` (weights ``weight_g``,
``weight_v``, ``bias`` under weight norm, else ``weight``, ``bias``) and ``norm`` (a GroupNorm
under time-group norm, else nothing). A checkpoint key thus reads
``encoder.model.0.conv.conv.weight_g``.

Padding: a convolution of kernel ``k``, stride ``s`` and dilation ``d`` is padded by
``(k - 1) * d + 1 - s`` samples in total (all on the left when causal, split with the extra
sample on the left otherwise), plus just enough on the right for the last window to be full,
all in the layer's ``pad_mode`` (reflect in the encodec package's 24 and 48 kHz models,
constant in audiocraft's 32 and 16 kHz ones), as the reference pads. An
input of ``T`` samples thus gives ``ceil(T / s)`` frames, and the transposed convolutions trim
the same fixed amount so that decode(encode(x)) is ``T`` samples long again after a final
trim.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .config import NORMS
from .inference import tensor_version


def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Right padding that makes the last window of a strided convolution full.

    Example:
        With ``padding_total=4, kernel_size=4, stride=2`` and 5 samples, the padded input
        ``p p 1 2 3 4 5 p`` needs one more sample at the end so that sample 5 falls in a
        window whose transposed output can reproduce it: the function returns 1.
    """
    n_frames = (length - kernel_size + padding_total) / stride + 1
    ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
    return ideal_length - length


def pad1d(x: torch.Tensor, paddings: tuple[int, int], mode: str) -> torch.Tensor:
    """``F.pad`` on the last axis that also reflects inputs shorter than the padding.

    Reflect padding needs more samples than it pads; a short input is first extended with
    zeros on the right, reflected, and the extension cut off again.
    """
    left, right = paddings
    if mode != "reflect":
        return F.pad(x, paddings, mode)
    length = x.shape[-1]
    extension = max(0, max(left, right) - length + 1)
    if extension:
        x = F.pad(x, (0, extension))
    padded = F.pad(x, paddings, mode)
    return padded[..., : padded.shape[-1] - extension]


class WeightNormedConv(nn.Module):
    """A 1-d (transposed) convolution whose weight is stored weight-normalised or plain.

    With ``weight_norm`` the parameters are ``weight_g`` and ``weight_v`` and the effective
    weight is ``weight_g * weight_v / ||weight_v||`` over all axes but the first, computed by
    ``torch._weight_norm`` exactly as ``torch.nn.utils.weight_norm`` does, so results are
    bit-identical to the reference. In inference (no autograd) the folded weight is cached, so
    that streaming does not fold every layer again at each frame, and recomputed when a
    parameter changes: in place (an optimiser step, ``load_state_dict``), replaced, or moved
    (``.to()``). Weights created under ``torch.inference_mode()`` (a codec loaded inside it)
    have no version counter: for them only ``load_state_dict``, ``.to()`` and replacement are
    seen, and other in-place edits must be followed by :meth:`clear_cache`.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel size.
        stride: Stride.
        dilation: Dilation (plain convolution only).
        groups: Groups.
        transposed: A transposed convolution (weight ``[in, out, k]``) instead of ``[out, in, k]``.
        weight_norm: Store the weight as ``weight_g`` / ``weight_v``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        transposed: bool = False,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        # Borrow torch's own initialisation, so a fresh model trains like nn.Conv1d would.
        cls = nn.ConvTranspose1d if transposed else nn.Conv1d
        init = cls(in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = kernel_size, stride, dilation
        self.groups, self.transposed, self.weight_norm = groups, transposed, weight_norm
        # Registration order is state-dict order: the reference's weight norm re-registers
        # the weight as g and v after the bias.
        if weight_norm:
            v = init.weight.detach()
            self.bias = nn.Parameter(init.bias.detach().clone())
            if v.is_meta:
                # Built to adopt a checkpoint's tensors (checkpoints.adopt_state): only the
                # shape matters, and torch computes a norm on the meta device through its
                # Python references, whose first use imports sympy and torch._dynamo (~1 s).
                g = v.new_empty((v.shape[0],) + (1,) * (v.dim() - 1))
            else:
                g = torch.norm_except_dim(v, 2, 0).clone()
            self.weight_g = nn.Parameter(g)
            self.weight_v = nn.Parameter(v.clone())
        else:
            self.weight = nn.Parameter(init.weight.detach().clone())
            self.bias = nn.Parameter(init.bias.detach().clone())
        self._folded: torch.Tensor | None = None
        self._folded_key: tuple[int, ...] = ()

    def clear_cache(self) -> None:
        """Forgets the folded weight; the next inference call folds it again.

        Only needed after editing weights made under ``torch.inference_mode()`` in place by
        hand: other changes are detected (see the class docstring).
        """
        self._folded, self._folded_key = None, ()

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        # The one in-place change that inference tensors can't signal by their version.
        self.clear_cache()
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn: Any, recurse: bool = True) -> WeightNormedConv:
        # .to(), .half(), .cuda()...: a cached weight would keep the old device and dtype.
        self.clear_cache()
        return super()._apply(fn, recurse)

    def effective_weight(self) -> torch.Tensor:
        """The weight actually applied: ``[out, in, k]``, or ``[in, out, k]`` transposed."""
        if not self.weight_norm:
            return self.weight
        # Under torch.compile the cache's checks would recompile every layer: fold in-graph.
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return torch._weight_norm(self.weight_v, self.weight_g, 0)
        g, v = self.weight_g, self.weight_v
        key = (tensor_version(g), tensor_version(v), g.data_ptr(), v.data_ptr())
        if self._folded is None or key != self._folded_key:
            self._folded = torch._weight_norm(v, g, 0)
            self._folded_key = key
        return self._folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the convolution without padding.

        Args:
            x: Input ``[B, C_in, T]``.

        Returns:
            Output ``[B, C_out, T']``.
        """
        weight = self.effective_weight()
        if self.transposed:
            return F.conv_transpose1d(x, weight, self.bias, self.stride, groups=self.groups)
        return F.conv1d(
            x, weight, self.bias, self.stride, dilation=self.dilation, groups=self.groups
        )

    def extra_repr(self) -> str:
        kind = "transposed, " if self.transposed else ""
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, {kind}weight_norm={self.weight_norm}"
        )


class NormConv1d(nn.Module):
    """A convolution and the normalisation that follows it (``conv`` and ``norm`` keys).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel size.
        stride: Stride.
        dilation: Dilation.
        groups: Groups.
        norm: One of ``none``, ``weight_norm``, ``time_group_norm``.
        transposed: A transposed convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm: str = "none",
        transposed: bool = False,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
        conv = WeightNormedConv(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            dilation,
            groups,
            transposed=transposed,
            weight_norm=norm == "weight_norm",
        )
        # The attribute name is part of the checkpoint key: `conv` or `convtr`.
        self.add_module("convtr" if transposed else "conv", conv)
        self.norm: nn.Module = (
            nn.GroupNorm(1, out_channels) if norm == "time_group_norm" else nn.Identity()
        )

    @property
    def layer(self) -> WeightNormedConv:
        """The wrapped convolution, whatever its attribute name."""
        return self.convtr if hasattr(self, "convtr") else self.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolution then normalisation: ``[B, C_in, T]`` -> ``[B, C_out, T']``."""
        return self.norm(self.layer(x))


class SConv1d(nn.Module):
    """A convolution padded so that ``T`` samples give ``ceil(T / stride)`` frames.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel size.
        stride: Stride.
        dilation: Dilation.
        groups: Groups.
        causal: Pad only on the left, so outputs never depend on later samples.
        norm: One of ``none``, ``weight_norm``, ``time_group_norm``.
        pad_mode: ``F.pad`` mode of all the padding, the extra right padding included.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        causal: bool = False,
        norm: str = "none",
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        self.conv = NormConv1d(
            in_channels, out_channels, kernel_size, stride, dilation, groups, norm=norm
        )
        self.causal = causal
        self.pad_mode = pad_mode
        self.kernel_size, self.stride = kernel_size, stride
        self.padding_total = (kernel_size - 1) * dilation + 1 - stride
        self._effective_kernel = (kernel_size - 1) * dilation + 1

    def paddings(self, length: int) -> tuple[int, int]:
        """``(left, right)`` padding of an input of ``length`` samples (see the module doc)."""
        total = self.padding_total
        extra = extra_padding_for_conv1d(length, self._effective_kernel, self.stride, total)
        if self.causal:
            return total, extra
        return total - total // 2, total // 2 + extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pads and convolves: ``[B, C_in, T]`` -> ``[B, C_out, ceil(T / stride)]``."""
        return self.conv(pad1d(x, self.paddings(x.shape[-1]), self.pad_mode))


class SConvTranspose1d(nn.Module):
    """A transposed convolution trimmed to ``stride * T`` samples for ``T`` frames.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel size.
        stride: Stride (the upsampling ratio).
        causal: Trim the padding on the right (as set by ``trim_right_ratio``), so outputs never
            depend on later frames.
        norm: One of ``none``, ``weight_norm``, ``time_group_norm``.
        trim_right_ratio: Share of the padding trimmed on the right when causal.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        causal: bool = False,
        norm: str = "none",
        trim_right_ratio: float = 1.0,
    ) -> None:
        super().__init__()
        if not causal and trim_right_ratio != 1.0:
            raise ValueError("trim_right_ratio != 1 only makes sense for causal convolutions")
        if not 0.0 <= trim_right_ratio <= 1.0:
            raise ValueError(f"trim_right_ratio must be in [0, 1], not {trim_right_ratio}")
        self.convtr = NormConv1d(
            in_channels, out_channels, kernel_size, stride, norm=norm, transposed=True
        )
        padding_total = kernel_size - stride
        if causal:
            self.padding_right = math.ceil(padding_total * trim_right_ratio)
        else:
            self.padding_right = padding_total // 2
        self.padding_left = padding_total - self.padding_right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsamples and trims: ``[B, C_in, T]`` -> ``[B, C_out, stride * T]``."""
        y = self.convtr(x)
        return y[..., self.padding_left : y.shape[-1] - self.padding_right]
