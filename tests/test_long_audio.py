"""Long files: compressed and decompressed as streams, block by block, in bounded memory."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_codec

from audiotok.compression import files
from audiotok.compression.container.atok import read_tokens
from audiotok.compression.container.reader import AtokReader
from audiotok.errors import AudioError, FormatError, TruncatedError


@pytest.fixture
def long_file(tmp_path, monkeypatch):
    """A 3 s stereo 44.1 kHz file, with 'long' meaning more than 1 s for this test."""
    monkeypatch.setattr(files, "STREAM_SECONDS", 1.0)
    rng = np.random.default_rng(0)
    t = np.arange(3 * 44_100) / 44_100
    wav = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)])
    wav += 0.01 * rng.standard_normal(wav.shape)
    path = tmp_path / "long.wav"
    sf.write(path, wav.T.astype(np.float32), 44_100, subtype="FLOAT")
    return path


def forbid_whole_file_io(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a long file must not be read or decoded whole")

    monkeypatch.setattr(files, "read_audio", refuse)
    monkeypatch.setattr(files, "decode_stream", refuse)


def test_long_file_round_trip_streams_and_matches_offline(long_file, tmp_path, monkeypatch):
    codec = tiny_codec()
    offline_atok = tmp_path / "offline.atok"
    tokens = files.compress_file(long_file, offline_atok, codec)  # read whole (shorter path)
    assert tokens is None, "3 s counts as long here: streamed"
    monkeypatch.setattr(files, "STREAM_SECONDS", 1e9)
    files.compress_file(long_file, tmp_path / "whole.atok", codec)
    streamed, whole = read_tokens(offline_atok), read_tokens(tmp_path / "whole.atok")
    assert streamed.length == whole.length
    agree = (streamed.codes == whole.codes).float().mean().item()
    assert agree > 0.99, f"streamed codes agree with offline ones ({agree:.4f})"

    monkeypatch.setattr(files, "STREAM_SECONDS", 1.0)
    forbid_whole_file_io(monkeypatch)
    assert files.decompress_file(offline_atok, tmp_path / "s.wav", codec) is None
    monkeypatch.undo()
    result = files.decompress_file(offline_atok, tmp_path / "o.wav", codec)
    streamed_audio, rate = sf.read(tmp_path / "s.wav", dtype="float32", always_2d=True)
    offline_audio, _ = sf.read(tmp_path / "o.wav", dtype="float32", always_2d=True)
    assert rate == 44_100 and streamed_audio.shape == offline_audio.shape == (3 * 44_100, 2)
    assert result.audio.shape == (2, 3 * 44_100)
    # Same codes, decoders within 1e-5, resampled as a stream or whole: a few 16-bit steps.
    assert np.abs(streamed_audio - offline_audio).max() < 5e-3


def test_streamed_compression_reads_block_by_block(long_file, tmp_path, monkeypatch):
    codec = tiny_codec()
    forbid_whole_file_io(monkeypatch)
    assert files.compress_file(long_file, tmp_path / "x.atok", codec) is None
    tokens = read_tokens(tmp_path / "x.atok")
    assert tokens.length == round(3 * 44_100 * 24_000 / 44_100)
    assert tokens.num_frames == codec.num_frames(tokens.length)


def test_segmented_codecs_stream_by_segment(tmp_path, monkeypatch, segmented_codec):
    # At the model's rate (no resampling), streamed and whole-file paths see the same samples.
    monkeypatch.setattr(files, "STREAM_SECONDS", 0.1)
    rng = np.random.default_rng(1)
    t = np.arange(24_123) / 48_000
    wav = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)])
    wav = (wav + 0.01 * rng.standard_normal(wav.shape)).astype(np.float32)
    source = tmp_path / "long48.wav"
    sf.write(source, wav.T, 48_000, subtype="FLOAT")
    streamed_atok = tmp_path / "streamed.atok"
    with monkeypatch.context() as m:
        forbid_whole_file_io(m)
        assert files.compress_file(source, streamed_atok, segmented_codec) is None
    whole = segmented_codec.encode(torch.from_numpy(wav))
    streamed = read_tokens(streamed_atok)
    assert torch.equal(streamed.codes, whole.codes)
    assert torch.equal(streamed.scales, whole.scales)

    with monkeypatch.context() as m:
        forbid_whole_file_io(m)
        out = tmp_path / "streamed.wav"
        assert files.decompress_file(streamed_atok, out, segmented_codec) is None
    audio, rate = sf.read(out, dtype="float32", always_2d=True)
    expected = segmented_codec.decode(whole)[0].numpy().clip(-1, 1)
    assert rate == 48_000 and audio.shape == expected.T.shape
    # 16-bit output: one step is 3e-5.
    assert np.abs(audio - expected.T).max() < 1e-4


def test_damage_stops_a_streamed_decode_and_leaves_nothing(long_file, tmp_path, monkeypatch):
    codec = tiny_codec()
    atok = tmp_path / "x.atok"
    assert files.compress_file(long_file, atok, codec) is None
    data = bytearray(atok.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the index is intact: the decode streams, and meets it late
    atok.write_bytes(bytes(data))
    before = sorted(tmp_path.iterdir())
    with monkeypatch.context() as m:
        forbid_whole_file_io(m)
        with pytest.raises(FormatError, match=f"^{re.escape(str(atok))}: .*recover=True"):
            files.decompress_file(atok, tmp_path / "x.wav", codec)
    assert sorted(tmp_path.iterdir()) == before, "no output, no temporary file"
    atok.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(TruncatedError, match=r"truncated after \d+\.\d\d s \(at byte \d+\); "):
        files.decompress_file(atok, tmp_path / "x.wav", codec)  # streamed: length unknown
    assert sorted(tmp_path.iterdir()) == before
    assert files.decompress_file(atok, tmp_path / "x.wav", codec, recover=True)


@pytest.mark.parametrize("causal", [True, False])
# The first packet (silence first), a later one, the first and the last (silence at the end).
@pytest.mark.parametrize("which", [(0,), (-2,), (0, -1)])
def test_recovering_a_long_file_streams_as_the_one_pass_recovery(
    long_file, tmp_path, monkeypatch, causal, which
):
    """A damaged long file with its index recovers as a stream (it was decoded whole, however
    long): runs decoded on their own, silence between them, the same file within rounding."""
    from click.testing import CliRunner

    from audiotok.cli import compress_commands
    from audiotok.cli.main import cli

    codec = tiny_codec(causal=causal)
    atok = tmp_path / "x.atok"
    files.compress_file(long_file, atok, codec)
    data = bytearray(atok.read_bytes())
    with AtokReader(atok) as reader:
        offsets = [offset for offset, _ in reader.packets()]
    for packet in which:
        data[offsets[packet] + 20] ^= 0xFF
    atok.write_bytes(bytes(data))
    with monkeypatch.context() as m:
        forbid_whole_file_io(m)
        streamed = files.decompress_file(atok, tmp_path / "s.wav", codec, recover=True)
        m.setattr(compress_commands, "load", lambda *args: codec)
        args = ["decompress", str(atok), str(tmp_path / "c.wav"), "-m", "t", "--recover"]
        said = CliRunner().invoke(cli, args).stderr.strip().splitlines()
    assert streamed.audio is None and streamed.lost_frames > 0
    assert said[0] == f"{tmp_path / 'c.wav'}: 3.00 s, 44100 Hz, 2 ch"  # read from the file
    assert said[1:] == [f"audiotok: warning: {atok}: {line}" for line in streamed.problems()]
    monkeypatch.setattr(files, "STREAM_SECONDS", 1e9)
    whole = files.decompress_file(atok, tmp_path / "o.wav", codec, recover=True)
    assert streamed.problems() == whole.problems()
    assert (streamed.lost_frames, streamed.damage) == (whole.lost_frames, whole.damage)
    s, _ = sf.read(tmp_path / "s.wav", dtype="float32", always_2d=True)
    o, _ = sf.read(tmp_path / "o.wav", dtype="float32", always_2d=True)
    assert s.shape == o.shape == (3 * 44_100, 2)
    assert np.abs(s - o).max() < 5e-3  # as the undamaged stream's test: resampled in blocks
    lost = whole.damage[0]
    first = lost.first_frame * 44_100 // 75 + 200  # inside the gap, past resampling's edges
    assert np.abs(s[first : first + 200]).max() == 0  # the concealed stretch is silent


def test_exact_codes_long_files_in_one_pass(long_file, tmp_path):
    codec = tiny_codec()
    tokens = files.compress_file(long_file, tmp_path / "x.atok", codec, exact=True)
    assert tokens is not None, "exact: one pass in memory, whatever the length"
    assert torch.equal(read_tokens(tmp_path / "x.atok").codes, tokens.codes)
    result = files.decompress_file(tmp_path / "x.atok", tmp_path / "x.wav", codec,
                                         exact=True)  # fmt: skip
    assert result is not None and result.audio.shape == (2, 3 * 44_100)


@pytest.mark.parametrize("strategy", ["clip", "peak", "rms", "loudness"])
def test_streamed_decode_normalises_as_the_one_pass_writer(long_file, tmp_path, strategy):
    """peak, rms and loudness need the whole signal's level: measured in a first pass through
    a temporary file, which is gone afterwards; the output equals the one-pass writer's."""
    codec = tiny_codec()
    atok = tmp_path / "x.atok"
    files.compress_file(long_file, atok, codec)
    before = sorted(tmp_path.iterdir())
    streamed = tmp_path / "s.wav"
    assert files.decompress_file(atok, streamed, codec, strategy=strategy) is None
    assert sorted(tmp_path.iterdir()) == sorted([*before, streamed]), "no temporary left"
    files.decompress_file(atok, tmp_path / "o.wav", codec, strategy=strategy, exact=True)
    a, _ = sf.read(streamed, dtype="float32")
    b, _ = sf.read(tmp_path / "o.wav", dtype="float32")
    # Decoders within 1e-5, resampled as a stream or whole, scaled by the same level.
    assert a.shape == b.shape and np.abs(a - b).max() < 5e-3
    if strategy == "peak":
        assert abs(np.abs(a).max() - 10 ** (-1 / 20)) < 1e-3


@pytest.mark.parametrize("suffix", ["flac", "ogg", "mp3", "opus"])
def test_streamed_decode_writes_every_format(long_file, tmp_path, suffix):
    codec = tiny_codec()
    atok = tmp_path / "x.atok"
    files.compress_file(long_file, atok, codec)
    out = tmp_path / f"x.{suffix}"
    assert files.decompress_file(atok, out, codec) is None
    info = sf.info(out)
    # 44.1 kHz: mp3 takes it, Opus does not (48 kHz then, as write_audio does).
    rate = 48_000 if suffix == "opus" else 44_100
    assert (info.samplerate, info.channels) == (rate, 2)
    assert abs(info.frames / rate - 3.0) < 0.1


def test_streamed_decode_refuses_what_none_cannot_write(tmp_path):
    from audiotok.audio.blocks import AudioSink
    from audiotok.audio.write import Normalization
    from audiotok.errors import AudioError

    sink = AudioSink(tmp_path / "x.wav", 8000, 1, from_rate=8000,
                     normalization=Normalization("none"))  # fmt: skip
    with pytest.raises(AudioError, match="exceed"), sink:
        sink.write(np.zeros((1, 100), np.float32))
        sink.write(np.full((1, 100), 1.5, np.float32))
    assert list(tmp_path.iterdir()) == []


def test_stream_states_hold_no_whole_chunk():
    """Kept samples are copies: a view of a chunk would keep all of it alive, in every layer
    (memory then grows with the chunk size times the number of layers)."""
    from audiotok.codec.streaming import LayerState

    codec = tiny_codec()
    chunk = torch.randn(1, 1, 48_000)
    with codec.streaming(1) as stream:
        codes = stream.encode(chunk)
        stream.decode(codes)
        held = []

        def walk(value: object) -> None:
            if isinstance(value, torch.Tensor):
                held.append(value)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    walk(item)
            elif isinstance(value, LayerState):
                for name, item in vars(value).items():
                    if name != "layer":
                        walk(item)

        walk(stream.encoder)
        walk(stream.decoder)
    assert len(held) > 20
    biggest = max(t.untyped_storage().nbytes() for t in held)
    assert biggest < 100_000, f"a state holds {biggest} bytes: a view of a whole chunk"


# --- formats that hold all the codes in one array (.ecdc, token files) -------------------


def test_token_files_of_long_audio_are_coded_and_decoded_as_streams(long_file, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    """A few kB of codes can stand for hours: neither side may hold the whole audio."""
    codec = tiny_codec()
    with monkeypatch.context() as m:
        forbid_whole_file_io(m)
        m.setattr(codec, "encode", lambda *a, **k: pytest.fail("encoded in one pass"))
        streamed = files.encode_file(long_file, codec, downmix=True)
    whole = files.encode_file(long_file, codec, downmix=True, exact=True)
    assert streamed.length == whole.length and streamed.scales is None
    assert (streamed.codes == whole.codes).float().mean().item() > 0.99

    out = tmp_path / "streamed.wav"
    with monkeypatch.context() as m:
        m.setattr(codec, "decode", lambda *a, **k: pytest.fail("decoded in one pass"))
        files.decode_tokens_file(whole, out, codec)
    audio, rate = sf.read(out, dtype="float32")
    expected = codec.decode(whole)[0][0].numpy().clip(-1, 1)
    assert rate == 24_000 and audio.shape == expected.shape
    assert np.abs(audio - expected).max() < 1e-4  # 16-bit steps
    with pytest.raises(AudioError, match="already exists; pass overwrite=True"):
        files.decode_tokens_file(whole, out, codec)  # nothing overwritten unasked
    import dataclasses

    from audiotok.errors import TokensError

    short = dataclasses.replace(whole, codes=whole.codes[..., :-5])  # frames for no length
    with pytest.raises(TokensError, match="frames, but"):
        files.decode_tokens_file(short, tmp_path / "short.wav", codec)


def test_segmented_token_files_stream_by_segment(tmp_path, monkeypatch, segmented_codec):
    monkeypatch.setattr(files, "STREAM_SECONDS", 0.1)
    rng = np.random.default_rng(2)
    wav = (0.2 * rng.standard_normal((2, 24_123))).astype(np.float32)
    source = tmp_path / "long48.wav"
    sf.write(source, wav.T, 48_000, subtype="FLOAT")
    with monkeypatch.context() as m:
        forbid_whole_file_io(m)
        streamed = files.encode_file(source, segmented_codec)
    whole = segmented_codec.encode(torch.from_numpy(wav))
    assert torch.equal(streamed.codes, whole.codes) and torch.equal(streamed.scales, whole.scales)
    out = tmp_path / "streamed.wav"
    with monkeypatch.context() as m:
        m.setattr(segmented_codec, "decode", lambda *a, **k: pytest.fail("one pass"))
        files.decode_tokens_file(streamed, out, segmented_codec)
    audio, _ = sf.read(out, dtype="float32", always_2d=True)
    expected = segmented_codec.decode(whole)[0].numpy().clip(-1, 1)
    assert audio.shape == expected.T.shape and np.abs(audio - expected.T).max() < 1e-4


def test_long_ecdc_files_stream_through_the_cli(long_file, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from audiotok.cli import compress_commands
    from audiotok.cli.main import cli
    from audiotok.compression.container.ecdc import read_ecdc

    codec = tiny_codec("encodec_24khz")  # the .ecdc format knows only the official names
    monkeypatch.setattr(compress_commands, "load", lambda *args: codec)
    forbid_whole_file_io(monkeypatch)
    monkeypatch.setattr(codec, "encode", lambda *a, **k: pytest.fail("encoded in one pass"))
    monkeypatch.setattr(codec, "decode", lambda *a, **k: pytest.fail("decoded in one pass"))
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke
    result = run(cli, ["compress", str(long_file), "x.ecdc", "-m", "e", "-b", "0.6", "--downmix"])
    assert result.exit_code == 0, result.output
    tokens = read_ecdc((tmp_path / "x.ecdc").read_bytes())
    assert tokens.length == 72_000 and tokens.model_id == "encodec_24khz"
    result = run(cli, ["decompress", "x.ecdc", "x.wav", "-m", "e"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "x.wav: 3.00 s, 24000 Hz, 1 ch"
    monkeypatch.undo()
    audio, _ = sf.read(tmp_path / "x.wav", dtype="float32")
    assert np.abs(audio - codec.decode(tokens)[0][0].numpy().clip(-1, 1)).max() < 1e-4
