"""``BaseGenModel``: audiocraft's generation API (``audiocraft.models.genmodel``) on audiotok.

:class:`~audiotok.generate.musicgen.MusicGen` and :class:`~audiotok.generate.audiogen.AudioGen`
share it: load with ``get_pretrained``, choose settings with ``set_generation_params``, then
``generate`` (text), ``generate_unconditional``, ``generate_continuation`` (an audio prompt),
or ``generate_stream`` (audio chunks while the tokens are generated). Audio comes back as
``[B, C, T]`` float32 at :attr:`sample_rate`, on the model's device, and with
``return_tokens=True`` also the codes ``[B, K, F]`` (:meth:`to_tokens` makes them
:class:`~audiotok.Tokens` to save or compress).

Same as audiocraft: parameter names and defaults, the conditions (classifier-free guidance
against the null condition on every call, unconditional generation included), frame
counts (``int(duration * frame_rate)``), extended generation (:mod:`.windows`), the RNG use
(torch's global RNG unless a ``seed`` is set). Deliberately different:

* ``seed`` (``set_generation_params``): a fixed seed makes every call reproducible on the
  same device, with a private ``torch.Generator``;
* the progress callback is called whenever one is set (audiocraft: only with
  ``progress=True``), with steps counted over the whole generation, all windows included
  (audiocraft restarts the total at each window); ``progress=True`` alone prints to stderr;
* resampling (prompts or melodies at another rate) uses soxr, audiocraft julius;
* the LM runs in float32 unless :meth:`BaseGenModel.set_precision` says otherwise
  (audiocraft autocasts to float16 on GPUs);
* stereo codes interleave ``L0, R0, L1, R1, ...`` as audiocraft's; per-timestep
  interleaving is not supported.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..audio.read import convert_audio
from ..codec.inference import module_to
from ..codec.tokens import Tokens
from .codec_io import GenerationCodec
from .conditioners import ConditionTensors
from .generation import GenerationError, SamplingParams, TokenGeneration, pattern_provider
from .inputs import (
    audio_batch,
    check_durations,
    check_rate,
    check_seed,
    descriptions_list,
    generation_params,
    melody_list,
    unconditional_list,
)
from .load import LoadedLM
from .melody import MelodyConditioning
from .quantize import is_int4, is_int8, quantize_int4_, quantize_int8_
from .stream_decode import StreamOutputMixin
from .windows import plan_windows

Audio = torch.Tensor | np.ndarray
Output = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def default_device() -> str:
    """``cuda`` when a GPU is available, else ``cpu`` (audiocraft's ``get_pretrained``)."""
    return "cuda" if torch.cuda.device_count() else "cpu"


class BaseGenModel(StreamOutputMixin):
    """A MusicGen / AudioGen model with audiocraft's generation API.

    Args:
        name: The model's name.
        loaded: What :func:`~audiotok.generate.load_lm` returns.
        max_duration: Longest one-pass generation, seconds; the LM's training segment
            (``config.segment_duration``) if None.

    Attributes:
        name: The model's name.
        lm: The language model.
        conditioner: Its conditioners (audiocraft's ``lm.condition_provider``).
        codec: The codec, through the tokenizer interface (audiocraft's
            ``compression_model``).
        config: The LM's config.
        max_duration: Longest one-pass generation, seconds.
        duration: Seconds to generate.
        extend_stride: Seconds between windows of extended generation.
        generation_params: ``use_sampling``, ``temp``, ``top_k``, ``top_p``, ``cfg_coef``,
            ``two_step_cfg``, as audiocraft stores them.
        seed: Random seed of each call, or None for torch's global RNG.
        last_codes: The codes ``[B, K, F]`` of the last generation, or None.
    """

    def __init__(self, name: str, loaded: LoadedLM, max_duration: float | None = None) -> None:
        lm, conditioner, codec, config = loaded
        self.name = name
        self.lm, self.conditioner, self.codec, self.config = lm.eval(), conditioner, codec, config
        self.max_duration = float(config.segment_duration if max_duration is None else max_duration)
        self.duration = self.max_duration
        self.extend_stride: float | None = None
        self.generation_params: dict[str, Any] = {}
        self.seed: int | None = None
        self.last_codes: torch.Tensor | None = None
        self._progress_callback: Callable[[int, int], None] | None = None
        self._provider = pattern_provider(config)
        self._codec_io = GenerationCodec(codec, config, lm.device)
        wav_specs = [c for c in config.conditioners if not c.is_text]
        self._melody = (
            MelodyConditioning(wav_specs[0], config.segment_duration, self.sample_rate, lm.device)
            if wav_specs
            else None
        )

    def _set_params(
        self,
        use_sampling: bool,
        top_k: int,
        top_p: float,
        temperature: float,
        duration: float,
        cfg_coef: float,
        two_step_cfg: bool,
        extend_stride: float | None,
        seed: int | None,
    ) -> None:
        check_durations(duration, extend_stride, self.max_duration)
        self.generation_params = generation_params(
            use_sampling, top_k, top_p, temperature, cfg_coef, two_step_cfg
        )
        self.duration, self.extend_stride = float(duration), extend_stride
        self.seed = check_seed(seed)

    @property
    def frame_rate(self) -> float:
        """Token frames (LM steps, roughly) per second."""
        return self.codec.frame_rate

    @property
    def sample_rate(self) -> int:
        """Sample rate of the generated audio."""
        return self.codec.sample_rate

    @property
    def audio_channels(self) -> int:
        """Channels of the generated audio (2 for the stereo models)."""
        return self.config.channels

    @property
    def device(self) -> torch.device:
        """Where the models are."""
        return self.lm.device

    @property
    def precision(self) -> str:
        """The LM's precision: ``fp32`` (the default), ``bf16``, ``fp16``, ``int8`` or ``int4``."""
        if is_int8(self.lm):
            return "int8"
        if is_int4(self.lm):
            return "int4"
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.lm.dtype, "fp32")

    def set_precision(self, precision: str) -> None:
        """Runs the LM in ``fp32``, ``bf16``, ``fp16`` (CUDA only; audiocraft autocasts to it),
        ``int8`` or ``int4`` (CPU only: :func:`~audiotok.generate.quantize.quantize_int8_`,
        :func:`~audiotok.generate.quantize.quantize_int4_`).

        bf16 and fp16 halve the bytes a decoding step reads, which bound it; int8 quarters the
        linear layers' weights, int4 takes an eighth (weight-only, bf16 activations). Tokens
        differ from fp32 ones where rounding tips a choice (benchmarks/RESULTS.md). Guidance
        and sampling stay in float32; the text encoder and the codec are unchanged. The weights
        are converted, so going back to fp32 needs the model loaded again.

        Raises:
            GenerationError: An unknown precision, fp16 without CUDA, int8 or int4 on an
                accelerator.
        """
        dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in (*dtypes, "int8", "int4"):
            raise GenerationError(
                f"precision must be one of {', '.join(dtypes)}, int8, int4, not {precision!r}"
            )
        if precision == "fp16" and self.device.type != "cuda":
            raise GenerationError("fp16 needs a CUDA device; on a CPU use bf16 or int8")
        if precision in ("int8", "int4") and self.device.type != "cpu":
            raise GenerationError(f"{precision} runs on a CPU; on a GPU use bf16 or fp16")
        if precision != self.precision and self.precision != "fp32":
            raise GenerationError(
                f"the LM's weights are {self.precision} now; load the model again for {precision}"
            )
        if precision == "int8":
            if not is_int8(self.lm):
                quantize_int8_(self.lm)
            return
        if precision == "int4":
            if not is_int4(self.lm):
                quantize_int4_(self.lm)
            return
        module_to(self.lm, dtypes[precision])

    @property
    def compression_model(self) -> Any:
        """audiocraft's name for :attr:`codec`."""
        return self.codec

    def set_custom_progress_callback(
        self, progress_callback: Callable[[int, int], None] | None = None
    ) -> None:
        """Calls ``progress_callback(generated_steps, total_steps)`` after each LM step."""
        self._progress_callback = progress_callback

    # --- public generation API -------------------------------------------------------------

    def generate_unconditional(
        self, num_samples: int, progress: bool = False, return_tokens: bool = False
    ) -> Output:
        """``num_samples`` samples without text (null conditions).

        Returns:
            Audio ``[B, C, T]``, and codes ``[B, K, F]`` with ``return_tokens``.
        """
        codes = self._run(unconditional_list(num_samples), None, None, progress)
        return self._output(codes, return_tokens)

    def generate(
        self,
        descriptions: Sequence[str | None],
        progress: bool = False,
        return_tokens: bool = False,
    ) -> Output:
        """One sample per text description (None: no description).

        Returns:
            Audio ``[B, C, T]``, and codes ``[B, K, F]`` with ``return_tokens``.
        """
        codes = self._run(descriptions_list(descriptions), None, None, progress)
        return self._output(codes, return_tokens)

    def generate_continuation(
        self,
        prompt: Audio,
        prompt_sample_rate: int,
        descriptions: Sequence[str | None] | None = None,
        progress: bool = False,
        return_tokens: bool = False,
    ) -> Output:
        """Continues audio prompts ``[B, C, T]`` (or ``[C, T]``); the output starts with them.

        Args:
            prompt: Audio to continue, converted to the model's rate and channels; shorter
                than :attr:`duration` and :attr:`max_duration`.
            prompt_sample_rate: Its sample rate.
            descriptions: One text per prompt, or None.
            progress: Show progress.
            return_tokens: Also return the codes.
        """
        texts, codes = self._texts_and_prompt(descriptions, None, prompt, prompt_sample_rate)
        return self._output(self._run(texts, codes, None, progress), return_tokens)

    def generate_audio(self, gen_tokens: torch.Tensor) -> torch.Tensor:
        """Decodes codes ``[B, K, F]`` to audio ``[B, C, F * hop]`` (audiocraft's name)."""
        gen_tokens = torch.as_tensor(gen_tokens)
        if gen_tokens.dim() != 3:
            raise GenerationError(f"codes must be [B, K, F], got {list(gen_tokens.shape)}")
        return self._codec_io.decode(gen_tokens.to(self.device))

    def to_tokens(self, codes: torch.Tensor, length: int | None = None) -> Tokens:
        """Codes ``[B, K, F]`` as :class:`~audiotok.Tokens` of the codec, to save or compress.

        Stereo codes become ``2B`` rows, row ``2b`` the left channel of item ``b`` and row
        ``2b + 1`` its right: ``codec.decode`` of them gives ``[2B, 1, T]``, which
        ``.view(B, 2, T)`` makes the stereo audio.

        Args:
            codes: ``[B, K, F]`` as ``generate(..., return_tokens=True)`` returns them.
            length: Samples per channel; default ``F * hop`` (what ``generate`` returns).
        """
        return self._codec_io.to_tokens(codes, length)

    @property
    def last_tokens(self) -> Tokens | None:
        """:attr:`last_codes` as :class:`~audiotok.Tokens` (see :meth:`to_tokens`)."""
        return None if self.last_codes is None else self.to_tokens(self.last_codes)

    # --- inputs ----------------------------------------------------------------------------

    def _texts_and_prompt(
        self,
        descriptions: Sequence[str | None] | None,
        num_samples: int | None,
        prompt: Audio | None,
        prompt_sample_rate: int | None,
    ) -> tuple[list[str | None], torch.Tensor | None]:
        """The batch's texts and the codes ``[B, K, T]`` of an audio prompt (or None)."""
        codes = None
        if prompt is not None:
            wav = audio_batch(prompt, "prompt")
            rate = check_rate(prompt_sample_rate, "prompt_sample_rate")
            wav = convert_audio(wav, rate, self.sample_rate, self.audio_channels)
            codes = self._codec_io.encode(wav)
        if descriptions is not None:
            texts = descriptions_list(descriptions)
        elif codes is not None:
            texts = [None] * len(codes)
        else:
            texts = unconditional_list(num_samples)
        if codes is not None and len(codes) != len(texts):
            raise GenerationError(f"{len(codes)} prompts for {len(texts)} descriptions")
        return texts, codes

    def _prepare_melodies(
        self, melody_wavs: Any, sample_rate: int | None, batch: int
    ) -> list[torch.Tensor | None]:
        if self._melody is None:
            raise GenerationError(
                f"{self.name} is not conditioned on a melody: use a musicgen-melody model"
            )
        rate = check_rate(sample_rate, "melody_sample_rate")
        return self._melody.prepare(melody_list(melody_wavs, batch), rate)

    def _conditions(
        self,
        texts: list[str | None],
        melodies: list[torch.Tensor | None] | None,
        window: tuple[float, float] | None,
    ) -> tuple[ConditionTensors | None, ConditionTensors | None]:
        """The batch's conditions and their null counterpart (audiocraft's
        ``ClassifierFreeGuidanceDropout(p=1)``: no text, a silent melody)."""
        if not self.config.conditioners:
            return None, None
        nulls: list[str | None] = [None] * len(texts)
        chroma = null_chroma = None
        if self._melody is not None:
            chroma = self._melody.chroma(melodies or nulls, window)
            null_chroma = self._melody.null(len(texts))
        return self.conditioner(texts, chroma), self.conditioner(nulls, null_chroma)

    # --- generation ------------------------------------------------------------------------

    def _report(self, progress: bool) -> Callable[[int, int], None] | None:
        if self._progress_callback is not None:
            return self._progress_callback
        if progress:
            return lambda done, total: print(
                f"{done: 6d} / {total: 6d}", end="\r" if done < total else "\n", file=sys.stderr
            )
        return None

    def _iter_codes(
        self,
        texts: list[str | None],
        prompt: torch.Tensor | None,
        melodies: list[torch.Tensor | None] | None,
        progress: bool,
    ) -> Iterator[torch.Tensor]:
        """audiocraft's ``_generate_tokens``, yielding codes ``[B, K, n]`` as they are final
        (the prompt's first); sets :attr:`last_codes` at the end."""
        self.last_codes = None
        prompt_len = 0 if prompt is None else prompt.shape[-1]
        windows = plan_windows(
            self.duration, self.max_duration, self.frame_rate, self.extend_stride, prompt_len
        )
        extended = self.duration > self.max_duration
        steps = []
        for w in windows:
            pattern = self._provider.get_pattern(w.max_gen_len)
            first = pattern.get_first_step_with_timesteps(w.prompt_len) or 0
            steps.append(len(pattern.layout) - first)
        report, total, done = self._report(progress), sum(steps), 0
        generator = None
        if self.seed is not None:
            generator = torch.Generator(self.device).manual_seed(int(self.seed))
        params = SamplingParams(**self.generation_params)
        pieces = [] if prompt is None else [prompt]
        if prompt is not None:
            yield prompt
        for w, n_steps in zip(windows, steps, strict=True):
            window = (w.time_offset, self.max_duration) if extended else None
            cond, null = self._conditions(texts, melodies, window)
            callback = None
            if report is not None:
                callback = lambda d, _, base=done: report(base + d, total)  # noqa: E731
            run = TokenGeneration(
                self.lm, self._provider, cond, null, prompt, len(texts), w.max_gen_len,
                params, generator, callback,
            )  # fmt: skip
            for codes in run:
                pieces.append(codes)
                yield codes
            done += n_steps
            if extended:
                prompt = run.result()[..., int(self.frame_rate * self.extend_stride) :]
        self.last_codes = torch.cat(pieces, dim=-1)

    def _run(
        self,
        texts: list[str | None],
        prompt: torch.Tensor | None,
        melodies: list[torch.Tensor | None] | None,
        progress: bool,
    ) -> torch.Tensor:
        for _ in self._iter_codes(texts, prompt, melodies, progress):
            pass
        assert self.last_codes is not None
        return self.last_codes

    def _output(self, codes: torch.Tensor, return_tokens: bool) -> Output:
        wav = self.generate_audio(codes)
        return (wav, codes) if return_tokens else wav
