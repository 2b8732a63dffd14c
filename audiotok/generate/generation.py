"""The token generation loop of MusicGen and AudioGen: audiocraft's ``LMModel.generate``.

The codes to generate, ``[B, K, T]`` (``T = max_gen_len``), start as the *unknown* token
``-1`` except for the prompt's timesteps, and are laid out by the codebook pattern into a
sequence ``[B, K, S]`` whose empty places hold the special token (``card``). Step by step
from the first step that holds an unknown timestep, the LM reads the steps not fed yet (the
whole known prefix at first, then one step at a time, its key/value cache holding the
rest), guided logits give the next step's tokens, places the pattern leaves empty are forced
to the special token, and only unknown places are written (prompt codes are kept). Finally
the sequence is reverted to codes. With the delay pattern, ``K = 4``, a prompt of ``T0 = 2``
timesteps and ``T = 4`` (``p`` prompt codes, ``?`` unknown, ``S`` special)::

    step:   0  1  2  3  4  5  6  7
    k=0:    S  p  p  ?  ?  S  S  S      generation starts at step 3 (the first holding
    k=1:    S  S  p  p  ?  ?  S  S      timestep T0 = 2), after feeding steps 0..2 at once;
    k=2:    S  S  S  p  p  ?  ?  S      step 7 completes timestep 3: its K codes are final
    k=3:    S  S  S  S  p  p  ?  ?

Classifier-free guidance doubles the batch: the LM reads ``[codes, codes]`` under
``ConditionTensors.cat([condition, null_condition])`` and the next tokens come from
``uncond + (cond - uncond) * cfg_coef`` (one forward pass per step). With ``two_step_cfg``
the two halves run as two passes with two caches, as audiocraft's option does.

Differences from audiocraft, all deliberate: sampling takes an optional ``torch.Generator``
(audiocraft always draws from the global RNG, which is what we do without one), and
:meth:`TokenGeneration.__iter__` hands out each timestep's codes as soon as they are final
(for streaming). Greedy decoding gives exactly the tokens of transformers'
``MusicgenForConditionalGeneration.generate(do_sample=False, guidance_scale=g)`` with
``max_length = T + K`` (its BOS column is our empty first step; tested).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import AudiotokError
from .conditioners import ConditionTensors
from .lm import LMModel
from .lm_config import LMConfig
from .patterns import (
    CodebooksPatternProvider,
    DelayedPatternProvider,
    ParallelPatternProvider,
    Pattern,
)
from .sampling import classifier_free_guidance, sample_next_token, split_classifier_free_guidance
from .transformer import LMCache

UNKNOWN_TOKEN = -1
"""Value of the codes not generated yet (audiocraft's ``unknown_token``)."""

ProgressCallback = Callable[[int, int], None]
"""``callback(generated_steps, total_steps)``."""


class GenerationError(AudiotokError, ValueError):
    """Generation parameters or inputs that can't be used (one line, no traceback)."""


def pattern_provider(config: LMConfig) -> CodebooksPatternProvider:
    """The codebook pattern provider the LM was trained with (``delay`` or ``parallel``)."""
    if config.pattern == "parallel":
        return ParallelPatternProvider(config.n_q, empty_initial=config.empty_initial)
    return DelayedPatternProvider(
        config.n_q, list(config.delays), config.flatten_first, config.empty_initial
    )


@dataclass(frozen=True)
class SamplingParams:
    """How the next tokens are chosen (audiocraft's ``generate`` keyword arguments).

    Attributes:
        use_sampling: Sample; False takes the argmax (greedy).
        temp: Softmax temperature.
        top_k: Keep the ``top_k`` most probable tokens (0: all); ignored if ``top_p > 0``.
        top_p: Nucleus mass (0: off).
        cfg_coef: Classifier-free guidance coefficient; None for the model's.
        two_step_cfg: Two forward passes (conditional, null) instead of one doubled batch;
            None for the model's setting. As in audiocraft, the two-step path guides with the
            *model's* ``cfg_coef`` (``LMConfig.cfg_coef``), not the one given here.
    """

    use_sampling: bool = True
    temp: float = 1.0
    top_k: int = 250
    top_p: float = 0.0
    cfg_coef: float | None = None
    two_step_cfg: bool | None = None


def _timestep_tables(pattern: Pattern, timesteps: int) -> tuple[torch.Tensor, list[int]]:
    """Where each code sits in the sequence, and the step that completes each timestep.

    Returns:
        ``step_of`` ``[K, timesteps]`` (the sequence step of code ``(q, t)``) and, per
        timestep, the last step that places one of its codes.
    """
    step_of = np.zeros((pattern.n_q, timesteps), dtype=np.int64)
    last = [0] * timesteps
    for step, coords in enumerate(pattern.layout):
        for c in coords:
            if c.t < timesteps:
                step_of[c.q, c.t] = step
                last[c.t] = max(last[c.t], step)
    return torch.from_numpy(step_of), last


class TokenGeneration:
    """One run of audiocraft's ``LMModel.generate``: set up, then :meth:`run` or iterate.

    Args:
        lm: The LM, in eval mode.
        provider: Its codebook pattern provider (:func:`pattern_provider`).
        condition: Conditions of the batch (``B`` rows), or None for an LM without any
            (then no guidance either).
        null_condition: The null conditions (``B`` rows) for classifier-free guidance;
            required with ``condition``. For text they are zeros; for a melody, the chroma
            of silence (see :mod:`audiotok.generate.melody`).
        prompt: Known leading codes ``[B, K, T0]`` (continuation), or None.
        num_samples: ``B`` when there is neither a prompt nor a condition.
        max_gen_len: Timesteps ``T`` of the result, prompt included; ``T0 < T``.
        params: Sampling and guidance settings.
        generator: Random state of the draws; torch's global one (audiocraft's) if None.
        callback: Called after each step with ``(steps done, steps in total)``.

    Example:
        >>> run = TokenGeneration(lm, pattern_provider(cfg), cond, null, None, None, 250,
        ...                       SamplingParams())                       # doctest: +SKIP
        >>> codes = run.run()                                             # [B, K, 250]
    """

    def __init__(
        self,
        lm: LMModel,
        provider: CodebooksPatternProvider,
        condition: ConditionTensors | None,
        null_condition: ConditionTensors | None,
        prompt: torch.Tensor | None,
        num_samples: int | None,
        max_gen_len: int,
        params: SamplingParams,
        generator: torch.Generator | None = None,
        callback: ProgressCallback | None = None,
    ) -> None:
        if lm.training:
            raise RuntimeError("generation needs the LM in eval mode")
        device = lm.device
        if prompt is None:
            batch = condition.batch_size if condition is not None else (num_samples or 1)
            prompt = torch.zeros(batch, lm.num_codebooks, 0, dtype=torch.long, device=device)
        batch, n_q, prompt_len = prompt.shape
        if n_q != lm.num_codebooks:
            raise GenerationError(
                f"the prompt has {n_q} codebooks, the LM models {lm.num_codebooks}"
            )
        if condition is not None and condition.batch_size != batch:
            raise GenerationError(
                f"{condition.batch_size} conditions for a prompt of batch {batch}"
            )
        if condition is not None and null_condition is None:
            raise ValueError("classifier-free guidance needs the null condition")
        if not prompt_len < max_gen_len:
            raise GenerationError(
                f"the prompt ({prompt_len} frames) must be shorter than the generation "
                f"({max_gen_len} frames)"
            )
        self.lm, self.params, self.generator, self.callback = lm, params, generator, callback
        self.batch, self.prompt_len, self.max_gen_len = batch, prompt_len, max_gen_len
        self.cfg_coef = lm.config.cfg_coef if params.cfg_coef is None else params.cfg_coef
        two_step = lm.config.two_step_cfg if params.two_step_cfg is None else params.two_step_cfg
        self.two_step = two_step and condition is not None
        self.condition, self.null_condition = condition, null_condition
        self.pattern = provider.get_pattern(max_gen_len)
        codes = torch.full((batch, n_q, max_gen_len), UNKNOWN_TOKEN, dtype=torch.long)
        codes = codes.to(device)
        codes[..., :prompt_len] = prompt
        self.sequence, self.mask = self.pattern.build_sequence(codes, lm.special_token_id)
        start = self.pattern.get_first_step_with_timesteps(prompt_len)
        if start is None:
            raise RuntimeError(f"the pattern has no step holding timestep {prompt_len}")
        self.start_step = start
        step_of, last_step = _timestep_tables(self.pattern, max_gen_len)
        # Timesteps past the prompt by the step after which all K codes are known, as ranges
        # of one index table on the device (no host-to-device copy, hence no sync, per step).
        new = list(range(prompt_len, max_gen_len))
        if any(last_step[a] > last_step[b] for a, b in itertools.pairwise(new)):
            raise NotImplementedError("a pattern that completes timesteps out of order")
        self._completed: dict[int, tuple[int, int]] = {}
        for i, t in enumerate(new):
            first, _ = self._completed.get(last_step[t], (i, i))
            self._completed[last_step[t]] = (first, i + 1)
        self._gather = step_of[:, prompt_len:].to(device)  # [K, T - T0]
        self._rows = torch.arange(n_q, device=device)[:, None]
        self._caches = self._new_caches()
        self._done = False
        # State made under inference mode (the sequence, the caches) is inference tensors,
        # which only inference mode may update in place: the steps run under the mode the
        # state was made in, wherever the consumer of __iter__ resumes them.
        self._inference = torch.is_inference_mode_enabled()

    @property
    def num_steps(self) -> int:
        """Sequence steps to sample: ``S - start``, the callback's total."""
        return self.sequence.shape[-1] - self.start_step

    def _new_caches(self) -> list[LMCache]:
        steps = self.sequence.shape[-1]
        if self.condition is None:
            return [self.lm.new_cache(self.batch, steps)]
        if self.two_step:
            return [
                self.lm.new_cache(self.batch, self.lm.prefix_length(c) + steps)
                for c in (self.condition, self.null_condition)
            ]
        self._both = ConditionTensors.cat([self.condition, self.null_condition])
        return [self.lm.new_cache(2 * self.batch, self.lm.prefix_length(self._both) + steps)]

    def _next_logits(self, steps: torch.Tensor) -> torch.Tensor:
        """Guided logits ``[B, K, card]`` of the step after ``steps`` ``[B, K, n]``."""

        def lm(
            codes: torch.Tensor, condition: ConditionTensors | None, cache: LMCache
        ) -> torch.Tensor:
            # Guidance and sampling in float32 whatever the LM's precision (set_precision).
            return self.lm(codes, condition, cache).float()

        if self.condition is None:
            logits = lm(steps, None, self._caches[0])
        elif self.two_step:
            cond = lm(steps, self.condition, self._caches[0])
            uncond = lm(steps, self.null_condition, self._caches[1])
            # audiocraft's two-step path uses the model's coefficient (`self.cfg_coef`).
            logits = classifier_free_guidance(cond, uncond, self.lm.config.cfg_coef)
        else:
            both = lm(torch.cat([steps, steps]), self._both, self._caches[0])
            logits = split_classifier_free_guidance(both, self.cfg_coef)
        return logits[:, :, -1]

    def _steps(self, gather: bool) -> Iterator[torch.Tensor]:
        if self._done:
            raise RuntimeError("this generation has already run")
        self._done = True
        seq, mask, p = self.sequence, self.mask, self.params
        special = self.lm.special_token_id
        prev = 0
        for offset in range(self.start_step, seq.shape[-1]):
            # A mode per step, not around the loop: a generator's `with` would leak into the
            # consumer between yields, and not be in force when it resumes the loop.
            with torch.inference_mode() if self._inference else torch.no_grad():
                next_token = sample_next_token(
                    self._next_logits(seq[..., prev:offset]),
                    use_sampling=p.use_sampling,
                    temp=p.temp,
                    top_k=p.top_k,
                    top_p=p.top_p,
                    generator=self.generator,
                )
                # The LM never outputs the special token: force it where the pattern is empty
                # (torch.where rather than masked assignment: no device synchronisation).
                valid = mask[None, :, offset : offset + 1]
                next_token = torch.where(valid, next_token, special)
                current = seq[..., offset : offset + 1]
                seq[..., offset : offset + 1] = torch.where(
                    current == UNKNOWN_TOKEN, next_token, current
                )
                prev = offset
                if self.callback is not None:
                    self.callback(1 + offset - self.start_step, self.num_steps)
                completed = None
                if gather and offset in self._completed:
                    first, end = self._completed[offset]
                    completed = self.sequence[:, self._rows, self._gather[:, first:end]]
            if completed is not None:
                yield completed

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Runs the loop, yielding the codes ``[B, K, n]`` of the timesteps past the prompt
        as soon as all ``K`` codebooks of each are final (``n = 1`` with the delay pattern)."""
        return self._steps(gather=True)

    def run(self) -> torch.Tensor:
        """Runs the whole loop; returns :meth:`result`."""
        for _ in self._steps(gather=False):
            pass
        return self.result()

    def result(self, remove_prompts: bool = False) -> torch.Tensor:
        """The codes ``[B, K, T]`` (``[B, K, T - T0]`` with ``remove_prompts``) once run."""
        if not self._done:
            raise RuntimeError("run the generation first")
        if bool((self.sequence == UNKNOWN_TOKEN).any()):
            raise RuntimeError("generation left unknown tokens in the sequence")
        codes, _ = self.pattern.revert_sequence(self.sequence, special_token=UNKNOWN_TOKEN)
        start = self.prompt_len if remove_prompts else 0
        return codes[..., start : self.max_gen_len]


def generate_tokens(
    lm: LMModel,
    condition: ConditionTensors | None,
    null_condition: ConditionTensors | None,
    *,
    prompt: torch.Tensor | None = None,
    num_samples: int | None = None,
    max_gen_len: int = 256,
    params: SamplingParams | None = None,
    generator: torch.Generator | None = None,
    callback: ProgressCallback | None = None,
    remove_prompts: bool = False,
    on_timesteps: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Generates codes with ``lm``: audiocraft's ``LMModel.generate`` (see the module doc).

    Args:
        lm: The LM, in eval mode.
        condition: Conditions ``B`` rows (``conditioner(texts)``), or None (no conditioning).
        null_condition: Their null counterpart, for classifier-free guidance.
        prompt: Known leading codes ``[B, K, T0]``, or None.
        num_samples: Batch size when there is neither a prompt nor a condition.
        max_gen_len: Timesteps to return, prompt included.
        params: Sampling settings; default ``SamplingParams()`` (audiocraft's defaults:
            sampling, top-k 250, the model's guidance).
        generator: Random state; the global one if None.
        callback: ``callback(steps done, total steps)`` after each step.
        remove_prompts: Return only the timesteps after the prompt.
        on_timesteps: Called with the codes ``[B, K, n]`` of timesteps as soon as they are
            final (the prompt's are not passed), for streaming output.

    Returns:
        Codes ``[B, K, max_gen_len]`` (less the prompt with ``remove_prompts``), int64 in
        ``[0, card)``.
    """
    run = TokenGeneration(
        lm,
        pattern_provider(lm.config),
        condition,
        null_condition,
        prompt,
        num_samples,
        max_gen_len,
        params or SamplingParams(),
        generator,
        callback,
    )
    if on_timesteps is None:
        run.run()
    else:
        for codes in run:
            on_timesteps(codes)
    return run.result(remove_prompts)
