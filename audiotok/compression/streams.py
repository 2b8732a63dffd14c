"""Long files compressed and decompressed as streams, block by block, in bounded memory.

:func:`audiotok.compression.files.compress_file` and :func:`~.files.decompress_file` use these
for files longer than ``STREAM_SECONDS`` when the codec streams (``Codec.can_stream``):
unsegmented codecs carry every layer's state from block to block, segmented ones (48 kHz) code
segment by segment, each segment with its scale.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..audio.read import to_numpy
from ..codec.arrays import as_framework, concat, framework_of
from ..codec.base import Codec
from ..codec.tokens import Tokens
from ..errors import TRUNCATED_HINT, FormatError, TokensError, TruncatedError, hint_damage
from .container.header import Header
from .container.reader import AtokReader
from .container.writer import DEFAULT_PACKET_SECONDS, AtokWriter
from .decode import Decoded


def compress_streaming(file: BinaryIO, path: Path, codec: Codec, bandwidth: float | None,
                        *, original_channels: int | None = None, entropy: str = "adaptive",
                        metadata: dict[str, str] | None = None,
                        packet_seconds: float = DEFAULT_PACKET_SECONDS) -> None:  # fmt: skip
    """Codes the audio file ``path`` block by block into an ``.atok`` stream on ``file``.

    ``original_channels`` is what the file records as the original layout (the file's own
    channels if None; the codec's for a downmix, see ``compression.coded_channels``).
    """
    from ..audio.blocks import AudioBlocks

    blocks = AudioBlocks(path, codec.sample_rate, codec.channels)
    bandwidth = codec.check_bandwidth(bandwidth)
    if original_channels is None:
        original_channels = blocks.source_channels
    with AtokWriter.for_codec(
        file, codec, bandwidth=bandwidth, entropy=entropy,
        original_sample_rate=blocks.source_rate, original_channels=original_channels,
        original_length=blocks.source_frames, metadata=metadata, packet_seconds=packet_seconds,
    ) as writer:  # fmt: skip
        writer.close(length=_encode_blocks(blocks, codec, bandwidth, writer.write))


def _encode_blocks(blocks: Any, codec: Codec, bandwidth: float,
                   take: Callable[[Any, Any], None]) -> int:  # fmt: skip
    """Codes audio ``blocks`` (``[C, n]`` each) through the codec's stream, handing each piece
    to ``take(codes [1, K, f], scales)`` as it completes (scales ``[1]`` per segment for
    segmented codecs, else None); returns the samples coded."""
    length = 0

    def give(out: Any) -> None:  # codes [1, K, f], or a list of (codes, scales) per segment
        for codes, scales in out if isinstance(out, list) else [(out, None)]:
            take(codes, scales)

    with codec.streaming(1, bandwidth) as stream:
        for block in blocks:
            length += block.shape[-1]
            give(stream.encode(as_framework(block[None], codec.framework, device=codec.device)))
        give(stream.encode_end())
    return length


class _SegmentFeeder:
    """Regroups a segmented stream's packets into segments: ``(codes [1, K, f], scale [1])``.

    Packets need not be segments; the segments follow from the signal's length, as offline.
    """

    def __init__(self, header: Header, length: int) -> None:
        self.frames = header.segment_frames(length)
        self.next = 0
        self.codes: Any = None
        self.scales: list[float] = []

    def add(self, codes: Any, scales: tuple[float, ...]) -> list[tuple[Any, Any]]:
        """``codes [1, K, f]`` and their packet's scales -> the segments now complete."""
        self.codes = codes if self.codes is None else concat([self.codes, codes], axis=-1)
        self.scales += scales
        out = []
        while self.next < len(self.frames) and self.scales:
            n = self.frames[self.next]
            if self.codes.shape[-1] < n:
                break
            scale = as_framework(np.array([self.scales.pop(0)], np.float32), framework_of(codes),
                                 device=getattr(codes, "device", None))  # fmt: skip
            out.append((self.codes[..., :n], scale))
            self.codes = self.codes[..., n:]
            self.next += 1
        return out


SILENCE_BLOCK = 1 << 16  # samples of concealing silence per write: a gap can be hours long


class _Runs:
    """Decodes an unsegmented stream's packets into ``sink``, each run of consecutive frames
    on a fresh streaming state, with silence where frames are missing: as
    :func:`~.decode.decode_stream` conceals damage, each run decoded on its own.

    Without damage there is one run, and this is the plain streaming decode.
    """

    def __init__(self, codec: Codec, sink: Any, hop: int) -> None:
        self.codec, self.sink, self.hop = codec, sink, hop
        self.runs = contextlib.ExitStack()
        self.stream: Any = None
        self.next_frame = 0  # where the run being decoded goes on
        self.written = 0  # samples at the codec's rate given to the sink

    def add(self, first_frame: int, codes: Any) -> None:
        """``codes [1, K, f]`` of the packet that starts at ``first_frame``."""
        if self.stream is None or first_frame != self.next_frame:
            self.end()
            self._silence(first_frame * self.hop - self.written)
            self.stream = self.runs.enter_context(self.codec.streaming(1))
        self._write(self.stream.decode(codes))
        self.next_frame = first_frame + codes.shape[-1]

    def end(self) -> None:
        """Decodes what the run still owes (a non-causal decoder's lookahead) and closes it:
        a run that stops early ends where the next packet's audio would start."""
        if self.stream is not None:
            self._write(self.stream.decode_end(), limit=self.next_frame * self.hop)
            self.runs.close()
            self.stream = None

    def finish(self, length: int | None) -> None:
        """Ends the last run, then silence up to ``length`` samples (the stream's, at the
        codec's rate) for packets lost at the end: given before resampling, as the one-pass
        decoder's zeros are, so that the cut rings as it does there."""
        self.end()
        if length is not None:
            self._silence(length - self.written)

    def _write(self, audio: Any, limit: int | None = None) -> None:
        piece = to_numpy(audio[0])
        if limit is not None:
            piece = piece[:, : max(0, limit - self.written)]
        self.sink.write(piece)
        self.written += piece.shape[-1]

    def _silence(self, samples: int) -> None:
        """``samples`` of silence, a block at a time (a gap can be hours long)."""
        channels = self.codec.channels
        for start in range(0, max(0, samples), SILENCE_BLOCK):
            block = np.zeros((channels, min(SILENCE_BLOCK, samples - start)), np.float32)
            self.sink.write(block)
            self.written += block.shape[-1]


def decompress_streaming(input: Path, output: Path, codec: Codec, *, overwrite: bool = False,
                          native: bool = False, strategy: str = "clip",
                          recover: bool = False) -> Decoded | None:  # fmt: skip
    """Decodes ``input`` to ``output`` (any format ``write_audio`` writes) as a stream,
    atomically: at the original rate and channels, or the codec's if ``native``; brought into
    [-1, 1] by ``strategy`` (see :class:`~audiotok.audio.blocks.AudioSink`).

    ``recover`` (unsegmented codecs; the caller checks the stream has its index, which bears
    out the length it is padded to) conceals damage as :func:`~.decode.decode_stream` does:
    what it lost is then returned, as a :class:`~.decode.Decoded` whose ``audio`` is None.

    Raises:
        FormatError: Damage or truncation (found as it comes: no output is left behind).
    """
    from ..audio.blocks import AudioSink
    from ..audio.write import Normalization

    with open(input, "rb") as f, AtokReader(f) as reader:
        header = reader.header
        if recover and header.segment_length:
            raise TokensError("a segmented stream is recovered in one pass, not streamed")
        reader.priors = codec.entropy_priors
        index = reader.index() if header.length is None or header.original_length is None else None
        if native:
            rate, channels = header.sample_rate, header.channels
            length = header.length if header.length is not None else index and index.length
        else:
            rate, channels = header.original_sample_rate, header.original_channels
            length = header.original_length
            if length is None:
                length = index.original_length if index else None
        sink = AudioSink(output, rate, channels, from_rate=header.sample_rate, length=length,
                         overwrite=overwrite, normalization=Normalization(strategy))  # fmt: skip
        # Decoding takes the codes' K whatever the bandwidth: the stream's own (for encoding)
        # is the default, which any codec has (an ONNX export may list fewer bandwidths).
        # Unsegmented streams are decoded run by run, each run on a state of its own (_Runs).
        segmented = codec.streaming(1) if header.segment_length else contextlib.nullcontext()
        with sink, segmented as stream:
            segments, runs = None, _Runs(codec, sink, int(header.hop_length))
            if header.segment_length:
                coded = header.length if header.length is not None else index and index.length
                if coded is None:
                    raise TokensError("a segmented stream of unknown length can't be streamed")
                segments = _SegmentFeeder(header, coded)
            decoded = 0
            try:
                for offset, packet in reader.packets(recover=recover):
                    codes = reader.decode(packet, offset)[None]
                    codes = as_framework(codes, codec.framework, device=codec.device)
                    decoded += packet.num_frames
                    if segments is None:
                        runs.add(packet.first_frame, codes)
                        continue
                    for seg_codes, scale in segments.add(codes, packet.scales):
                        sink.write(to_numpy(stream.decode(seg_codes, scale)[0]))
            except FormatError as exc:  # the sink, aborted, leaves no file behind
                if not recover:
                    hint_damage(exc)
                raise
            if reader.truncated_at is not None and not recover:
                error = TruncatedError("truncated: the data ends before its index",
                                       reader.truncated_at)  # fmt: skip
                raise error.with_hint(*TRUNCATED_HINT).in_file(reader.name)
            if segments is not None and segments.next < len(segments.frames):
                raise TokensError(
                    f"{input}: holds {segments.next} whole segments of "
                    f"{len(segments.frames)} (codes or scales missing)"
                )
            # What is still owed: non-causal decoders' lookahead, the last segments' overlap.
            if segments is None:
                stated = reader.stream_index and reader.stream_index.length
                runs.finish(header.length if header.length is not None else stated)
            else:
                sink.write(to_numpy(stream.decode_end()[0]))
        if not recover:
            return None
        index = reader.stream_index
        total = header.num_frames() if header.length is not None else index and index.total_frames
        return Decoded(None, rate, header, reader.damage, reader.truncated_at,
                       max(0, (total or decoded) - decoded), reader.trailing_at)  # fmt: skip


def encode_streaming(path: Path, codec: Codec, bandwidth: float | None) -> Tokens:
    """The tokens of the audio file ``path``, coded block by block as
    :func:`compress_streaming` codes them: memory holds the codes, never the whole audio.

    For formats that keep all the codes in one array (``.ecdc``, token files).

    Returns:
        Tokens with codes ``[1, K, F]`` (and scales ``[1, S]`` for segmented codecs), the
        length of the audio at the codec's rate.
    """
    from ..audio.blocks import AudioBlocks

    blocks = AudioBlocks(path, codec.sample_rate, codec.channels)
    bandwidth = codec.check_bandwidth(bandwidth)
    codes: list[Any] = []
    scales: list[Any] = []

    def keep(piece: Any, scale: Any) -> None:
        codes.append(piece)
        if scale is not None:
            scales.append(scale[:, None])

    length = _encode_blocks(blocks, codec, bandwidth, keep)
    return Tokens(
        codes=concat(codes, axis=-1),
        scales=concat(scales, axis=-1) if scales else None,
        length=length,
        sample_rate=codec.sample_rate,
        bandwidth=bandwidth,
        model_id=codec.model_id,
    )


def decode_tokens_streaming(tokens: Tokens, output: Path, codec: Codec, *,
                            overwrite: bool = False, strategy: str = "clip",
                            block_frames: int = 150) -> None:  # fmt: skip
    """Decodes one item's ``tokens`` (codes ``[1, K, F]``) to ``output`` as a stream,
    atomically, ``block_frames`` frames (or one segment) at a time: memory holds a block's
    audio, never the whole signal. At the codec's rate and channels; ``strategy`` as for
    :func:`decompress_streaming`.
    """
    from ..audio.blocks import AudioSink
    from ..audio.write import Normalization
    from ..codec.segments import split_segments

    codes = as_framework(tokens.codes, codec.framework, device=codec.device)
    segment_length, stride = codec.segments or (None, None)
    if segment_length is None:
        spans = [(start, block_frames, None) for start in range(0, codes.shape[-1], block_frames)]
    else:
        segments = split_segments(tokens.length, codec.hop_length, segment_length, stride)
        if tokens.scales is None or tokens.scales.shape[-1] != len(segments):
            raise TokensError(f"the tokens need {len(segments)} scales, one per segment")
        scales = as_framework(tokens.scales, codec.framework, device=codec.device)
        spans = [(s.first_frame, s.frames, scales[:, i]) for i, s in enumerate(segments)]
    sink = AudioSink(output, codec.sample_rate, codec.channels, from_rate=codec.sample_rate,
                     length=tokens.length, overwrite=overwrite,
                     normalization=Normalization(strategy))  # fmt: skip
    with sink, codec.streaming(1) as stream:
        for start, frames, scale in spans:
            part = codes[..., start : start + frames]
            sink.write(to_numpy((stream.decode(part) if scale is None else
                                 stream.decode(part, scale))[0]))  # fmt: skip
        sink.write(to_numpy(stream.decode_end()[0]))
