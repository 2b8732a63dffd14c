"""The learning-rate schedule of both trainers (``audiotok train`` and ``audiotok finetune``):
a linear warm-up, then a cosine decay to a floor.

    >>> [round(warmup_cosine(1.0, 3, 0.1, step, 8), 4) for step in range(8)]
    [0.3333, 0.6667, 1.0, 0.9141, 0.6891, 0.4109, 0.1859, 0.1]
"""

from __future__ import annotations

import math


def warmup_cosine(
    lr: float, warmup_steps: int, min_lr_ratio: float, step: int, steps: int
) -> float:
    """The rate of step ``step`` (0-based) of ``steps``: a linear warm-up whose last step is at
    the peak ``lr``, then a cosine from there whose last step (``steps - 1``) is at
    ``lr * min_lr_ratio``. The peak is used once and the floor is reached; steps past the
    last stay at the floor. Without warm-up the first step is at the peak, and a run of one
    step is at the peak.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    peak = max(warmup_steps - 1, 0)  # the step at the peak, where the cosine starts
    progress = min(1.0, (step - peak) / max(1, steps - 1 - peak))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * cosine)
