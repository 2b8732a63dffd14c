"""Choosing the next tokens from LM logits, as audiocraft's ``LMModel._sample_next_token``.

The same operations in the same order as audiocraft 1.3.0 (``models/lm.py`` and
``utils/utils.py``), so that with the same random state the same tokens come out:

1. classifier-free guidance on the *logits* (before any softmax):
   ``uncond + (cond - uncond) * cfg_coef`` (:func:`classifier_free_guidance`);
2. greedy ``argmax(logits)`` unless sampling with ``temp > 0``; otherwise
   ``probs = softmax(logits / temp)``, then top-p if ``top_p > 0``, else top-k if ``top_k > 0``,
   else the full distribution, drawn with ``torch.multinomial``.

Every draw takes an optional ``torch.Generator`` (on the logits' device). Without one, the
draws come from torch's global RNG exactly as audiocraft's do, so ``torch.manual_seed(s)``
reproduces audiocraft's samples on the same device.

Example (greedy on hand-made logits, ``[B=1, K=2, card=3]``)::

    >>> logits = torch.tensor([[[0.1, 2.0, -1.0], [3.0, 0.0, 1.0]]])
    >>> sample_next_token(logits, use_sampling=False)
    tensor([[[1],
             [0]]])
"""

from __future__ import annotations

import torch


def classifier_free_guidance(
    cond_logits: torch.Tensor, uncond_logits: torch.Tensor, cfg_coef: float
) -> torch.Tensor:
    """Guided logits ``uncond + (cond - uncond) * cfg_coef`` (any shape, e.g. ``[B, K, S, card]``).

    ``cfg_coef = 1`` gives the conditional logits; MusicGen's default is 3. audiocraft's
    two-step CFG uses the model's configured ``cfg_coef`` rather than the one passed to
    ``generate``; a caller wanting that quirk passes the configured value here.
    """
    return uncond_logits + (cond_logits - uncond_logits) * cfg_coef


def split_classifier_free_guidance(all_logits: torch.Tensor, cfg_coef: float) -> torch.Tensor:
    """Guided logits ``[B, ...]`` from one forward pass over a doubled batch ``[2B, ...]``.

    The first half of the batch is the conditional one, the second the null-conditioned
    one, as audiocraft builds it (``conditions + null_conditions``) and as transformers'
    ``ClassifierFreeGuidanceLogitsProcessor`` reads it.
    """
    if all_logits.shape[0] % 2:
        raise ValueError(f"CFG needs a doubled batch, got batch size {all_logits.shape[0]}")
    cond_logits, uncond_logits = all_logits.split(all_logits.shape[0] // 2, dim=0)
    return classifier_free_guidance(cond_logits, uncond_logits, cfg_coef)


def multinomial(
    probs: torch.Tensor,
    num_samples: int,
    replacement: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``torch.multinomial`` over the last dimension of a tensor of any rank.

    Args:
        probs: ``[..., card]`` non-negative weights (need not sum to 1).
        num_samples: Draws per distribution.
        replacement: Draw with replacement.
        generator: Random state; torch's global one if None.

    Returns:
        ``[..., num_samples]`` int64 indices.
    """
    flat = probs.reshape(-1, probs.shape[-1])
    out = torch.multinomial(
        flat, num_samples=num_samples, replacement=replacement, generator=generator
    )
    return out.reshape(*probs.shape[:-1], -1)


def top_k_filter(probs: torch.Tensor, k: int) -> torch.Tensor:
    """The distribution :func:`sample_top_k` draws from: the ``k`` most probable tokens.

    Tokens tied with the ``k``-th are kept too; the rest get 0 and the kept ones are
    renormalised.

    Args:
        probs: ``[..., card]`` probabilities; not modified (audiocraft edits them in place).
        k: How many tokens to keep; ``k >= card`` keeps all (audiocraft raises when
            ``k > card``).

    Returns:
        ``[..., card]`` probabilities.
    """
    top_k_value, _ = torch.topk(probs, min(k, probs.shape[-1]), dim=-1)
    min_value_top_k = top_k_value[..., [-1]]
    probs = probs * (probs >= min_value_top_k).float()
    return probs / probs.sum(dim=-1, keepdim=True)


def sample_top_k(
    probs: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draws one token among the ``k`` most probable (see :func:`top_k_filter`).

    Args:
        probs: ``[..., card]`` probabilities.
        k: How many tokens to keep.
        generator: Random state; torch's global one if None.

    Returns:
        ``[..., 1]`` int64 token indices.
    """
    return multinomial(top_k_filter(probs, k), num_samples=1, generator=generator)


def top_p_filter(probs: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The distribution :func:`sample_top_p` draws from, in decreasing order of probability.

    A token is dropped when the mass of the more probable tokens exceeds ``p``
    (``cumsum - prob > p``), so the most probable token is always kept. With
    ``probs = [0.5, 0.3, 0.2]`` and ``p = 0.6`` the tokens before each hold ``[0, 0.5, 0.8]``:
    the first two are kept and renormalised to ``[0.625, 0.375, 0]``.

    Args:
        probs: ``[..., card]`` probabilities; not modified.
        p: Probability mass to keep, in ``(0, 1]``.

    Returns:
        ``(probs_sort, probs_idx)``, both ``[..., card]``: the kept, renormalised
        probabilities sorted in decreasing order, and the token of each.
    """
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)
    probs_sum = torch.cumsum(probs_sort, dim=-1)
    mask = probs_sum - probs_sort > p
    probs_sort = probs_sort * (~mask).float()
    return probs_sort / probs_sort.sum(dim=-1, keepdim=True), probs_idx


def sample_top_p(
    probs: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draws one token from the nucleus of mass ``p`` (see :func:`top_p_filter`).

    The draw is made over the *sorted* distribution, then mapped back to token ids, as
    audiocraft does: for a given random state this picks the same token as audiocraft.

    Args:
        probs: ``[..., card]`` probabilities.
        p: Probability mass to keep, in ``(0, 1]``.
        generator: Random state; torch's global one if None.

    Returns:
        ``[..., 1]`` int64 token indices.
    """
    probs_sort, probs_idx = top_p_filter(probs, p)
    next_token = multinomial(probs_sort, num_samples=1, generator=generator)
    return torch.gather(probs_idx, -1, next_token)


def sample_next_token(
    logits: torch.Tensor,
    *,
    use_sampling: bool = False,
    temp: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The next token of every codebook, from the (already guided) logits of the last step.

    The defaults are those of audiocraft's ``_sample_next_token`` (greedy); MusicGen's
    ``generate`` uses ``use_sampling=True, temp=1.0, top_k=250, top_p=0.0``.

    Args:
        logits: ``[B, K, card]``: the LM's ``[B, K, S, card]`` output at its last step.
        use_sampling: Sample; if False (or ``temp <= 0``) take the argmax.
        temp: Softmax temperature.
        top_k: Keep the ``top_k`` most probable tokens (0: all). Ignored if ``top_p > 0``.
        top_p: Nucleus mass (0: off); takes precedence over ``top_k``.
        generator: Random state; torch's global one if None.

    Returns:
        ``[B, K, 1]`` int64 tokens.
    """
    if not (use_sampling and temp > 0.0):
        return torch.argmax(logits, dim=-1, keepdim=True)
    if temp < 1e-3:  # logits / temp could overflow: the same softmax, shifted to <= 0 first
        logits = logits - logits.amax(dim=-1, keepdim=True)
    probs = torch.softmax(logits / temp, dim=-1)
    if top_p > 0.0:
        return sample_top_p(probs, p=top_p, generator=generator)
    if top_k > 0:
        return sample_top_k(probs, k=top_k, generator=generator)
    return multinomial(probs, num_samples=1, generator=generator)
