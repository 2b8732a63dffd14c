"""Which channels a compressed file records, and whether decompression can give them back.

Decompression converts the codec's channels back to the original count by the policy of
:func:`audiotok.audio.read.convert_audio`, which can't make 3 or more channels out of mono or
stereo: such audio is refused when compressed (unless downmixed) and when decompressed (unless
native).
"""

from __future__ import annotations

import warnings

from ..audio.read import can_convert_channels
from ..codec.base import Codec
from ..errors import AudioError
from .container.header import Header


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")


def _channels_error(name: str | None, problem: str, option: str, how: str) -> AudioError:
    """``NAME: PROBLEM; pass OPTION=True HOW``, on the command line ``use --OPTION HOW``."""
    what = f"{name}: {problem}; " if name else f"{problem}; "
    return AudioError(f"{what}pass {option}=True{how}").for_cli(f"{what}use --{option}{how}")


def coded_channels(
    codec: Codec, channels: int, downmix: bool = False, name: str | None = None
) -> int:
    """The original channel count a compressed file records for audio of ``channels``.

    Decompression converts the codec's channels back to that count by the policy of
    :func:`~audiotok.audio.read.convert_audio`, which can't make 3 or more channels out of mono or
    stereo. Such audio is refused unless ``downmix``: the codec then codes its conversion (the
    average of all channels for mono models, the first two for stereo ones) and the file
    records the codec's channels, so that it decompresses to what was coded rather than to
    copies posing as the original layout. Stereo into a mono codec is coded, and comes back
    as two equal channels: a warning says so when the audio's file is named (``name``; the
    files' functions and commands check once, with it).

    Raises:
        AudioError: Audio whose channels decompression could not give back, without
            ``downmix``; the message starts with ``name``, the audio's file, if given.
    """
    ours = codec.channels
    if downmix and channels > ours:
        return ours
    if can_convert_channels(ours, channels):
        if channels > ours and name is not None:  # stereo in, two equal channels out
            warnings.warn(
                f"{name}: {_layout(channels)} coded as {_layout(ours)} by "
                f"{codec.model_id}, decompressed as {channels} copies of it; a "
                f"{_layout(channels)} model keeps the channels apart",
                stacklevel=2,
            )
        return channels
    coded = "their average" if ours == 1 else "the first two, front left and right"
    problem = (
        f"{channels} channels, but {codec.model_id} codes {_layout(ours)}, "
        f"which can't give {channels} back"
    )
    raise _channels_error(
        name, problem, "downmix", f" to code {coded} (decompressed as {_layout(ours)})"
    )


def check_restorable(header: Header, name: str | None) -> None:
    """Raises unless the file's channels convert back to the original's.

    Files written before compression refused such audio (8 channels coded as mono, say) can
    only be decoded as coded.
    """
    coded, original = header.channels, header.original_channels
    if can_convert_channels(coded, original):
        return
    problem = (
        f"the original had {original} channels, coded as {_layout(coded)}, "
        f"which can't give {original} back"
    )
    raise _channels_error(
        name, problem, "native", f" to decode the {_layout(coded)} audio that was coded"
    )
