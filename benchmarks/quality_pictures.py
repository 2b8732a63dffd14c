"""Log-mel pictures for benchmarks/quality.py: the input, the codec and Opus, one PNG per category.

Each picture stacks three log10 mel spectrograms (FFT 1024, hop 256, 80 bands, the scale of
the mel-distance metric) of the first validation crop of a category: the input, the audiotok
codec at ``kbps`` and Opus at the same bitrate, on one colour scale, so what a codec drops
(high bands, transients, harmonics) shows as missing or smeared energy. Needs matplotlib
(``pip install matplotlib``), imported only when pictures are asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def log_mel(x: np.ndarray, rate: int) -> np.ndarray:
    """log10 mel power ``[80, frames]`` of a mono signal ``[T]`` (floor 1e-5)."""
    import torch

    from audiotok.train.losses import mel_spectrogram

    mel = mel_spectrogram(torch.from_numpy(x)[None, None], rate, 1024, 80)[0, 0]
    return mel.clamp(min=1e-5).log10().numpy()


def write_pictures(
    codec: Any,
    crops: np.ndarray,
    categories: list[str],
    out_dir: Path,
    kbps: float,
    roundtrips: dict[str, Callable[[np.ndarray], np.ndarray]],
) -> list[Path]:
    """One PNG per category (``{category}.png``) in ``out_dir``; returns their paths.

    Args:
        codec: The audiotok codec (for its rate and name).
        crops: Validation crops ``[N, T]``.
        categories: The category of each crop.
        out_dir: Where the pictures go (created).
        kbps: Bitrate of both codecs in the pictures.
        roundtrips: Panel title -> function decoding a crop through that codec, in order.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    rate, paths = codec.sample_rate, []
    for category in sorted(set(categories)):
        x = crops[categories.index(category)]
        panels = {"input": x} | {name: fn(x)[: len(x)] for name, fn in roundtrips.items()}
        mels = {name: log_mel(audio, rate) for name, audio in panels.items()}
        low = min(m.min() for m in mels.values())
        high = max(m.max() for m in mels.values())
        fig, axes = plt.subplots(len(mels), 1, figsize=(8, 2.2 * len(mels)), sharex=True)
        seconds = len(x) / rate
        for ax, (name, mel) in zip(axes, mels.items(), strict=True):
            image = ax.imshow(mel, origin="lower", aspect="auto", vmin=low, vmax=high,
                              extent=(0, seconds, 0, mel.shape[0]), cmap="magma")  # fmt: skip
            ax.set_title(f"{category}: {name}", fontsize=9, loc="left")
            ax.set_ylabel("mel band")
        axes[-1].set_xlabel("seconds")
        fig.colorbar(image, ax=list(axes), label="log10 mel power", shrink=0.8)
        path = out_dir / f"{category}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths
