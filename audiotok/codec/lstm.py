"""The LSTM at SEANet's bottleneck, on convolutional ``[B, C, T]`` layout."""

from __future__ import annotations

import torch
from torch import nn


class SLSTM(nn.Module):
    """A stack of LSTM layers with a residual connection, applied over time.

    The hidden state starts at zero for every call, as in the reference.

    Args:
        dimension: Channels, both in and out.
        num_layers: Stacked LSTM layers.
        skip: Add the input to the output.
    """

    def __init__(self, dimension: int, num_layers: int = 2, skip: bool = True) -> None:
        super().__init__()
        self.skip = skip
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, C, T]``."""
        x = x.permute(2, 0, 1)
        y, _ = self.lstm(x)
        if self.skip:
            y = y + x
        return y.permute(1, 2, 0)
