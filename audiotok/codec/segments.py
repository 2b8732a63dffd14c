"""Segments of the 48 kHz model: where each lies, and joining decoded ones by overlap-add.

The segmented model (``segment_length`` 1 s, ``segment_stride`` 0.99 s) codes each segment on
its own; the codes of all segments are laid end to end along the frame axis, so the layout
follows from the signal's length alone (:func:`split_segments`), and decoded segments are
joined with triangular weights (:func:`linear_overlap_add`). Both backends use these: the
torch model on tensors, the ONNX Runtime backend on numpy arrays, so nothing here needs torch
unless it is given tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..audio.read import is_tensor


@dataclass(frozen=True)
class Segment:
    """Where one segment lies in the signal and in the codes."""

    start: int
    length: int
    first_frame: int
    frames: int


def split_segments(
    length: int, hop: int, segment_length: int | None, segment_stride: int | None
) -> list[Segment]:
    """The segments of a signal of ``length`` samples: every ``segment_stride`` samples one of
    ``segment_length`` (the last one shorter), or the whole signal when unsegmented.

    >>> [(s.start, s.length, s.first_frame, s.frames) for s in split_segments(5, 2, 4, 3)]
    [(0, 4, 0, 2), (3, 2, 2, 1)]
    """
    if segment_length is None or segment_stride is None:
        return [Segment(0, length, 0, math.ceil(length / hop))]
    out: list[Segment] = []
    frame = 0
    for start in range(0, length, segment_stride):
        n = min(segment_length, length - start)
        out.append(Segment(start, n, frame, math.ceil(n / hop)))
        frame += out[-1].frames
    return out


def linear_overlap_add(frames: list[Any], stride: int) -> Any:
    """Joins overlapping decoded segments with triangular weights.

    Each segment is weighted by a triangle peaking at its middle; the weighted sum is divided
    by the summed weights, so where two segments overlap the output fades linearly from one
    to the other, and where one segment is alone it passes unchanged.

    Args:
        frames: Segments ``[..., L_i]`` (torch tensors or numpy arrays) starting every
            ``stride`` samples; all but the last have the length of the first.
        stride: Distance between segment starts.

    Returns:
        ``[..., T]`` of the segments' kind, ``T`` the end of the segment that ends last
        (float32 at least).

    >>> a, b = np.ones((1, 4), np.float32), np.full((1, 4), 3, np.float32)
    >>> linear_overlap_add([a, b], stride=2).round(2)
    array([[1.  , 1.  , 1.67, 2.33, 3.  , 3.  ]], dtype=float32)
    """
    first = frames[0]
    # The reference's `stride * (n - 1) + len(last)` is shorter than the second-to-last
    # segment's end when the last is a single frame (48 kHz: 47 800 samples); it then fails.
    total = max(i * stride + f.shape[-1] for i, f in enumerate(frames))
    # Weights in float32 at least: in bfloat16 the triangle's ends round to 0 (then 0 / 0).
    if is_tensor(first):
        import torch

        dtype = torch.promote_types(first.dtype, torch.float32)
        t = torch.linspace(0, 1, first.shape[-1] + 2, device=first.device, dtype=dtype)[1:-1]
        out = torch.zeros(*first.shape[:-1], total, device=first.device, dtype=dtype)
        sum_weight = torch.zeros(total, device=first.device, dtype=dtype)
    else:
        dtype = np.promote_types(first.dtype, np.float32)
        t = np.linspace(0, 1, first.shape[-1] + 2, dtype=dtype)[1:-1]
        out = np.zeros((*first.shape[:-1], total), dtype)
        sum_weight = np.zeros(total, dtype)
    weight = 0.5 - abs(t - 0.5)
    for i, frame in enumerate(frames):
        n = frame.shape[-1]
        start = i * stride
        out[..., start : start + n] += weight[:n] * frame
        sum_weight[start : start + n] += weight[:n]
    return out / sum_weight
