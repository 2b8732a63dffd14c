"""``.ecdc`` files: the compressed format of Meta's ``encodec`` package (version 0).

Layout (all that ``encodec.compress`` writes)::

    b"ECDC" | version: uint8 = 0 | JSON length: uint32, big-endian | JSON
    then per segment: [scale: float32, big-endian, 48 kHz model only] | payload

The JSON is ``{"m": model, "al": samples, "nc": codebooks, "lm": bool}`` in that key order
(``json.dumps`` with default separators). A segment's payload is either its codes bit-packed
(``lm: false``: 10-bit values, frame after frame, codebook after codebook, the first bit in
the least significant position, the last byte zero-padded) or an arithmetic-coded stream
whose probabilities come from the entropy-coding LM (``lm: true``, see :mod:`.ecdc_lm`). Only
``encodec_24khz`` (one segment) and ``encodec_48khz`` (1 s segments every 0.99 s) exist in
this format; the segments and their frame counts follow from the model and ``al``.

Reading never trusts the header: every inconsistency is a :class:`~audiotok.errors.FormatError`
subclass naming the byte offset, and nothing is allocated beyond what the data can fill.

Example:
    >>> import torch
    >>> from audiotok.codec.tokens import Tokens
    >>> codes = torch.randint(0, 1024, (1, 2, 75))
    >>> tokens = Tokens(codes, None, 24_000, 24_000, 1.5, "encodec_24khz")
    >>> data = write_ecdc(tokens, "encodec_24khz")
    >>> read_ecdc_header(data).num_codebooks, len(data)
    (2, 254)
    >>> torch.equal(read_ecdc(data).codes, codes)
    True
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...audio.read import to_numpy
from ...codec.arrays import as_framework
from ...codec.config import CodecConfig
from ...codec.tokens import Tokens
from ...errors import (
    CheckpointError,
    CorruptDataError,
    FormatError,
    TokensError,
    TruncatedError,
    UnsupportedFormatError,
)
from ...zoo.codec_cards import find_card

if TYPE_CHECKING:
    from .ecdc_lm import EcdcLM

MAGIC = b"ECDC"
VERSION = 0
HEADER = struct.Struct("!4sBI")  # magic, version, JSON length
SCALE = struct.Struct("!f")
ECDC_MODELS = ("encodec_24khz", "encodec_48khz")  # the reference's MODELS table
MAX_JSON_BYTES = 1 << 16  # the reference's JSON is ~60 bytes
MAX_SECONDS = 24 * 3600  # longer claims are damage, not audio
PACK_CHUNK = 1 << 16  # values bit-packed at once; a multiple of 8
MIN_LM_SEGMENT_BYTES = 3  # an arithmetic-coded stream holds at least total_range_bits = 24 bits


@dataclass(frozen=True)
class EcdcHeader:
    """What an ``.ecdc`` header says, checked against the model it names.

    Attributes:
        model: Registry name of the codec (``encodec_24khz`` or ``encodec_48khz``).
        length: Samples per channel of the audio.
        num_codebooks: ``K``, codebooks per frame.
        use_lm: Whether the payload is arithmetic-coded with the LM (else bit-packed).
        sample_rate: The codec's sample rate.
        bandwidth: The bandwidth in kbps that gives ``num_codebooks``.
        payload_offset: Where the first segment starts (header and JSON size).
    """

    model: str
    length: int
    num_codebooks: int
    use_lm: bool
    sample_rate: int
    bandwidth: float
    payload_offset: int

    @property
    def duration(self) -> float:
        """Seconds of audio."""
        return self.length / self.sample_rate


def segment_frames(config: CodecConfig, length: int) -> list[int]:
    """Frames of each segment of a signal of ``length`` samples (``EncodecModel.segments``).

    The reference's encoder gives ``ceil(n / hop)`` frames for a segment of ``n`` samples and
    its writer stores exactly those. (The 0.1.1 release's reader recomputes them as
    ``ceil(n / sample_rate * frame_rate)`` in floats, one too many for a few lengths such as
    6720 samples, fixed on encodec's main branch but never released; we don't.)
    """
    hop = config.hop_length
    seg_len, stride = config.segment_length, config.segment_stride
    if seg_len is None or stride is None:
        return [math.ceil(length / hop)]
    return [math.ceil(min(seg_len, length - start) / hop) for start in range(0, length, stride)]


def _bandwidth(config: CodecConfig, num_codebooks: int) -> float | None:
    found = [b for b in config.target_bandwidths if config.num_codebooks(b) == num_codebooks]
    return found[0] if found else None


def read_ecdc_header(data: bytes) -> EcdcHeader:
    """Reads and checks the header of an ``.ecdc`` file.

    Args:
        data: The file's bytes (at least its header).

    Raises:
        UnsupportedFormatError: Not an ``.ecdc`` file, another version, or a model this
            format does not know.
        TruncatedError: The data ends inside the header.
        CorruptDataError: A header that can't be right (bad JSON, missing or mistyped
            fields, a codebook count no bandwidth gives, a length <= 0 or over 24 h).
    """
    n = len(data)
    head = bytes(data[: min(n, len(MAGIC))])
    if head != MAGIC[: len(head)]:
        raise UnsupportedFormatError(f"not an .ecdc file (starts with {head!r}, not {MAGIC!r})", 0)
    if n < HEADER.size:
        raise TruncatedError(f"the data ends inside the {HEADER.size}-byte header", n)
    _, version, json_size = HEADER.unpack_from(data, 0)
    if version != VERSION:
        raise UnsupportedFormatError(f".ecdc version {version}; only {VERSION} is known", 4)
    if json_size > MAX_JSON_BYTES:
        raise CorruptDataError(f"header announces {json_size} bytes of JSON", 5)
    end = HEADER.size + json_size
    if end > n:
        raise TruncatedError(f"the data ends inside the {json_size}-byte JSON header", n)
    at = HEADER.size
    try:
        meta = json.loads(bytes(data[at:end]).decode("utf-8"))
    except Exception as exc:  # UnicodeError, JSONDecodeError, RecursionError, int limits
        raise CorruptDataError(
            f"the JSON header does not parse ({type(exc).__name__})", at
        ) from None
    if not isinstance(meta, dict):
        raise CorruptDataError("the JSON header is not an object", at)
    missing = [key for key in ("m", "al", "nc", "lm") if key not in meta]
    if missing:
        raise CorruptDataError(f"the JSON header lacks {', '.join(missing)}", at)
    model, length, num_codebooks, use_lm = meta["m"], meta["al"], meta["nc"], meta["lm"]
    if not isinstance(model, str) or model not in ECDC_MODELS:
        raise UnsupportedFormatError(
            f"model {model!r} is not one of the .ecdc models ({', '.join(ECDC_MODELS)})", at
        )
    config = find_card(model).config
    # bool is an int subclass: type() keeps true/false out of the integer fields.
    if type(length) is not int or not 0 < length <= MAX_SECONDS * config.sample_rate:
        raise CorruptDataError(f"audio length {length!r} is not in (0, 24 h]", at)
    bandwidth = _bandwidth(config, num_codebooks) if type(num_codebooks) is int else None
    if bandwidth is None:
        valid = sorted({config.num_codebooks(b) for b in config.target_bandwidths})
        raise CorruptDataError(
            f"{num_codebooks!r} codebooks is no bandwidth of {model} (one of {valid})", at
        )
    if not isinstance(use_lm, bool):
        raise CorruptDataError(f"'lm' must be true or false, not {use_lm!r}", at)
    return EcdcHeader(model, length, num_codebooks, use_lm, config.sample_rate, bandwidth, end)


def pack_codes(values: np.ndarray, bits: int) -> bytes:
    """``encodec``'s ``BitPacker``: values ``[N]`` of ``bits`` bits, first bit lowest, flushed.

    Works through ``PACK_CHUNK`` values at a time (whole bytes, as the chunk is a multiple of
    8 values) so that the bit matrix stays small however long the signal.
    """
    values = np.asarray(values).astype(np.uint32)
    shifts = np.arange(bits, dtype=np.uint32)
    pieces = []
    for start in range(0, len(values), PACK_CHUNK):
        spread = ((values[start : start + PACK_CHUNK, None] >> shifts) & 1).astype(np.uint8)
        pieces.append(np.packbits(spread.ravel(), bitorder="little").tobytes())
    return b"".join(pieces)


def unpack_codes(data: bytes | memoryview, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: the first ``count`` values (int64 ``[count]``).

    ``data`` must hold at least ``ceil(count * bits / 8)`` bytes.
    """
    out = np.empty(count, dtype=np.int64)
    weights = np.left_shift(1, np.arange(bits, dtype=np.int64))
    for start in range(0, count, PACK_CHUNK):
        n = min(PACK_CHUNK, count - start)
        chunk = np.frombuffer(
            data, dtype=np.uint8, count=(n * bits + 7) // 8, offset=start * bits // 8
        )
        spread = np.unpackbits(chunk, bitorder="little")[: n * bits].reshape(n, bits)
        out[start : start + n] = spread @ weights
    return out


def _packed_size(frames: int, num_codebooks: int, bits: int) -> int:
    return (frames * num_codebooks * bits + 7) // 8


def _check_tokens(tokens: Tokens, config: CodecConfig, name: str, lm: EcdcLM | None) -> None:
    if tokens.batch_size != 1:
        raise TokensError(f".ecdc files hold one signal: batch size 1, not {tokens.batch_size}")
    if tokens.sample_rate != config.sample_rate:
        raise TokensError(f"tokens at {tokens.sample_rate} Hz don't fit {name}")
    if _bandwidth(config, tokens.num_codebooks) is None:
        raise TokensError(f"{tokens.num_codebooks} codebooks is no bandwidth of {name}")
    if not 0 < tokens.length <= MAX_SECONDS * config.sample_rate:
        raise TokensError(f"length {tokens.length} is not in (0, 24 h]")
    frames = segment_frames(config, tokens.length)
    if tokens.num_frames != sum(frames):
        raise TokensError(
            f"{tokens.num_frames} frames don't fit {tokens.length} samples ({sum(frames)})"
        )
    if config.normalize != (tokens.scales is not None):
        raise TokensError(f"{name} {'needs' if config.normalize else 'has no'} scales")
    if tokens.scales is not None and tokens.scales.shape[1] != len(frames):
        raise TokensError(f"{tokens.scales.shape[1]} scales for {len(frames)} segments")
    if tokens.codes.min() < 0 or tokens.codes.max() >= config.bins:
        raise TokensError(f"codes must be in [0, {config.bins})")
    if lm is not None and (lm.n_q != config.n_q or lm.card != config.bins):
        raise TokensError(f"the LM ({lm.n_q} codebooks of {lm.card}) is not one for {name}")


def _lm_encode(lm: EcdcLM, codes: Any) -> bytes:
    """One segment's codes ``[K, F]`` arithmetic-coded, frame after frame as the reference."""
    # The LM (and so LM coding) is torch's; bit-packed files need no torch.
    from .arithmetic import ArithmeticCoder, build_stable_quantized_cdf

    codes = as_framework(codes, "pt")
    coder = ArithmeticCoder()
    stream = lm.stream(codes.shape[0])
    for t in range(codes.shape[1]):
        cdfs = build_stable_quantized_cdf(stream.probabilities())  # the K CDFs at once
        coder.push_frame(codes[:, t], cdfs)
        stream.feed(codes[:, t])
    return coder.finish()


def write_ecdc(tokens: Tokens, model_name: str, *, lm: EcdcLM | None = None) -> bytes:
    """The ``.ecdc`` file of ``tokens``, byte-identical to ``encodec.compress.compress``'s.

    Args:
        tokens: Codes ``[1, K, F]`` of ``model_name`` (scales ``[1, S]`` for 48 kHz).
        model_name: ``encodec_24khz`` or ``encodec_48khz`` (or an alias).
        lm: The model's entropy-coding LM (:func:`~.ecdc_lm.load_ecdc_lm`) to arithmetic-code
            the codes (``lm: true``, about 25% smaller, slow); None bit-packs them.

    Returns:
        The file's bytes.

    Raises:
        TokensError: (a ``ValueError``) a model without ``.ecdc`` support, a batch of more
            than one signal, or tokens that don't fit the model.
    """
    card = find_card(model_name)
    if card is None or card.name not in ECDC_MODELS:
        raise TokensError(
            f"model {model_name!r} has no .ecdc format; use {' or '.join(ECDC_MODELS)}"
        )
    config = card.config
    _check_tokens(tokens, config, card.name, lm)
    # Key order and json.dumps' default separators make the reference's bytes.
    meta = {"m": card.name, "al": int(tokens.length), "nc": tokens.num_codebooks}
    meta["lm"] = lm is not None
    meta_bytes = json.dumps(meta).encode("utf-8")
    out = bytearray(HEADER.pack(MAGIC, VERSION, len(meta_bytes)) + meta_bytes)
    codes = to_numpy(tokens.codes[0])
    first = 0
    for i, frames in enumerate(segment_frames(config, tokens.length)):
        if tokens.scales is not None:
            out += SCALE.pack(float(tokens.scales[0, i]))
        segment = codes[:, first : first + frames]
        if lm is None:
            out += pack_codes(segment.T.ravel(), config.bits_per_codebook)
        else:
            out += _lm_encode(lm, segment)
        first += frames
    return bytes(out)


def _read_scale(data: bytes, at: int) -> float:
    (scale,) = SCALE.unpack_from(data, at)
    if not (math.isfinite(scale) and scale > 0):
        raise CorruptDataError(f"segment scale {scale} is not a positive number", at)
    return scale


def _read_raw(data: bytes, header: EcdcHeader, config: CodecConfig) -> tuple[list, list]:
    frames = segment_frames(config, header.length)
    k, bits = header.num_codebooks, config.bits_per_codebook
    scale_size = SCALE.size if config.normalize else 0
    # The whole layout is known: check the size before allocating anything.
    expected = header.payload_offset + sum(scale_size + _packed_size(f, k, bits) for f in frames)
    if len(data) < expected:
        raise TruncatedError(
            f"the bit-packed codes need {expected} bytes, not {len(data)}", len(data)
        )
    if len(data) > expected:
        raise CorruptDataError(f"{len(data) - expected} bytes after the last segment", expected)
    codes, scales = [], []
    view = memoryview(data)
    at = header.payload_offset
    for f in frames:
        if scale_size:
            scales.append(_read_scale(data, at))
            at += scale_size
        size = _packed_size(f, k, bits)
        codes.append(unpack_codes(view[at : at + size], f * k, bits).reshape(f, k).T)
        at += size
    return codes, scales


def _check_lm_size(data: bytes, header: EcdcHeader, config: CodecConfig) -> None:
    """Fails early (before the LM is loaded) on data too short for the segments announced."""
    segments = len(segment_frames(config, header.length))
    scale_size = SCALE.size if config.normalize else 0
    least = header.payload_offset + segments * (scale_size + MIN_LM_SEGMENT_BYTES)
    if len(data) < least:
        raise TruncatedError(f"{segments} coded segments need at least {least} bytes", len(data))


def _read_lm(data: bytes, header: EcdcHeader, config: CodecConfig, lm: EcdcLM) -> tuple[list, list]:
    import torch

    from .arithmetic import BIT_REVERSE, ArithmeticDecoder, build_stable_quantized_cdf

    if lm.n_q != config.n_q or lm.card != config.bins:
        raise CheckpointError(f"the LM ({lm.n_q} codebooks of {lm.card}) is not {header.model}'s")
    frames = segment_frames(config, header.length)
    scale_size = SCALE.size if config.normalize else 0
    reversed_data = data.translate(BIT_REVERSE)  # once for all segments
    codes, scales = [], []
    at = header.payload_offset
    try:
        for f in frames:
            if scale_size:
                if at + scale_size > len(data):
                    raise TruncatedError("the data ends before a segment's scale", len(data))
                scales.append(_read_scale(data, at))
                at += scale_size
            decoder = ArithmeticDecoder(data, at, reversed_data=reversed_data)
            stream = lm.stream(header.num_codebooks)
            # Grown frame by frame: memory follows the data decoded, not the header's claim.
            segment: list[list[int]] = []
            for _ in range(f):
                cdfs = build_stable_quantized_cdf(stream.probabilities())
                segment.append(decoder.pull_frame(cdfs))
                stream.feed(torch.tensor(segment[-1]))
            codes.append(np.array(segment, dtype=np.int64).T)
            at = decoder.position
        if at != len(data):
            raise CorruptDataError(f"{len(data) - at} bytes after the last segment", at)
    except FormatError as exc:
        # A decoder fed other probabilities than the encoder's loses sync at once and ends
        # with bytes left over or missing: say so, as that is not visible from the bytes.
        hint = (
            "; unless the file is damaged, the LM computes differently here than where the "
            "file was written (torch version, CPU, or threads: "
            f"torch.get_num_threads() = {torch.get_num_threads()} here; see docs/ECDC.md)"
        )
        raise type(exc)(exc.message + hint, exc.offset) from None
    return codes, scales


def read_ecdc(data: bytes, *, lm_loader: Callable[[str], EcdcLM] | None = None,
              framework: str = "pt") -> Tokens:  # fmt: skip
    """Decodes an ``.ecdc`` file (written by ``encodec`` or :func:`write_ecdc`) to tokens.

    Args:
        data: The file's bytes.
        lm_loader: Gives the LM for a model name when the file is LM-coded; None uses
            :func:`~.ecdc_lm.load_ecdc_lm` (the official weights, from the cache or downloaded).
        framework: The tokens' arrays: ``"pt"`` (torch) or ``"np"`` (numpy; a bit-packed
            file then decodes without torch, an LM-coded one needs it anyway).

    Returns:
        Tokens with codes ``[1, K, F]``, scales ``[1, S]`` for the 48 kHz model, the length,
        sample rate, bandwidth and model of the header.

    Raises:
        FormatError: Any damage (a subclass: :class:`~audiotok.errors.TruncatedError`,
            :class:`~audiotok.errors.UnsupportedFormatError`,
            :class:`~audiotok.errors.CorruptDataError`), with the byte offset.
        ModelNotAvailableError: The file is LM-coded and the LM's weights can't be had.
    """
    data = bytes(data)
    header = read_ecdc_header(data)
    config = find_card(header.model).config
    if header.use_lm:
        _check_lm_size(data, header, config)
        if lm_loader is None:
            from .ecdc_lm import load_ecdc_lm as lm_loader
        lm = lm_loader(header.model)
        codes, scales = _read_lm(data, header, config, lm)
    else:
        codes, scales = _read_raw(data, header, config)
    tokens = Tokens(
        codes=np.concatenate(codes, axis=1)[None],
        scales=np.array([scales], np.float32) if config.normalize else None,
        length=header.length,
        sample_rate=header.sample_rate,
        bandwidth=header.bandwidth,
        model_id=header.model,
    )
    return tokens.as_framework(framework)
