"""The Snake activation, DAC's alternative to SEANet's ELU for periodic signals.

``snake(x) = x + sin(alpha * x)**2 / alpha`` with a learned ``alpha`` per channel (Ziyin et
al., 2020, "Neural networks fail to learn periodic functions and how to fix it"); DAC
(Kumar et al., 2023) puts it in place of every activation of its SEANet-like encoder and
decoder. Element-wise, so it streams and batches as ELU does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Snake1d(nn.Module):
    """Snake on ``[B, C, T]`` with one ``alpha`` per channel (key ``alpha``, shape ``[1, C, 1]``).

    Example:
        >>> Snake1d(2)(torch.tensor([[[0.0, 1.0], [0.5, -1.0]]]))  # alpha starts at 1
        tensor([[[ 0.0000,  1.7081],
                 [ 0.7298, -0.2919]]], grad_fn=<AddBackward0>)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, T]`` -> ``[B, C, T]``; DAC's formula (its 1e-9 keeps ``alpha`` = 0 finite)."""
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)
