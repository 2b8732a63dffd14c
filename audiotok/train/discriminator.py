"""EnCodec's multi-scale STFT discriminator (MS-STFT-D).

Each scale looks at the complex STFT of the audio (real and imaginary parts as two input
channels, ``[B, 2C, frames, bins]``) through 2-d convolutions that stride along frequency
only and dilate along time, and returns a map of logits plus every intermediate feature map
(for the feature-matching loss). Scales differ by FFT size (1024, 2048, 512, 256, 128 in
EnCodec, hop a quarter of it), so together they see both transients and harmonics.

Widths follow audiocraft's ``DiscriminatorSTFT``: layer ``i`` has
``min(filters * filters_scale**i, max_filters)`` channels, and audiocraft's EnCodec recipe
keeps ``filters_scale`` at its default of 1 (32 channels throughout, about 0.5 M parameters
over five scales; doubling per layer gives 8.8 M and a step ten times slower on a CPU).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


def _same_padding(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2)


class STFTDiscriminator(nn.Module):
    """One scale of the discriminator.

    Args:
        n_fft: FFT size (window length); the hop is a quarter of it.
        channels: Audio channels.
        filters: Width of the first convolution.
        filters_scale: Growth of the width per layer (1: all layers ``filters`` wide).
        max_filters: Widest convolution.
        kernel: Kernel (time, frequency).
        dilations: Time dilations of the strided convolutions.
        negative_slope: Of the LeakyReLU activations (0.3 in audiocraft's EnCodec recipe).
    """

    def __init__(
        self,
        n_fft: int,
        channels: int = 1,
        filters: int = 32,
        filters_scale: int = 1,
        max_filters: int = 1024,
        kernel: tuple[int, int] = (3, 9),
        dilations: tuple[int, ...] = (1, 2, 4),
        negative_slope: float = 0.3,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [nn.Conv2d(2 * channels, filters, kernel, padding=_same_padding(kernel))]
        width = filters
        for i, dilation in enumerate(dilations):
            out = min(filters * filters_scale ** (i + 1), max_filters)
            convs.append(
                nn.Conv2d(
                    width,
                    out,
                    kernel,
                    stride=(1, 2),
                    dilation=(dilation, 1),
                    padding=_same_padding(kernel, (dilation, 1)),
                )
            )
            width = out
        square = (kernel[0], kernel[0])
        out = min(filters * filters_scale ** (len(dilations) + 1), max_filters)
        convs.append(nn.Conv2d(width, out, square, padding=_same_padding(square)))
        self.convs = nn.ModuleList(weight_norm(c) for c in convs)
        self.conv_post = weight_norm(nn.Conv2d(out, 1, square, padding=_same_padding(square)))
        self.activation = nn.LeakyReLU(negative_slope)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Audio ``[B, C, T]`` -> logits ``[B, 1, frames, bins']`` and the feature maps."""
        b, c, t = x.shape
        spec = torch.stft(
            x.reshape(b * c, t),
            self.n_fft,
            self.hop,
            window=self.window,
            center=False,
            normalized=True,
            return_complex=True,
        )
        spec = spec.view(b, c, *spec.shape[1:])
        # [B, 2C, bins, frames] -> [B, 2C, frames, bins]: time first, as the reference.
        z = torch.cat([spec.real, spec.imag], dim=1).transpose(2, 3)
        features = []
        for conv in self.convs:
            z = self.activation(conv(z))
            features.append(z)
        return self.conv_post(z), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """Several :class:`STFTDiscriminator` at different FFT sizes.

    Args:
        n_ffts: One scale per FFT size.
        channels: Audio channels.
        filters: Width of each scale's first convolution.
        filters_scale: Width growth per layer (see :class:`STFTDiscriminator`).
    """

    def __init__(
        self,
        n_ffts: tuple[int, ...],
        channels: int = 1,
        filters: int = 32,
        filters_scale: int = 1,
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(n, channels, filters, filters_scale) for n in n_ffts
        )

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        """Audio ``[B, C, T]`` -> per-scale logits and per-scale feature maps."""
        logits, features = [], []
        for disc in self.discriminators:
            out, feats = disc(x)
            logits.append(out)
            features.append(feats)
        return logits, features
