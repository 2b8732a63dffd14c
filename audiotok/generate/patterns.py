"""Codebook interleaving patterns: how a language model sees ``K`` codebooks as one sequence.

A codec gives codes ``[B, K, T]``: ``K`` codebooks at each of ``T`` timesteps. The LM predicts
one *sequence step* at a time, one token per codebook; a pattern's layout says, for each step,
which ``(timestep t, codebook q)`` the tokens of that step are. The layout's first step is
empty (unless ``empty_initial < 0``), so a built sequence starts with a column of special
tokens for the model to start from. Unfilled places hold the special token too. This is
audiocraft 1.3.0's ``modules/codebooks_patterns.py``, giving the same layouts bit for bit.

The delay pattern of MusicGen and AudioGen (``delays=[0, 1, 2, 3]``) for ``K = 4``, ``T = 3``
(a number is the timestep of the code placed there, ``S`` the special token)::

    codes [B, 4, 3]      sequence [B, 4, S = T + max_delay + 1 = 7]
    [[0, 1, 2],          [[S, 0, 1, 2, S, S, S],
     [0, 1, 2],           [S, S, 0, 1, 2, S, S],
     [0, 1, 2],           [S, S, S, 0, 1, 2, S],
     [0, 1, 2]]           [S, S, S, S, 0, 1, 2]]

Code ``(t, q)`` sits at step ``1 + t + delays[q]``. Stereo MusicGen codes left and right
separately and interleaves codebooks as ``L0, R0, L1, R1, ...`` (:func:`interleave_stereo_codes`),
with ``delays=[0, 0, 1, 1, 2, 2, 3, 3]``: each left/right pair moves together.

Relation to transformers' ``MusicgenForCausalLM.build_delay_pattern_mask(input_ids, pad, L)``:
its ``input_ids`` start with one BOS column (its BOS and pad are both the special token,
``card``), so with ``input_ids = [BOS, codes]`` and ``L = T + max_delay + 1`` its second
output is exactly :meth:`Pattern.build_sequence` of ``codes`` with ``special_token = pad``:
the BOS column is our empty first step. (It returns its input unchanged when
``L < 2 * K' - 1``, ``K'`` the codebooks per channel.)
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from ..errors import CheckpointError, TokensError


class LayoutCoord(NamedTuple):
    """Where one code comes from: timestep ``t`` of codebook ``q``."""

    t: int
    q: int


PatternLayout = list[list[LayoutCoord]]
"""For each sequence step, the codes placed there (at most one per codebook)."""


@dataclass
class Pattern:
    """The layout of ``n_q`` codebooks over ``timesteps`` timesteps, and how to apply it.

    Attributes:
        layout: One list of coordinates per sequence step; ``layout[0]`` is empty (the
            special-token start step) for every pattern audiocraft's LMs use.
        timesteps: Number of timesteps ``T`` of the codes the pattern was made for.
        n_q: Number of codebooks ``K``.
    """

    layout: PatternLayout
    timesteps: int
    n_q: int
    _indexes: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not self.layout:
            raise ValueError("a pattern layout needs at least one step")
        last_t = dict.fromkeys(range(self.n_q), 0)
        for s, coords in enumerate(self.layout):
            qs = {c.q for c in coords}
            if len(qs) != len(coords):
                raise ValueError(f"step {s} of the layout has two codes of one codebook")
            for c in coords:
                if c.t < last_t[c.q]:
                    raise ValueError(f"step {s} goes back in time for codebook {c.q}")
                last_t[c.q] = c.t

    @property
    def num_sequence_steps(self) -> int:
        """Steps after the initial one: ``len(layout) - 1``."""
        return len(self.layout) - 1

    @property
    def max_delay(self) -> int:
        """How many timesteps past ``timesteps`` the layout reaches (3 for MusicGen)."""
        max_t = max((c.t + 1 for coords in self.layout[1:] for c in coords), default=0)
        return max_t - self.timesteps

    @property
    def valid_layout(self) -> PatternLayout:
        """The layout without its last ``max_delay`` steps."""
        return self.layout[: len(self.layout) - self.max_delay]

    def starts_with_special_token(self) -> bool:
        """Whether the first step is empty (always, but with ``empty_initial < 0``)."""
        return self.layout[0] == []

    def get_steps_with_timestep(self, t: int, q: int | None = None) -> list[int]:
        """The sequence steps holding timestep ``t`` (of codebook ``q`` only, if given), in order.

        For the delay pattern they are ``[1 + t + d for d in delays]``.
        """
        if not 0 <= t <= self.timesteps:
            raise ValueError(f"timestep {t} is outside the pattern's 0..{self.timesteps}")
        return [
            s
            for s, coords in enumerate(self.layout)
            for c in coords
            if c.t == t and q in (None, c.q)
        ]

    def get_first_step_with_timesteps(self, t: int, q: int | None = None) -> int | None:
        """The first sequence step that holds timestep ``t``, or None if none does.

        A generation loop whose codes ``[:, :, :t]`` are known (the prompt) starts sampling at
        this step, feeding the model the steps before it.
        """
        steps = self.get_steps_with_timestep(t, q)
        return steps[0] if steps else None

    def get_last_step_with_timesteps(self, t: int) -> int | None:
        """The step that places the last codebook of timestep ``t``, or None if none does.

        Once the sequence is known up to and including this step, all ``K`` codes of ``t`` are.
        """
        steps = self.get_steps_with_timestep(t)
        return steps[-1] if steps else None

    def build_sequence(
        self, codes: torch.Tensor, special_token: int, keep_only_valid_steps: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Lays out codes along the pattern (audiocraft's ``build_pattern_sequence``).

        Args:
            codes: ``[B, K, T]`` with ``T <= timesteps``.
            special_token: Value of every place that holds no code (the LM's ``card``).
            keep_only_valid_steps: Keep only the steps of :attr:`valid_layout`.

        Returns:
            ``(sequence, mask)``: ``sequence`` ``[B, K, S]`` with ``S = len(layout)`` (or the
            valid layout's length), ``mask`` bool ``[K, S]``, True where a code was placed.
        """
        batch, n_q, timesteps = codes.shape
        self._check_codebooks(n_q)
        if timesteps > self.timesteps:
            raise TokensError(f"{timesteps} timesteps don't fit a pattern of {self.timesteps}")
        indexes, mask = self._sequence_indexes(timesteps, keep_only_valid_steps, codes.device)
        values = _gather_or_special(codes.reshape(batch, n_q * timesteps), indexes, special_token)
        return values.view(batch, n_q, -1), mask

    def revert_sequence(
        self, sequence: torch.Tensor, special_token: int, keep_only_valid_steps: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Undoes :meth:`build_sequence` (audiocraft's ``revert_pattern_sequence``).

        Args:
            sequence: ``[B, K, S]`` with ``S <= len(layout)``; step ``s`` is layout step ``s``.
            special_token: Value for the codes the sequence does not reach.
            keep_only_valid_steps: Read only the steps of :attr:`valid_layout`.

        Returns:
            ``(codes, mask)``: ``codes`` ``[B, K, timesteps]`` and bool ``mask``
            ``[K, timesteps]``, True where the code was found in the sequence.
        """
        batch, n_q, steps = sequence.shape
        indexes, mask = self._revert_indexes(
            steps, n_q, keep_only_valid_steps, False, sequence.device
        )
        values = _gather_or_special(sequence.reshape(batch, n_q * steps), indexes, special_token)
        return values.view(batch, n_q, -1), mask

    def revert_logits(
        self,
        logits: torch.Tensor,
        special_token: float = float("nan"),
        keep_only_valid_steps: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps LM logits back to the codes they predict (audiocraft's ``revert_pattern_logits``).

        The logits at sequence step ``s`` predict the tokens of layout step ``s + 1``, so the
        first (empty) layout step is skipped. audiocraft takes ``[B, card, K, S]``; this takes
        the LM's ``[B, K, S, card]`` and gathers the same entries.

        Args:
            logits: ``[B, K, S, card]``.
            special_token: Value for every code no logit predicts (NaN makes misuse visible).
            keep_only_valid_steps: Read only the steps of :attr:`valid_layout`.

        Returns:
            ``(logits, mask)``: ``[B, K, timesteps, card]`` and bool ``mask`` ``[K, timesteps]``.
        """
        batch, n_q, steps, card = logits.shape
        indexes, mask = self._revert_indexes(steps, n_q, keep_only_valid_steps, True, logits.device)
        flat = logits.reshape(batch, n_q * steps, card)
        flat = torch.cat([flat, torch.zeros_like(flat[:, :1]) + special_token], dim=1)
        return flat[:, indexes.view(-1)].view(batch, n_q, -1, card), mask

    def _check_codebooks(self, n_q: int) -> None:
        if n_q != self.n_q:
            raise TokensError(f"codes have {n_q} codebooks but the pattern has {self.n_q}")

    def _sequence_indexes(
        self, timesteps: int, keep_only_valid_steps: bool, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[K, S]`` indexes into the flattened ``[K * T]`` codes (``K * T``: special), mask."""
        key = ("build", timesteps, keep_only_valid_steps, str(device))
        if key not in self._indexes:
            layout = self.valid_layout if keep_only_valid_steps else self.layout
            indexes = np.full((self.n_q, len(layout)), self.n_q * timesteps, dtype=np.int64)
            mask = np.zeros((self.n_q, len(layout)), dtype=bool)
            for s, coords in enumerate(layout):
                for c in coords:
                    if c.t < timesteps:
                        indexes[c.q, s] = c.t + c.q * timesteps
                        mask[c.q, s] = True
            self._indexes[key] = _to_tensors(indexes, mask, device)
        return self._indexes[key]

    def _revert_indexes(
        self,
        steps: int,
        n_q: int,
        keep_only_valid_steps: bool,
        is_model_output: bool,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[K, T]`` indexes into the flattened ``[K * S]`` sequence (``K * S``: special), mask."""
        self._check_codebooks(n_q)
        layout = self.valid_layout if keep_only_valid_steps else self.layout
        if steps > len(layout):
            raise TokensError(
                f"a sequence of {steps} steps is longer than the pattern's {len(layout)}"
            )
        key = ("revert", steps, keep_only_valid_steps, is_model_output, str(device))
        if key not in self._indexes:
            if is_model_output and self.starts_with_special_token():
                layout = layout[1:]
            indexes = np.full((self.n_q, self.timesteps), self.n_q * steps, dtype=np.int64)
            mask = np.zeros((self.n_q, self.timesteps), dtype=bool)
            for s, coords in enumerate(layout[:steps]):
                for c in coords:
                    if c.t < self.timesteps:
                        indexes[c.q, c.t] = s + c.q * steps
                        mask[c.q, c.t] = True
            self._indexes[key] = _to_tensors(indexes, mask, device)
        return self._indexes[key]


def _to_tensors(
    indexes: np.ndarray, mask: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(indexes).to(device), torch.from_numpy(mask).to(device)


def _gather_or_special(flat: torch.Tensor, indexes: torch.Tensor, special: float) -> torch.Tensor:
    """``flat`` ``[B, N]`` read at ``indexes`` ``[K, M]`` (``N``: ``special``): ``[B, K*M]``."""
    flat = torch.cat([flat, torch.zeros_like(flat[:, :1]) + special], dim=1)
    return flat[:, indexes.view(-1)]


class CodebooksPatternProvider(abc.ABC):
    """Makes the :class:`Pattern` of ``n_q`` codebooks for any number of timesteps (cached)."""

    _CACHE_SIZE = 100

    def __init__(self, n_q: int) -> None:
        if n_q <= 0:
            raise ValueError(f"need at least one codebook, got {n_q}")
        self.n_q = n_q
        self._patterns: dict[int, Pattern] = {}

    def get_pattern(self, timesteps: int) -> Pattern:
        """The pattern for codes ``[B, n_q, timesteps]``."""
        if timesteps not in self._patterns:
            if len(self._patterns) >= self._CACHE_SIZE:
                del self._patterns[next(iter(self._patterns))]
            self._patterns[timesteps] = self._make_pattern(timesteps)
        return self._patterns[timesteps]

    @abc.abstractmethod
    def _make_pattern(self, timesteps: int) -> Pattern:
        """Builds the layout for ``timesteps`` timesteps."""


class DelayedPatternProvider(CodebooksPatternProvider):
    """Codebook ``q`` delayed by ``delays[q]`` steps (MusicGen, AudioGen); see the module doc.

    Args:
        n_q: Number of codebooks.
        delays: Non-decreasing delay of each codebook; default ``range(n_q)``.
        flatten_first: Lay the first ``flatten_first`` timesteps one code per step. With ``K = 2``,
            ``T = 3``, ``delays=[0, 1]``, ``flatten_first=1``::

                [[S, 0, S, 1, 2, S],
                 [S, S, 0, S, 1, 2]]

        empty_initial: Prepend that many extra empty steps; a negative value drops the initial
            empty step instead (the sequence then starts with codes).
    """

    def __init__(
        self,
        n_q: int,
        delays: Sequence[int] | None = None,
        flatten_first: int = 0,
        empty_initial: int = 0,
    ) -> None:
        super().__init__(n_q)
        self.delays = list(range(n_q)) if delays is None else list(delays)
        if len(self.delays) != n_q or sorted(self.delays) != self.delays:
            raise ValueError(f"need {n_q} non-decreasing delays, got {self.delays}")
        self.flatten_first = flatten_first
        self.empty_initial = empty_initial

    def _make_pattern(self, timesteps: int) -> Pattern:
        out: PatternLayout = [] if self.empty_initial < 0 else [[]]
        out += [[] for _ in range(max(self.empty_initial, 0))]
        for t in range(min(timesteps, self.flatten_first)):
            out += [[LayoutCoord(t, q)] for q in range(self.n_q)]
        for t in range(self.flatten_first, timesteps + max(self.delays)):
            out.append(
                [
                    LayoutCoord(t - delay, q)
                    for q, delay in enumerate(self.delays)
                    if t - delay >= self.flatten_first
                ]
            )
        return Pattern(out, timesteps=timesteps, n_q=self.n_q)


class ParallelPatternProvider(DelayedPatternProvider):
    """All codebooks of a timestep in the same step: the delay pattern with no delay.

    With ``K = 2``, ``T = 3``::

        [[S, 0, 1, 2],
         [S, 0, 1, 2]]
    """

    def __init__(self, n_q: int, empty_initial: int = 0) -> None:
        super().__init__(n_q, [0] * n_q, empty_initial=empty_initial)


PATTERN_PROVIDERS: dict[str, type[CodebooksPatternProvider]] = {
    "delay": DelayedPatternProvider,
    "parallel": ParallelPatternProvider,
}


def get_codebooks_pattern_provider(n_q: int, cfg: Mapping[str, Any]) -> CodebooksPatternProvider:
    """The provider an audiocraft config's ``codebooks_pattern`` section describes.

    Args:
        n_q: Number of codebooks of the LM.
        cfg: E.g. ``{"modeling": "delay", "delay": {"delays": [0, 1, 2, 3], ...}, ...}``.

    Raises:
        CheckpointError: If the config names a pattern this module does not implement.
    """
    name = cfg.get("modeling")
    if name not in PATTERN_PROVIDERS:
        raise CheckpointError(
            f"unsupported codebooks pattern {name!r} (supported: {', '.join(PATTERN_PROVIDERS)})"
        )
    return PATTERN_PROVIDERS[name](n_q, **dict(cfg.get(name) or {}))


def interleave_stereo_codes(
    left: torch.Tensor, right: torch.Tensor, per_timestep: bool = False
) -> torch.Tensor:
    """Interleaves the codes of two channels as audiocraft's ``InterleaveStereoCompressionModel``.

    Args:
        left: ``[B, K, T]`` codes of the left channel.
        right: ``[B, K, T]`` codes of the right channel.
        per_timestep: Interleave timesteps (``[B, K, 2T]``: ``t0L, t0R, t1L, ...``) instead of
            codebooks (``[B, 2K, T]``: ``L0, R0, L1, R1, ...``, what stereo MusicGen uses).

    Returns:
        ``[B, 2K, T]``, or ``[B, K, 2T]`` with ``per_timestep``.
    """
    if left.shape != right.shape:
        raise TokensError(f"left and right codes differ in shape: {left.shape} vs {right.shape}")
    batch, n_q, timesteps = left.shape
    if per_timestep:
        return torch.stack([left, right], dim=-1).reshape(batch, n_q, 2 * timesteps)
    return torch.stack([left, right], dim=2).reshape(batch, 2 * n_q, timesteps)


def split_stereo_codes(
    codes: torch.Tensor, per_timestep: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits ``[B, 2K, T]`` (or ``[B, K, 2T]``) into left and right ``[B, K, T]``.

    The inverse of :func:`interleave_stereo_codes` (audiocraft's ``get_left_right_codes``).
    """
    batch, n_q, timesteps = codes.shape
    if per_timestep:
        if timesteps % 2:
            raise TokensError(f"per-timestep stereo codes need an even length, got {timesteps}")
        pairs = codes.reshape(batch, n_q, timesteps // 2, 2)
        return pairs[..., 0], pairs[..., 1]
    if n_q % 2:
        raise TokensError(f"stereo codes need an even number of codebooks, got {n_q}")
    pairs = codes.reshape(batch, n_q // 2, 2, timesteps)
    return pairs[:, :, 0], pairs[:, :, 1]
