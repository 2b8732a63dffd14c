"""The .atok container: round trips, streaming, random access, damage and truncation."""

from __future__ import annotations

import io
import math
import re
import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_codec

from audiotok.compression.container.atok import read_tokens, write_tokens
from audiotok.compression.container.header import Header
from audiotok.compression.container.reader import AtokReader
from audiotok.compression.container.writer import AtokWriter
from audiotok.compression.decode import decode_stream, decompress
from audiotok.compression.encode import compress
from audiotok.errors import (
    AudioError,
    ChecksumError,
    FormatError,
    TokensError,
    TruncatedError,
    UnsupportedFormatError,
)


def noise(channels: int, samples: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(channels, samples, generator=torch.Generator().manual_seed(seed)) * 0.1


class Pipe(io.RawIOBase):
    """A write-only, non-seekable sink, like a pipe."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)


class ForwardOnly(io.RawIOBase):
    """A read-only, non-seekable source, like a pipe."""

    def __init__(self, data: bytes) -> None:
        self.inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.inner.read(min(len(buffer), 97))  # short reads, as pipes give
        buffer[: len(chunk)] = chunk
        return len(chunk)


@pytest.mark.parametrize("entropy", ["adaptive", "raw"])
def test_round_trip_equals_codec_decode_encode(codec, entropy):
    x = noise(1, 24_000 * 2 + 123)
    data = compress(codec, x, 24_000, 0.6, entropy=entropy)
    audio, rate = decompress(data, codec)
    assert rate == 24_000
    assert torch.equal(audio, codec.decode(codec.encode(x, bandwidth=0.6))[0])


def test_segmented_round_trip_with_scales(segmented_codec):
    x = noise(2, 48_000 // 3 + 7)
    data = compress(segmented_codec, x, 48_000, 2.4)
    tokens = segmented_codec.encode(x, bandwidth=2.4)
    back = read_tokens(data)
    assert torch.equal(back.codes, tokens.codes) and torch.equal(back.scales, tokens.scales)
    audio, _ = decompress(data, segmented_codec)
    assert torch.equal(audio, segmented_codec.decode(tokens)[0])


def test_original_rate_and_channels_are_restored(codec):
    x = noise(2, 44_100)
    audio, rate = decompress(compress(codec, x, 44_100), codec)
    assert rate == 44_100 and audio.shape == x.shape
    native, native_rate = decompress(compress(codec, x, 44_100), codec, native=True)
    assert native_rate == 24_000 and native.shape == (1, 24_000)


def test_compress_refuses_what_the_header_cannot_record(codec):
    """A rate of 44100.7 Hz was recorded as 44100; packets of 1e9 s overflowed struct."""
    wav = torch.randn(1, 4410) * 0.1
    with pytest.raises(AudioError, match=r"whole numbers of Hz, not 44100\.7"):
        compress(codec, wav, 44_100.7)
    for seconds in (1e9, 0.0, float("nan")):
        with pytest.raises(ValueError, match=r"packet_seconds must be in \(0, 3600\]"):
            compress(codec, wav, 44_100, packet_seconds=seconds)


def test_header_records_the_stream(codec):
    data = compress(codec, noise(2, 30_000), 44_100, 0.6, metadata={"title": "Été", "k": ""})
    with AtokReader(data) as reader:
        h = reader.header
    assert (h.model_id, h.sample_rate, h.channels, float(h.frame_rate)) == ("tiny", 24_000, 1, 75.0)
    assert (h.cardinality, h.num_codebooks, h.bandwidth_bps) == (16, 2, 600)
    assert (h.original_sample_rate, h.original_channels, h.original_length) == (44_100, 2, 30_000)
    assert h.length == round(30_000 * 24_000 / 44_100)
    assert h.metadata == {"title": "Été", "k": ""}
    assert h.fingerprint == codec.fingerprint() and len(h.fingerprint) == 16
    assert h.frames_per_packet == 75 and h.coder_id == 1


def test_streaming_writer_equals_one_shot_and_works_on_a_pipe(codec):
    x = noise(1, 24_000 * 3)
    tokens = codec.encode(x)
    one_shot = io.BytesIO()
    write_tokens(one_shot, tokens, codec)
    pipe = Pipe()
    with AtokWriter.for_codec(pipe, codec, bandwidth=tokens.bandwidth) as writer:
        for start in range(0, tokens.num_frames, 31):  # chunks that straddle packets
            writer.write(tokens.codes[0, :, start : start + 31])
        writer.close(length=tokens.length)
    streamed = b"".join(pipe.chunks)
    assert read_tokens(streamed).codes.equal(tokens.codes)
    # The streaming header does not know the length; the index carries it.
    assert read_tokens(streamed).length == tokens.length
    assert len(streamed) == len(one_shot.getvalue())


def test_reader_works_on_a_forward_only_source(codec):
    x = noise(1, 24_000 * 2)
    data = compress(codec, x)
    audio, _ = decompress(ForwardOnly(data), codec)
    assert torch.equal(audio, decompress(data, codec)[0])


def test_seek_index_gives_random_access(codec):
    tokens = codec.encode(noise(1, 24_000 * 4 + 5), bandwidth=0.6)
    buffer = io.BytesIO()
    write_tokens(buffer, tokens, codec)
    with AtokReader(buffer.getvalue()) as reader:
        index = reader.index()
        assert index is not None and [f for f, _ in index.entries] == [0, 75, 150, 225, 300]
        assert index.total_frames == tokens.num_frames and index.length == tokens.length
        frame, offset = index.entries[3]
        packet = reader.read_packet(offset)
        codes = reader.decode(packet, offset)
    assert packet.first_frame == frame
    assert np.array_equal(codes, tokens.codes[0, :, 225:300].numpy())


def test_wrong_codec_is_refused(codec):
    data = compress(codec, noise(1, 4000))
    other = tiny_codec(seed=1)
    with pytest.raises(TokensError, match="other weights"):
        decompress(data, other)
    with pytest.raises(TokensError, match="sample rate is 24000"):
        decompress(data, tiny_codec(sample_rate=16_000, ratios=(5, 4, 4, 2)))


def test_decoding_without_a_codec_needs_a_registry_model(codec):
    with pytest.raises(TokensError, match="model 'tiny', which is not in the registry"):
        decompress(compress(codec, noise(1, 4000)))


def test_truncated_file_is_an_error_unless_recovering(codec):
    x = noise(1, 24_000 * 5)
    data = compress(codec, x, 24_000)
    full = decompress(data, codec)[0]
    with AtokReader(data) as reader:
        offsets = [offset for offset, _ in reader.packets()]
    cut = offsets[3] + 10  # inside packet 3: packets 0 to 2 are complete
    with pytest.raises(TruncatedError) as info:
        decompress(data[:cut], codec)
    assert str(info.value) == (
        f"truncated: 2.00 s of 5.00 s missing (at byte {offsets[3]}); "
        "recover=True decodes what is there"
    )
    assert info.value.offset == offsets[3]
    assert info.value.cli_message.endswith("; --recover decodes what is there")
    lost = rf"after byte {offsets[3]} is incomplete or missing: 2\.00 s lost"
    with pytest.warns(UserWarning, match=lost):
        audio, _ = decompress(data[:cut], codec, recover=True)
    assert audio.shape == full.shape, "with recover the timing is kept"
    assert torch.equal(audio[:, : 3 * 24_000], codec.decode(codec.encode(x[:, : 3 * 24_000]))[0])
    assert audio[:, 3 * 24_000 :].abs().max() == 0
    decoded = decode_stream(data[:cut], codec, recover=True)
    assert decoded.lost_frames == 150 and decoded.lost_seconds == 2.0  # what the service says


def test_a_stream_that_lacks_only_its_index_decodes_whole(codec):
    from audiotok.compression.container.index import TRAILER_SIZE, Index

    data = compress(codec, noise(1, 24_000 * 2))
    index_at = Index.trailer_offset(data[-TRAILER_SIZE:])
    with pytest.warns(UserWarning, match=r"incomplete or missing: 0\.00 s lost"):
        audio, _ = decompress(data[:index_at], codec)
    assert torch.equal(audio, decompress(data, codec)[0]), "no audio is missing: no error"


def test_format_errors_name_their_file(codec, tmp_path):
    from audiotok.compression.files import decompress_file

    data = compress(codec, noise(1, 24_000 * 2))
    path = tmp_path / "x.atok"
    named = re.escape(f"{path}: ")
    path.write_bytes(b"ATOX" + data[4:])
    with pytest.raises(UnsupportedFormatError, match=f"^{named}not an .atok file"):
        decompress(path, codec)
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(FormatError, match=f"^{named}.*; recover=True conceals the damage$"):
        decode_stream(path, codec)
    path.write_bytes(data[: len(data) // 2])
    before = sorted(tmp_path.iterdir())
    with pytest.raises(TruncatedError, match=f"^{named}truncated: "):
        decompress_file(path, tmp_path / "x.wav", codec)
    assert sorted(tmp_path.iterdir()) == before, "no output, no temporary file"
    with pytest.raises(TruncatedError, match=f"^{named}the stream ends before its index"):
        read_tokens(path)
    with open(path, "rb") as f, pytest.raises(TruncatedError, match=f"^{named}truncated: "):
        decode_stream(f, codec)


def test_every_truncation_point_decodes_or_raises_format_error(codec):
    data = compress(codec, noise(1, 24_000 * 2 + 500))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cut in range(len(data)):
            try:
                audio, _ = decompress(data[:cut], codec)
            except FormatError:
                continue
            assert audio.shape[-1] <= 24_000 * 2 + 500


def test_every_byte_flip_is_detected(segmented_codec):
    data = compress(segmented_codec, noise(2, 48_000 // 4), 48_000, 2.4, entropy="raw")
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x5A
        with pytest.raises(FormatError):
            decode_stream(bytes(damaged), segmented_codec)


def test_recover_conceals_a_damaged_packet_with_silence_of_the_right_length(segmented_codec):
    x = noise(2, 48_000 // 2)
    data = compress(segmented_codec, x, 48_000, 2.4)
    full = decode_stream(data, segmented_codec).audio
    with AtokReader(data) as reader:
        offsets = [offset for offset, _ in reader.packets()]
    damaged = bytearray(data)
    damaged[offsets[2] + 30] ^= 0xFF  # inside packet 2's payload
    with pytest.raises(ChecksumError) as info:
        decode_stream(bytes(damaged), segmented_codec)
    assert info.value.offset == offsets[2]
    result = decode_stream(bytes(damaged), segmented_codec, recover=True)
    assert result.audio.shape == full.shape
    assert len(result.damage) == 1 and result.damage[0].num_frames == 15
    stride = 4752
    gap = slice(2 * stride + 480, 3 * stride)  # segment 2 alone, away from its neighbours
    assert result.audio[:, gap].abs().max() == 0
    assert torch.equal(result.audio[:, : 2 * stride], full[:, : 2 * stride])
    torch.testing.assert_close(result.audio[:, 4 * stride :], full[:, 4 * stride :])


def test_recover_resynchronises_after_a_damaged_packet_header(codec):
    x = noise(1, 24_000 * 4)
    data = compress(codec, x)
    with AtokReader(data) as reader:
        offsets = [offset for offset, _ in reader.packets()]
    damaged = bytearray(data)
    damaged[offsets[1] : offsets[1] + 4] = b"XXXX"  # the sync word itself
    result = decode_stream(bytes(damaged), codec, recover=True)
    assert result.audio.shape == (1, 24_000 * 4)
    assert result.audio[:, 24_000:48_000].abs().max() == 0
    assert "1.00 s concealed" in result.problems()[0]


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda d: b"ATOX" + d[4:], UnsupportedFormatError, "not an .atok file"),
        (lambda d: d[:4] + b"\x02" + d[5:], UnsupportedFormatError, "major version 2"),
        (lambda d: d[:20] + bytes([d[20] ^ 1]) + d[21:], ChecksumError, "header CRC"),
        (lambda d: d[:7], TruncatedError, "the header size"),
    ],
    ids=["magic", "major", "header-crc", "short"],
)
def test_header_damage_is_reported_with_its_offset(codec, mutate, error, message):
    data = compress(codec, noise(1, 4000))
    with pytest.raises(error, match=message) as info:
        decompress(mutate(data), codec)
    assert info.value.offset is not None
    assert str(info.value).endswith(f"(at byte {info.value.offset})")


def test_newer_minor_version_with_extension_bytes_is_read(codec, monkeypatch):
    """A later minor version may append header fields; this reader skips them."""
    import struct

    from audiotok.compression.container import header as header_module
    from audiotok.compression.container.binary import crc32

    plain_to_bytes = Header.to_bytes

    def with_extension(self):
        body = bytearray(plain_to_bytes(self)[:-4]) + b"future extension"
        body[5] = 7
        body[6:10] = struct.pack(">I", len(body) + 4)
        return bytes(body) + struct.pack(">I", crc32(bytes(body)))

    monkeypatch.setattr(header_module.Header, "to_bytes", with_extension)
    x = noise(1, 30_000)
    data = compress(codec, x)
    monkeypatch.undo()
    with AtokReader(data) as reader:
        assert reader.header.minor == 7
    assert torch.equal(read_tokens(data).codes, codec.encode(x).codes)


def test_header_num_frames_matches_the_codec(codec, segmented_codec):
    for c, length in ((codec, 24_007), (segmented_codec, 12_345)):
        data = compress(c, noise(c.channels, length), c.sample_rate)
        with AtokReader(data) as reader:
            assert reader.header.num_frames() == c.num_frames(length)
    assert math.isclose(
        float(Header.from_bytes(compress(codec, noise(1, 10))[:200]).frame_rate), 75
    )


def test_static_priors_from_the_model_card(tmp_path):
    from audiotok.codec.load import load_codec
    from audiotok.compression.container.adaptive import AdaptiveCoder
    from audiotok.errors import UnsupportedFormatError
    from audiotok.zoo.codec_checkpoints import save_checkpoint

    plain = tiny_codec()
    x = noise(1, 24_000 * 2)
    codes = plain.encode(x, bandwidth=0.6).codes[0].numpy()
    priors = AdaptiveCoder.estimate_priors([codes], 16, budget=1 << 12)
    priors = np.concatenate([priors, np.ones((2, 16), np.uint16)])  # all 4 codebooks
    card = save_checkpoint(plain.model, tmp_path / "p.json", name="tiny", entropy_priors=priors)
    primed = load_codec(card)
    assert np.array_equal(primed.entropy_priors, priors)

    with_priors = compress(primed, x, bandwidth=0.6)
    without = compress(plain, x, bandwidth=0.6)
    assert len(with_priors) < len(without)
    audio, _ = decompress(with_priors, primed)
    assert torch.equal(audio, decompress(without, plain)[0])
    with pytest.raises(UnsupportedFormatError, match="priors"):
        decompress(with_priors, plain)


def test_compress_file_and_decompress_file(codec, tmp_path):
    from audiotok.compression.files import compress_file, decompress_file
    from audiotok.errors import AudiotokError

    source = tmp_path / "in.wav"
    import soundfile as sf

    sf.write(source, noise(2, 22_050).T.numpy(), 22_050, subtype="FLOAT")
    tokens = compress_file(source, tmp_path / "x.atok", codec, bandwidth=0.6)
    assert tokens.bandwidth == 0.6
    with pytest.raises(AudiotokError, match="already exists"):
        compress_file(source, tmp_path / "x.atok", codec)
    result = decompress_file(tmp_path / "x.atok", tmp_path / "out.flac", codec)
    assert result.sample_rate == 22_050 and result.damage == []
    info = sf.info(tmp_path / "out.flac")
    assert (info.samplerate, info.channels, info.frames) == (22_050, 2, 22_050)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.flac", "x.atok"]
