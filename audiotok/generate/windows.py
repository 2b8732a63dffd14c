"""Extended generation: audio longer than the LM's window, by windowed continuation.

An LM generates at most ``max_duration`` seconds (its training segment) in one run. For a
longer ``duration``, audiocraft's ``_generate_tokens`` runs windows of at most
``max_duration``, each ``extend_stride`` seconds after the previous one, and prompts each
with the previous window's last ``max_duration - extend_stride`` seconds of tokens: those
frames are kept from the previous window, and only the frames after them are new.
:func:`plan_windows` reproduces that arithmetic, float for float (``int(seconds * rate)``
truncations included), so the frame counts are audiocraft's.

Worked example: ``duration=50``, ``max_duration=30``, ``extend_stride=18`` at 50 frames/s
(``total = 2500`` frames, ``stride = 900``)::

    window  offset  starts at  max_gen_len  prompt_len        output frames it adds
    0       0       0 s        1500         0                 [0, 1500)
    1       900     18 s       1500         600 (= 1500-900)  [1500, 2400)
    2       1800    36 s       700          600               [2400, 2500)

Window ``w`` adds the output frames ``[offset + prompt_len, offset + max_gen_len)``. With a
continuation prompt of ``P`` frames, window 0 has ``prompt_len = P`` and the output starts
with the prompt. MusicGen-melody shifts the melody with the windows (see
:mod:`audiotok.generate.melody`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .generation import GenerationError


@dataclass(frozen=True)
class Window:
    """One run of the LM in an extended generation.

    Attributes:
        offset: Output frames before the window's first frame (``current_gen_offset``).
        time_offset: ``offset / frame_rate``, seconds.
        max_gen_len: Frames the run returns, its prompt included.
        prompt_len: Frames of its prompt: the user's (window 0), else the previous run's last.
    """

    offset: int
    time_offset: float
    max_gen_len: int
    prompt_len: int

    @property
    def new_frames(self) -> int:
        """Frames this window adds to the output."""
        return self.max_gen_len - self.prompt_len


def plan_windows(
    duration: float,
    max_duration: float,
    frame_rate: float,
    extend_stride: float | None,
    prompt_len: int = 0,
) -> list[Window]:
    """The windows audiocraft's ``_generate_tokens`` runs (one when ``duration <= max_duration``).

    Args:
        duration: Seconds to generate, prompt included.
        max_duration: Longest run of the LM, seconds.
        frame_rate: Frames per second.
        extend_stride: Seconds between windows; needed when ``duration > max_duration``.
        prompt_len: Frames of the continuation prompt.

    Returns:
        The windows, in order; their :attr:`Window.new_frames` add up to
        ``int(duration * frame_rate)`` (minus ``prompt_len``), or a frame less where float
        truncation leaves the last window nothing to add (audiocraft fails an assertion
        there).

    Raises:
        GenerationError: No frame to generate, a prompt too long, or an unusable stride.
    """
    total_gen_len = int(duration * frame_rate)
    max_prompt_len = int(min(duration, max_duration) * frame_rate)
    if total_gen_len < 1:
        raise GenerationError(f"duration {duration:g} s is less than one frame ({frame_rate:g}/s)")
    # The first window returns `max_prompt_len` frames, and its prompt must leave one to make.
    if prompt_len >= max_prompt_len:
        raise GenerationError(
            f"the prompt ({prompt_len / frame_rate:g} s) must be shorter than the duration "
            f"({duration:g} s) and the model's window ({max_duration:g} s)"
        )
    if duration <= max_duration:
        return [Window(0, 0.0, total_gen_len, prompt_len)]
    if extend_stride is None or not 0 < extend_stride < max_duration:
        raise GenerationError(
            f"generating {duration:g} s, more than the model's {max_duration:g} s, needs "
            f"0 < extend_stride < {max_duration:g} (got {extend_stride})"
        )
    stride_tokens = int(frame_rate * extend_stride)
    if stride_tokens < 1:
        raise GenerationError(f"extend_stride {extend_stride:g} s is less than one frame")
    windows = []
    offset = 0
    while offset + prompt_len < total_gen_len:
        time_offset = offset / frame_rate
        chunk_duration = min(duration - time_offset, max_duration)
        max_gen_len = int(chunk_duration * frame_rate)
        if prompt_len >= max_gen_len:
            # Float truncation can leave a last window nothing to add (47.3 s with a 10 s
            # stride): audiocraft fails an assertion, we stop, a frame short.
            break
        windows.append(Window(offset, time_offset, max_gen_len, prompt_len))
        prompt_len = max(0, max_gen_len - stride_tokens)
        offset += stride_tokens
    return windows
