"""The .atok lengths (header and index) are checked against each other and the packets.

Decoders size their output from these lengths: a header that says 24 h on a 3 s stream
asked numpy for 7.7 GiB (a traceback), one that says 25 s on a 30 s stream lost 5 s silently.
"""

from __future__ import annotations

import dataclasses
import io
import re
import tracemalloc

import numpy as np
import pytest
import torch

from audiotok.compression.container.header import Header
from audiotok.compression.container.index import TRAILER_SIZE, Index
from audiotok.compression.container.reader import AtokReader
from audiotok.compression.container.writer import AtokWriter
from audiotok.compression.decode import decode_stream
from audiotok.compression.encode import compress
from audiotok.errors import CorruptDataError

DAY = 24 * 3600 * 24_000


def stream(codec, samples: int = 48_000, rate: int = 24_000) -> bytes:
    x = torch.randn(1, samples, generator=torch.Generator().manual_seed(0)) * 0.1
    return compress(codec, x, rate)


def with_header(data: bytes, **fields) -> bytes:
    """``data`` with header fields replaced (same size: u64 lengths keep their width)."""
    with AtokReader(data) as reader:
        header, size = reader.header, reader.header_size
    new = dataclasses.replace(header, **fields).to_bytes()
    assert len(new) == size
    return new + data[size:]


def index_offset(data: bytes) -> int:
    return Index.trailer_offset(data[-TRAILER_SIZE:])


@pytest.mark.parametrize("recover", [False, True])
@pytest.mark.parametrize("length", [DAY, 1 << 40, 24_000])  # 24 h, 4 TiB of float32, 1 s
def test_a_header_length_the_index_contradicts_is_refused(codec, length, recover):
    data = with_header(stream(codec), length=length, original_length=length)
    with pytest.raises(CorruptDataError, match=f"header says {length} samples, the index 48000"):
        decode_stream(data, codec, recover=recover)
    with pytest.raises(CorruptDataError) as info:
        decode_stream(data, codec)
    assert info.value.offset == index_offset(data)


def test_header_lengths_that_contradict_each_other_are_refused(codec):
    data = with_header(stream(codec, 88_200, 44_100), original_length=2 * 10**9)
    with pytest.raises(CorruptDataError, match="original length 2000000000 at 44100 Hz") as info:
        Header.from_bytes(data)
    # magic, version, size; model id; fingerprint; then 35 bytes up to original_length
    assert info.value.offset == 10 + 1 + len(codec.model_id) + 16 + 35
    assert data[info.value.offset : info.value.offset + 8] == (2 * 10**9).to_bytes(8, "big")
    # Resampling rounds (44101 samples are 24000.54 at 24 kHz, recorded as 24001): agreed.
    assert Header.from_bytes(stream(codec, 44_101, 44_100)).length == 24_001


def test_a_streamed_header_without_length_is_checked_against_the_index(codec):
    """Streamed files leave the header's length unknown; the original one is still checked."""
    data = with_header(stream(codec), length=None, original_length=2 * 10**9)
    with pytest.raises(CorruptDataError, match="2000000000 original samples, the index 48000"):
        decode_stream(data, codec, recover=True)


def test_an_index_length_the_frames_contradict_is_refused(codec):
    tokens = codec.encode(torch.randn(1, 24_000) * 0.1)
    out = io.BytesIO()
    with AtokWriter.for_codec(out, codec, bandwidth=tokens.bandwidth) as writer:
        writer.write(tokens.codes[0])
        writer.close(length=DAY)  # the header does not say; the index lies
    with pytest.raises(CorruptDataError, match=f"index length {DAY} does not make its 75 frames"):
        decode_stream(out.getvalue(), codec, recover=True)


def test_info_reports_the_contradiction(codec, tmp_path):
    from audiotok.compression.container.inspect import describe

    path = tmp_path / "short.atok"
    path.write_bytes(with_header(stream(codec), length=36_000, original_length=36_000))
    problems = describe(path)["problems"]
    assert problems == [f"the header says 36000 samples, the index 48000 (at byte "
                        f"{index_offset(path.read_bytes())})"]  # fmt: skip


def test_decompress_file_refuses_before_streaming(codec, tmp_path, monkeypatch):
    """The header's length picked the streaming path; the index is now checked first."""
    import audiotok.compression.streams as streams
    from audiotok.compression.files import decompress_file

    def never(*args, **kwargs):
        raise AssertionError("streamed a file whose header lies")

    monkeypatch.setattr(streams, "decompress_streaming", never)
    path = tmp_path / "lies.atok"
    path.write_bytes(with_header(stream(codec), length=DAY, original_length=DAY))
    with pytest.raises(CorruptDataError, match="header says 2073600000 samples"):
        decompress_file(path, tmp_path / "out.wav", codec)
    assert not (tmp_path / "out.wav").exists()


def test_audio_sink_pads_in_bounded_memory(tmp_path):
    from audiotok.audio.blocks import AudioSink

    length = 4_000_000  # 16 MB of float32 as one array of zeros
    tracemalloc.start()
    with AudioSink(tmp_path / "pad.wav", 24_000, 1, from_rate=24_000, length=length) as sink:
        sink.write(np.zeros((1, 100), np.float32))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 4 << 20, f"padding allocated {peak} bytes"
    import soundfile as sf

    assert sf.info(str(tmp_path / "pad.wav")).frames == length


@pytest.mark.parametrize("length", [1 << 40, DAY])  # 4 TiB of float32; 24 h, 16 GiB
def test_a_cut_stream_said_to_be_long_is_refused_before_recovering(codec, length, monkeypatch):
    """Cut before its index, nothing bears out the header's length: recover padded up to it
    in one allocation (a MemoryError, or the kernel's kill, the CLI said "out of memory")."""
    import audiotok.compression.decode as decode
    from audiotok.errors import FormatError

    data = stream(codec)
    cut = with_header(data, length=length, original_length=length)[: index_offset(data) - 10]
    monkeypatch.setattr(decode, "available_memory", lambda: 8 << 30, raising=False)  # 8 GiB
    stated = f"rebuild {length / 24_000 / 3600:.1f} h (its stated length; 1.00 s of it are here"
    with pytest.raises(FormatError, match=re.escape(stated)) as info:
        decode_stream(cut, codec, recover=True)
    assert "may be a damaged header" in str(info.value) and "\n" not in str(info.value)
    # The same file at its true length recovers: its first second, then a second of silence.
    honest = decode_stream(data[: index_offset(data) - 10], codec, recover=True).audio
    assert honest.shape[-1] == 48_000
    assert honest[:, :24_000].abs().max() > 0 and honest[:, 24_000:].abs().max() == 0


def test_a_containers_memory_limit_bounds_what_is_available(tmp_path):
    """In a pod of 4 GiB on a host of 256, /proc/meminfo shows the host's memory: the cgroup's
    limit less its working set (usage less the inactive page cache) is what can be taken."""
    from audiotok.runtime.memory import available_memory, cgroup_room

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text(f"{4 << 30}\n")
    (v2 / "memory.current").write_text(f"{3 << 30}\n")
    (v2 / "memory.stat").write_text(f"anon 123\ninactive_file {1 << 30}\nactive_file 5\n")
    assert cgroup_room(v2) == 2 << 30
    (v2 / "memory.max").write_text("max\n")
    assert cgroup_room(v2) is None  # no limit: the machine's bound alone
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text(f"{1 << 30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{1 << 29}\n")
    assert cgroup_room(v1) == 1 << 29  # no memory.stat: usage counted whole
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_room(v1) is None
    assert cgroup_room(tmp_path / "nothing") is None and available_memory() > 0
