"""Decompression: an ``.atok`` stream back to audio, concealing damage when asked.

Example:
    >>> audio, rate = audiotok.decompress(data)     # [C, T] at 44.1 kHz, like the input

Decoding a whole file gives exactly ``codec.decode(codec.encode(x))`` (then converted back to
the input's rate and channels). A damaged or truncated file is a :class:`FormatError`, unless
asked to conceal (``recover=True``): damaged or missing packets are then silence of the right
length, so the timing of the rest is kept, and :meth:`Decoded.problems` says what was lost.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from ..audio.read import convert_audio, to_numpy
from ..codec.arrays import as_framework
from ..codec.base import Codec
from ..codec.tokens import Tokens
from ..errors import TRUNCATED_HINT, FormatError, TokensError, TruncatedError, hint_damage
from ..runtime.memory import available_memory
from .channels import check_restorable
from .container.header import Header
from .container.reader import AtokReader, Damage

Source = bytes | str | os.PathLike | BinaryIO


@dataclass
class Decoded:
    """The result of decoding an ``.atok`` stream.

    Attributes:
        audio: ``[C, T]`` float32, an array of the codec's framework (a torch tensor on the
            CPU, or a numpy array for the onnx backend); None when ``decompress_file``
            recovered a long stream straight into its file.
        sample_rate: Its rate.
        header: The stream's header.
        damage: Stretches that were damaged or missing (concealed with silence).
        truncated_at: Byte offset after which the data is incomplete or missing, or None.
        lost_frames: Frames that could not be decoded (damage and truncation).
        trailing_at: Byte offset of data after the stream's end, ignored when recovering.
    """

    audio: Any
    sample_rate: int
    header: Header
    damage: list[Damage] = field(default_factory=list)
    truncated_at: int | None = None
    lost_frames: int = 0
    trailing_at: int | None = None

    @property
    def lost_seconds(self) -> float:
        """Seconds of audio lost (:attr:`lost_frames`, concealed with silence). A stream cut
        off with neither a length nor its index counts only the gaps before the cut: how much
        followed it is unknown (:meth:`problems` says that it was truncated)."""
        return self.lost_frames / float(self.header.frame_rate)

    def problems(self) -> list[str]:
        """One line per problem found, for warnings."""
        rate = float(self.header.frame_rate)
        lines = [
            f"damaged at byte {d.offset}: {d.reason}; "
            + (f"{d.num_frames / rate:.2f} s concealed" if d.num_frames else "the rest lost")
            for d in self.damage
        ]
        if self.truncated_at is not None:
            lines.append(
                f"truncated: the data after byte {self.truncated_at} is incomplete or missing: "
                f"{self.lost_frames / rate:.2f} s lost in all"
            )
        if self.trailing_at is not None:
            lines.append(f"data after the end of the stream, from byte {self.trailing_at}, ignored")
        return lines


def resolve_codec(
    codec: Codec | str | os.PathLike | None, header: Header, device: Any, backend: str = "torch"
) -> Codec:
    from ..codec.load import load_codec

    if codec is None:
        from ..zoo.codec_cards import find_card

        if find_card(header.model_id) is None:
            raise TokensError(
                f"the file was made by model {header.model_id!r}, which is not in the registry; "
                "give the codec (or -m NAME_OR_PATH)"
            )
        codec = header.model_id
    if not isinstance(codec, Codec):
        codec = load_codec(codec, device=device, backend=backend)
    checks = {
        "sample rate": (header.sample_rate, codec.sample_rate),
        "channels": (header.channels, codec.channels),
        "cardinality": (header.cardinality, codec.cardinality),
        "hop length": (header.hop_length, codec.hop_length),
        "segments": (
            (header.segment_length, header.segment_stride) if header.segment_length else None,
            codec.segments,
        ),
    }
    for what, (theirs, ours) in checks.items():
        if theirs != ours:
            raise TokensError(f"the file's {what} is {theirs}; {codec.model_id} has {ours}")
    if any(header.fingerprint) and header.fingerprint != codec.fingerprint():
        raise TokensError(
            f"the file was made with other weights than {codec.model_id}'s "
            f"(fingerprint {header.fingerprint.hex()} vs {codec.fingerprint().hex()})"
        )
    return codec


@dataclass
class _Run:
    """Consecutive good packets: their first frame, codes ``[K, f]`` pieces and scales."""

    first_frame: int
    codes: list[np.ndarray]
    scales: list[float]

    @property
    def end_frame(self) -> int:
        return self.first_frame + sum(c.shape[1] for c in self.codes)


def _decode_run(
    codec: Codec, header: Header, run: _Run, length: int, total_frames: int
) -> tuple[int, np.ndarray]:
    """Decodes one run on its own: ``(first sample, audio [C, n])``.

    A run that reaches the end of the stream decodes to the end of the signal. One that stops
    early (before damage or truncation) decodes to where the next packet's audio would start;
    for segmented codecs the codec would then see a signal whose last segment is cut short, so
    the run is padded with a dummy tail segment, decoded, and cut before it.
    """
    codes = np.concatenate(run.codes, axis=1)
    scales = list(run.scales)
    hop, frames = int(header.hop_length), codes.shape[1]
    reaches_end = run.end_frame >= total_frames
    if header.segment_length == 0:
        start = run.first_frame * hop
        keep = length - start if reaches_end else frames * hop
        n = keep
    else:
        segment = run.first_frame // header.frames_per_packet
        start = segment * header.segment_stride
        segments = len(run.codes)
        n = (
            min(length, (segment + segments - 1) * header.segment_stride + header.segment_length)
            - start
        )
        keep = n if reaches_end else segments * header.segment_stride
        if not reaches_end:
            n += 1  # one more sample opens a dummy tail segment
            extra = codec.num_frames(n) - frames
            codes = np.concatenate([codes, np.zeros((codes.shape[0], extra), codes.dtype)], axis=1)
            scales.append(1.0)
    tokens = Tokens(
        codes[None],
        np.array([scales], np.float32) if header.scales_per_packet else None,
        n,
        header.sample_rate,
        header.bandwidth,
        codec.model_id,
    )
    return start, to_numpy(codec.decode(tokens)[0])[:, : min(keep, length - start)]


def decode_stream(
    source: Source,
    codec: Codec | str | os.PathLike | None = None,
    *,
    recover: bool = False,
    native: bool = False,
    device: Any = "cpu",
    backend: str = "torch",
) -> Decoded:
    """Decodes an ``.atok`` stream into audio, reporting any damage.

    Args:
        source: Bytes, a path or a binary file object.
        codec: The codec (or its name or path); None for the model the header names.
        recover: Conceal damaged packets with silence instead of raising.
        native: Return audio at the codec's rate and channels instead of the original's.
        device: Where to load the codec when it is given by name.
        backend: How to run a codec given by name: ``torch`` or ``onnx`` (see ``load_codec``).

    Raises:
        FormatError: The stream is unreadable, or (unless ``recover``) damaged or truncated
            (one that lacks only its index decodes whole, with :attr:`Decoded.truncated_at`).
        TokensError: The codec does not match the stream.
    """
    with AtokReader(source) as reader:
        header = reader.header
        if not native:
            check_restorable(header, reader.name)
        codec = resolve_codec(codec, header, device, backend)
        reader.priors = codec.entropy_priors
        runs: list[_Run] = []
        try:
            for offset, packet in reader.packets(recover=recover):
                codes = reader.decode(packet, offset)
                if runs and runs[-1].end_frame == packet.first_frame:
                    runs[-1].codes.append(codes)
                    runs[-1].scales.extend(packet.scales)
                else:
                    runs.append(_Run(packet.first_frame, [codes], list(packet.scales)))
        except FormatError as exc:
            if not recover:
                hint_damage(exc)
            raise
        index = reader.stream_index
        damage, truncated_at, trailing_at = reader.damage, reader.truncated_at, reader.trailing_at
    decoded_end = runs[-1].end_frame if runs else 0
    length = header.length if header.length is not None else (index.length if index else None)
    if header.length is not None:
        total_frames = header.num_frames()
    else:
        total_frames = index.total_frames if index else decoded_end
    lost = max(0, total_frames - sum(run.end_frame - run.first_frame for run in runs))
    if truncated_at is not None and not recover and (lost or length is None):
        raise _truncated(header, truncated_at, total_frames - lost, lost, length is not None,
                         reader.name)  # fmt: skip
    if length is None:
        length = decoded_end * int(header.hop_length)
    if lost:
        _check_fits(header, length, total_frames - lost, native, reader.name)
    pieces = [_decode_run(codec, header, run, length, total_frames) for run in runs]
    audio = np.zeros((header.channels, length), np.float32)
    for start, piece in pieces:
        audio[:, start : start + piece.shape[-1]] = piece
    rate = header.sample_rate
    if not native and (
        header.original_sample_rate != rate or header.original_channels != header.channels
    ):
        if audio.shape[-1]:
            audio = convert_audio(
                audio, rate, header.original_sample_rate, header.original_channels
            )
        else:  # nothing decodable: soxr can't resample zero samples
            audio = np.zeros((header.original_channels, 0), np.float32)
        rate = header.original_sample_rate
        original = header.original_length if header.original_length is not None else (
            index.original_length if index else None
        )  # fmt: skip
        if original is not None:
            audio = np.pad(audio, ((0, 0), (0, max(0, original - audio.shape[-1]))))
            audio = audio[:, :original]
    audio = as_framework(np.ascontiguousarray(audio, np.float32), codec.framework)
    return Decoded(audio, rate, header, damage, truncated_at, lost, trailing_at)


def _check_fits(header: Header, length: int, decoded: int, native: bool, name: str | None) -> None:
    """Refuses a recovery that can't fit in memory, before allocating it.

    What is lost comes back as silence up to the length the header (or index) gives, and
    nothing else bounds that length when the data is cut off: a damaged header's length
    (the u64 read as an hour or as years) would be a MemoryError, or the kernel's kill.
    ``decoded``: the frames that are there; ``native``: no conversion to the original's rate.
    """
    original = header.original_length
    if original is None:
        original = length * header.original_sample_rate // header.sample_rate
    # A lower bound: the decoded signal, and the one at the original's rate and channels.
    need = 4 * header.channels * length
    need += 0 if native else 4 * header.original_channels * original
    available = available_memory()
    if available is None or need <= available:
        return
    seconds = length / header.sample_rate
    stated = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.1f} s"
    raise FormatError(
        f"recovering it would rebuild {stated} (its stated length; "
        f"{decoded / float(header.frame_rate):.2f} s of it are here, the rest silence), which "
        f"needs at least {need / 2**30:.1f} GiB of memory, and {available / 2**30:.1f} GiB is "
        "available: a length this far beyond the data may be a damaged header"
    ).in_file(name)


def _truncated(header: Header, at: int, decoded: int, lost: int, known: bool,
               name: str | None) -> TruncatedError:  # fmt: skip
    """The error for a stream that ends ``lost`` frames early (``known``: if its length is)."""
    rate = float(header.frame_rate)
    if known:
        what = f"truncated: {lost / rate:.2f} s of {(decoded + lost) / rate:.2f} s missing"
    else:  # a streamed file cut before its index: how much is missing is unknown
        what = f"truncated after {decoded / rate:.2f} s"
    return TruncatedError(what, at).with_hint(*TRUNCATED_HINT).in_file(name)


def decompress(
    data: Source,
    codec: Codec | str | os.PathLike | None = None,
    *,
    recover: bool = False,
    native: bool = False,
) -> tuple[Any, int]:
    """Decodes ``.atok`` data to ``(audio [C, T], sample_rate)`` (the codec's kind of array).

    By default the audio has the rate and channels of what was compressed. A damaged or
    truncated file raises ``FormatError``; with ``recover=True`` it decodes with what is
    missing as silence, and a warning says how much that is. See :func:`decode_stream` for
    the arguments.
    """
    result = decode_stream(data, codec, recover=recover, native=native)
    for line in result.problems():
        warnings.warn(line, stacklevel=2)
    return result.audio, result.sample_rate
