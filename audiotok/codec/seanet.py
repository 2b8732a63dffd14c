"""SEANet encoder and decoder, the convolutional halves of EnCodec.

The encoder maps audio ``[B, C, T]`` to a latent ``[B, D, ceil(T / hop)]`` through a first
convolution, one stage per ratio (residual blocks, then a strided convolution doubling the
width), the bottleneck LSTM and a last convolution to ``D`` channels. The decoder mirrors it
with transposed convolutions. Each layer sits at the index of ``self.model`` that the official
checkpoints use, e.g. for the 24 kHz model::

    encoder.model: 0 conv | 1 res, 2 ELU, 3 down x2 | 4 res, 5 ELU, 6 down x4 | 7 res, 8 ELU,
                   9 down x5 | 10 res, 11 ELU, 12 down x8 | 13 LSTM | 14 ELU | 15 conv
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import CodecConfig
from .conv import SConv1d, SConvTranspose1d
from .lstm import SLSTM
from .snake import Snake1d


def activation(config: CodecConfig, channels: int) -> nn.Module:
    """The config's activation for ``channels`` channels: ELU, or Snake (DAC)."""
    if config.activation == "Snake":
        return Snake1d(channels)
    return nn.ELU(config.activation_alpha)


class _LayerStack(nn.Module):
    """``self.model``'s layers in order, or, once :meth:`compile_around_lstm` has run, the
    compiled runs of layers between LSTMs and the LSTMs themselves."""

    model: nn.Sequential

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, T]`` -> ``[B, C', T']`` (see the subclass)."""
        runs = self.__dict__.get("compiled_runs")
        if runs is None:
            return self.model(x)
        for run in runs:
            x = run(x)
        return x

    def compile_around_lstm(self, **options: object) -> None:
        """Compiles the layers before, between and after LSTMs with ``torch.compile``.

        Dynamo does not trace ``nn.LSTM`` (``torch._dynamo.config.allow_rnn`` is off): a
        whole encoder compiled at once broke its graph inside the LSTM, gave up on the
        encoder ("falling back to eager") and compiled every convolution and residual block
        on its own, recompiling the shared ``forward`` once per channel count until its
        cache limit, after which the rest ran uncompiled. Letting Dynamo trace the LSTM
        instead unrolls it over time (measured: 131 s of inductor compilation for the tests'
        tiny codec's encoder on a busy 2-core CPU, then 74 s again for a new length). So
        each run of convolutions is one graph, and the LSTM runs as it is. The runs are kept
        outside the module tree (not submodules), so parameter names stay the checkpoint's.
        """
        runs: list[nn.Module] = []
        pending: list[nn.Module] = []
        for layer in self.model:
            if isinstance(layer, SLSTM):
                if pending:
                    runs.append(torch.compile(nn.Sequential(*pending), **options))
                    pending = []
                runs.append(layer)
            else:
                pending.append(layer)
        if pending:
            runs.append(torch.compile(nn.Sequential(*pending), **options))
        self.__dict__["compiled_runs"] = runs


class SEANetResnetBlock(nn.Module):
    """Residual block: ``ELU, conv k, ELU, conv 1`` plus a skip connection (ELU or Snake).

    Args:
        dim: Channels in and out.
        kernel_size: Kernel of the first convolution (the second has kernel 1).
        dilation: Dilation of the first convolution.
        config: The codec config (norm, causality, padding, compression, skip type).
        norm: The norm of this block (audiocraft can disable it in outer blocks).
    """

    def __init__(
        self, dim: int, kernel_size: int, dilation: int, config: CodecConfig, norm: str
    ) -> None:
        super().__init__()
        hidden = dim // config.compress
        conv_args = dict(causal=config.causal, norm=norm, pad_mode=config.pad_mode)
        self.block = nn.Sequential(
            activation(config, dim),
            SConv1d(dim, hidden, kernel_size, dilation=dilation, **conv_args),
            activation(config, hidden),
            SConv1d(hidden, dim, 1, **conv_args),
        )
        self.shortcut: nn.Module = (
            nn.Identity() if config.true_skip else SConv1d(dim, dim, 1, **conv_args)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``[B, dim, T]`` -> ``[B, dim, T]``."""
        return self.shortcut(x) + self.block(x)


def _outer_norm(config: CodecConfig, block: int) -> str:
    """The norm of block ``block`` counted from the audio side (0 is the audio-facing conv).

    audiocraft's ``disable_norm_outer_blocks=n`` turns the norm off in the ``n`` blocks
    nearest the audio; there are ``len(ratios) + 2`` blocks in all.
    """
    return "none" if config.disable_norm_outer_blocks > block else config.norm


def _residual_blocks(config: CodecConfig, dim: int, norm: str) -> list[nn.Module]:
    return [
        SEANetResnetBlock(dim, config.residual_kernel_size, config.dilation_base**j, config, norm)
        for j in range(config.n_residual_layers)
    ]


class SEANetEncoder(_LayerStack):
    """SEANet encoder: audio ``[B, C, T]`` -> latent ``[B, dimension, ceil(T / hop)]``.

    Args:
        config: The codec config.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.ratios = list(reversed(config.ratios))
        self.hop_length = config.hop_length
        self.dimension = config.dimension
        n_blocks = len(config.ratios) + 2
        conv_args = dict(causal=config.causal, pad_mode=config.pad_mode)
        width = config.n_filters
        layers: list[nn.Module] = [
            SConv1d(
                config.channels, width, config.kernel_size, norm=_outer_norm(config, 0), **conv_args
            )
        ]
        for i, ratio in enumerate(self.ratios):
            norm = _outer_norm(config, i + 1)
            layers += _residual_blocks(config, width, norm)
            layers += [
                activation(config, width),
                SConv1d(width, 2 * width, 2 * ratio, stride=ratio, norm=norm, **conv_args),
            ]
            width *= 2
        if config.lstm:
            layers.append(SLSTM(width, config.lstm))
        layers += [
            activation(config, width),
            SConv1d(
                width,
                config.dimension,
                config.last_kernel_size,
                norm=_outer_norm(config, n_blocks - 1),
                **conv_args,
            ),
        ]
        self.model = nn.Sequential(*layers)


class SEANetDecoder(_LayerStack):
    """SEANet decoder: latent ``[B, dimension, F]`` -> audio ``[B, C, F * hop]``.

    Args:
        config: The codec config.
    """

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.ratios = list(config.ratios)
        self.hop_length = config.hop_length
        self.dimension = config.dimension
        n_blocks = len(config.ratios) + 2
        conv_args = dict(causal=config.causal, pad_mode=config.pad_mode)
        width = config.n_filters * 2 ** len(config.ratios)
        layers: list[nn.Module] = [
            SConv1d(
                config.dimension,
                width,
                config.kernel_size,
                norm=_outer_norm(config, n_blocks - 1),
                **conv_args,
            )
        ]
        if config.lstm:
            layers.append(SLSTM(width, config.lstm))
        for i, ratio in enumerate(self.ratios):
            # Decoder stage i mirrors encoder stage len(ratios) - 1 - i.
            norm = _outer_norm(config, len(self.ratios) - i)
            layers += [
                activation(config, width),
                SConvTranspose1d(
                    width,
                    width // 2,
                    2 * ratio,
                    stride=ratio,
                    causal=config.causal,
                    norm=norm,
                    trim_right_ratio=config.trim_right_ratio,
                ),
            ]
            layers += _residual_blocks(config, width // 2, norm)
            width //= 2
        layers += [
            activation(config, config.n_filters),
            SConv1d(
                config.n_filters,
                config.channels,
                config.last_kernel_size,
                norm=_outer_norm(config, 0),
                **conv_args,
            ),
        ]
        if config.final_activation is not None:
            layers.append(getattr(nn, config.final_activation)())
        self.model = nn.Sequential(*layers)
