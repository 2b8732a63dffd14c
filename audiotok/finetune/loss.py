"""audiocraft's training objective for MusicGen / AudioGen, on our LM.

audiocraft's ``MusicGenSolver.run_step`` computes, for codes ``[B, K, T]``:

1. ``LMModel.compute_predictions``: the codes laid out by the codebook pattern with only the
   valid steps kept (``build_pattern_sequence(..., keep_only_valid_steps=True)``: ``T + 1``
   steps for the delay pattern, so codebook ``k``'s last ``delays[k]`` frames are never
   targets), the LM's logits on that sequence, mapped back to ``[B, K, T, card]`` with the
   mask of the frames some step predicts (``revert_pattern_logits``);
2. ``_compute_cross_entropy``: per codebook, the mean cross-entropy over the frames where
   that mask and the padding mask are both True; the loss is the mean over codebooks.

transformers' ``MusicgenForConditionalGeneration(labels=...)`` gives the same number when its
labels are the delayed sequence cut to ``T`` steps, padding as -100 (tests/test_finetune.py
checks it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..generate.conditioners import ConditionProvider, ConditionTensors
from ..generate.lm import LMModel
from ..generate.patterns import CodebooksPatternProvider


def text_conditions(
    conditioner: ConditionProvider, texts: Sequence[str | None]
) -> ConditionTensors:
    """The conditions of ``texts``: T5 frozen (no gradient), ``output_proj`` differentiable.

    A None text is the null condition (mask 0, zero embeddings), as at generation.
    """
    out = ConditionTensors({})
    for name in conditioner.text_names:
        module = conditioner.conditioners[name]
        states, mask = module.encode(texts)
        out = out.merge(module.project(states, mask))
    return out


def cfg_dropout(
    texts: Sequence[str | None], p: float, generator: torch.Generator
) -> list[str | None]:
    """audiocraft's ``ClassifierFreeGuidanceDropout`` in training: with probability ``p``,
    drawn once for the whole batch, every condition becomes the null one."""
    drop = p > 0 and torch.rand(1, generator=generator).item() < p
    return [None] * len(texts) if drop else list(texts)


def compute_predictions(
    lm: LMModel,
    patterns: CodebooksPatternProvider,
    codes: torch.Tensor,
    condition: ConditionTensors | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """audiocraft's ``LMModel.compute_predictions`` (``keep_only_valid_steps=True``).

    Args:
        lm: The LM.
        patterns: Its codebook pattern provider.
        codes: ``[B, K, T]`` int64, padding as the special token.
        condition: The batch's conditions.

    Returns:
        ``(logits, mask)``: logits ``[B, K, T, card]`` predicting each code (NaN where no step
        predicts it) and bool ``mask`` ``[K, T]``, True where one does.
    """
    pattern = patterns.get_pattern(codes.shape[-1])
    sequence, _ = pattern.build_sequence(codes, lm.special_token_id, keep_only_valid_steps=True)
    logits = lm(sequence, condition)
    return pattern.revert_logits(logits, float("nan"), keep_only_valid_steps=True)


def cross_entropy_sums(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per codebook: the summed cross-entropy ``[K]`` over masked-in frames and their count ``[K]``.

    Args:
        logits: ``[B, K, T, card]`` (computed in float32 whatever the autocast).
        targets: ``[B, K, T]`` int64.
        mask: ``[B, K, T]`` bool.
    """
    card = logits.shape[-1]
    sums, counts = [], []
    for k in range(targets.shape[1]):
        keep = mask[:, k].reshape(-1)
        flat = logits[:, k].reshape(-1, card)[keep].float()
        sums.append(F.cross_entropy(flat, targets[:, k].reshape(-1)[keep], reduction="sum"))
        counts.append(keep.sum())
    return torch.stack(sums), torch.stack(counts)


def lm_loss(
    lm: LMModel,
    patterns: CodebooksPatternProvider,
    codes: torch.Tensor,
    padding: torch.Tensor,
    condition: ConditionTensors | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """audiocraft's training loss (``_compute_cross_entropy``) on one batch.

    Args:
        lm: The LM.
        patterns: Its codebook pattern provider.
        codes: ``[B, K, T]`` int64.
        padding: ``[B, K, T]`` bool, True on real frames.
        condition: The batch's conditions (after condition dropout).

    Returns:
        ``(loss, per_codebook)``: the mean over codebooks of each codebook's mean
        cross-entropy (differentiable), and those means ``[K]`` (detached).
    """
    logits, mask = compute_predictions(lm, patterns, codes, condition)
    sums, counts = cross_entropy_sums(logits, codes, padding & mask[None])
    # A codebook with no target in the batch (crops shorter than its delay) adds nothing,
    # where audiocraft would get NaN.
    per_codebook = sums / counts.clamp(min=1)
    return per_codebook.mean(), per_codebook.detach()
