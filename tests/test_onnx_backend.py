"""The ONNX Runtime backend (audiotok.codec.onnx_runtime): ``load_codec(..., backend="onnx")``
behind the same Codec interface as torch, on the packaged default, a random-weight model of
each official architecture (the 16 kHz one is the 32 kHz one's: see below) and tiny ones.

Acceptance as for the graphs (tests/test_onnx.py): at least 99.9 % of the codes of real audio
equal torch fp32's (ONNX Runtime's rounding may tip a near tie), decoded audio within 1e-4 of
torch's from the same codes. For the official 24 kHz architecture the same export's graphs are
also checked on their own (tests/onnx_checks.py): each mismatching code a near tie.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import DATA, bare_tiny, tiny_codec

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_checks import check_graphs

from audiotok.codec.load import load_codec
from audiotok.codec.onnx_export import export_onnx
from audiotok.codec.onnx_runtime import OnnxCodec, OnnxRuntimeMissing
from audiotok.errors import CheckpointError, DeviceError
from audiotok.zoo.codec_cards import find_card

MIN_EQUAL = 0.999
AUDIO_TOL = 1e-4


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Exports go to the test's own cache."""
    monkeypatch.setenv("AUDIOTOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def clip(name: str) -> tuple[torch.Tensor, int]:
    wav, rate = sf.read(DATA / name, dtype="float32", always_2d=True)
    return torch.from_numpy(wav.T.copy()), rate


def compare(torch_codec, onnx_codec, wav: torch.Tensor, rate: int, bandwidths) -> None:
    """Codes of every bandwidth equal (>= 99.9 %); decoding torch's codes agrees to 1e-4."""
    for bandwidth in bandwidths:
        ref = torch_codec.encode(wav, rate, bandwidth)
        got = onnx_codec.encode(wav, rate, bandwidth)
        assert isinstance(got.codes, np.ndarray) and got.codes.dtype == np.int64  # numpy's
        assert got.codes.shape == tuple(ref.codes.shape)
        assert got.length == ref.length and got.model_id == ref.model_id
        equal = float((torch.from_numpy(got.codes) == ref.codes).float().mean())
        assert equal >= MIN_EQUAL, (bandwidth, equal)
        if ref.scales is None:
            assert got.scales is None
        else:
            torch.testing.assert_close(torch.from_numpy(got.scales), ref.scales, rtol=1e-5,
                                       atol=1e-7)  # fmt: skip
        expected, audio = torch_codec.decode(ref), torch.from_numpy(onnx_codec.decode(ref))
        assert audio.shape == expected.shape
        assert (audio - expected).abs().max() <= AUDIO_TOL


@pytest.fixture
def default_cache(default_onnx_cache, monkeypatch) -> Path:
    """The run's cache in which ``load_codec(..., backend="onnx")`` exported the packaged
    default (conftest.py): the tests below find that export there instead of making their own."""
    monkeypatch.setenv("AUDIOTOK_CACHE", str(default_onnx_cache))
    return default_onnx_cache


def test_default_model_both_backends_give_the_same_files(default_cache):
    from audiotok.compression.decode import decode_stream
    from audiotok.compression.encode import compress_to

    torch_codec = load_codec("audiotok_24khz")
    # The export is in the cache (the fixture's load_codec made it): found again by its weights
    # file's hash, without loading the model in torch or exporting again.
    with pytest.MonkeyPatch.context() as patch:
        for name in ("torch_load.load_torch_codec", "onnx_export.export_onnx"):
            patch.setattr(f"audiotok.codec.{name}", lambda *a, **k: pytest.fail("not cached"))
        onnx_codec = load_codec("audiotok_24khz", backend="onnx")
    assert isinstance(onnx_codec, OnnxCodec)
    assert onnx_codec.fingerprint() == torch_codec.fingerprint()
    assert np.array_equal(onnx_codec.entropy_priors, torch_codec.entropy_priors)
    assert (onnx_codec.bandwidths, onnx_codec.default_bandwidth) == (
        torch_codec.bandwidths, torch_codec.default_bandwidth)  # fmt: skip
    onnx = default_cache / "onnx"
    (folder,) = (p for p in onnx.iterdir() if p.name != "sources")  # exported once
    assert folder.name == f"audiotok_24khz-{torch_codec.fingerprint().hex()}-v3"
    assert onnx_codec.folder == folder
    (record,) = (onnx / "sources").iterdir()
    assert json.loads(record.read_text())["export"] == folder.name
    assert load_codec(folder).folder == folder  # an export folder loads as it is
    speech, rate = clip("speech_24k.flac")
    # Every bandwidth runs the same two graphs (its codes are the encoder's first K rows, the
    # decoder selects the later stages away): each one's K, then codes and audio at the
    # extremes and at the files' 6 kbps.
    for bandwidth in torch_codec.bandwidths:
        assert onnx_codec.num_codebooks(bandwidth) == torch_codec.num_codebooks(bandwidth)
    bandwidths = torch_codec.bandwidths
    compare(torch_codec, onnx_codec, speech, rate, [bandwidths[0], 6.0, bandwidths[-1]])
    music, rate = clip("music_48k_stereo.flac")
    compare(torch_codec, onnx_codec, music[:, : rate * 2], rate, [6.0])
    # A compressed file is the same bytes from either backend, and decodes with the other.
    files = []
    for codec in (torch_codec, onnx_codec):
        out = io.BytesIO()
        compress_to(out, codec, speech, rate, bandwidth=6.0)
        files.append(out.getvalue())
    assert files[0] == files[1]
    decoded = torch.from_numpy(decode_stream(files[0], onnx_codec).audio)
    expected = decode_stream(files[0], torch_codec).audio
    assert (decoded - expected).abs().max() <= AUDIO_TOL


@pytest.mark.parametrize("arch", ["encodec_24khz", "encodec_48khz", "encodec_32khz"])
def test_random_official_architectures(arch, tmp_path, encodec_package, monkeypatch):
    """Each official architecture, in its official checkpoint format, random weights.

    Not the 16 kHz one: it is the 32 kHz architecture but for its rate and last ratio (2, not
    4; asserted below), and the graphs take any stride alike (a ratio of 2 is in the 24 and
    48 kHz graphs): its export would trace the same layers with other strides
    (tests/test_parity.py checks its registry card and formats)."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    try:
        from exactness_bench import random_official
    finally:
        sys.path.pop(0)
    path = random_official(arch, tmp_path)
    # The 24 kHz model is causal: its export would add the four streaming graphs (about half
    # its time), which nothing here runs: on random official weights no stream equals offline
    # coding (tests/test_onnx_streaming.py checks them on the trained weights).
    monkeypatch.setattr("audiotok.codec.onnx_export.why_not", lambda model: "not run here")
    torch_codec, onnx_codec = load_codec(path), load_codec(path, backend="onnx")
    music, rate = clip("music_48k_stereo.flac")
    bandwidths = sorted({torch_codec.bandwidths[0], torch_codec.bandwidths[-1]})
    if arch == "encodec_32khz":
        sixteen = find_card("encodec_16khz").config
        assert sixteen == replace(torch_codec.config, sample_rate=16_000, ratios=(8, 5, 4, 2))
    if arch != "encodec_48khz":
        compare(torch_codec, onnx_codec, music[:, : int(rate * 0.6)], rate, bandwidths)
    else:
        # Two segments each (1 s, stride 0.99 s), the last one shorter than the widest reflect
        # padding (961 samples): exactly 1 s ends with 480 samples, 47 521 with 1 (after one
        # of 47 521, not the traced 48 000). Exports before format 3 padded them: scales 29 %
        # and 99 % off. (Last segments longer than the overlap: the tiny model's, below.)
        # One bandwidth each: both are the same graphs' (the lower one's codes are the first
        # K rows of the encoder's, and its decoder run selects the later stages away).
        compare(torch_codec, onnx_codec, music[:, :48_000], rate, bandwidths[:1])
        compare(torch_codec, onnx_codec, music[:, :47_521], rate, bandwidths[1:])
    if arch == "encodec_24khz":
        # The same export's graphs, run on their own, mismatch only where a code is a near tie.
        # On speech these random weights give latents that nearly coincide with their codebook
        # entries (calibrated on the same clip): distances of ~3e-7 against |x|^2 ~0.13, below
        # float32's resolution, so torch itself agrees with a float64 argmin on only ~80 % of
        # them, and ONNX Runtime with torch on ~84 %; on music such ties are rarer but flip
        # with torch's thread count (99.8 % equal with one thread, as under pytest -n 2).
        cases = [("music_48k_stereo.flac", 0.37, 0.99), ("speech_24k.flac", 0.37, 0.0)]
        check_graphs(torch_codec, onnx_codec.folder / "model.json", cases)


def test_segmented_tiny_and_short_inputs(segmented_codec, segmented_onnx, tiny_onnx):
    onnx_codec = OnnxCodec(segmented_onnx)
    assert onnx_codec.segments == segmented_codec.segments and onnx_codec.has_scales
    music, rate = clip("music_48k_stereo.flac")
    # The tiny model's 16-entry codebooks tie more often than real ones: 99 % here.
    for n in (int(rate * 0.25), 4801):  # 3 segments; a last segment of one sample
        ref = segmented_codec.encode(music[:, :n], rate)
        got = onnx_codec.encode(music[:, :n], rate).as_framework("pt")
        assert got.codes.shape == ref.codes.shape and got.scales.shape == ref.scales.shape
        assert float((got.codes == ref.codes).float().mean()) >= 0.99
        expected, audio = segmented_codec.decode(ref), torch.from_numpy(onnx_codec.decode(ref))
        assert (audio - expected).abs().max() <= AUDIO_TOL
    # Shorter than every reflect padding of the tiny model's (7 samples): as torch too.
    tiny = tiny_codec()
    short = OnnxCodec(tiny_onnx)
    ref = tiny.encode(music[:1, :7], rate)
    tokens = short.encode(music[:1, :7], rate)
    assert np.array_equal(tokens.codes, ref.codes.numpy())
    assert np.abs(short.decode(tokens) - tiny.decode(ref).numpy()).max() <= AUDIO_TOL


def test_short_last_segments_code_as_torch(tmp_path):
    """A 48 kHz model with 1 s segments, as encodec_48khz: exactly 1 s of audio ends with a
    480-sample segment, 2 s with 960, 47 530 samples with 10, 47 521 with one. The graphs take them
    as they are (format 3): the scale is taken over the segment's own samples, and the
    decoder reflects its few frames as torch does. Exports before padded them to the widest
    reflect padding (961 samples, 4 frames): the scale came out ``sqrt(n / 961)`` times
    torch's, the decoded end ~0.3 off.

    Its reflect-padded, time-group-normed convolutions only, without LSTM and residual units
    (at these lengths the whole official architecture: test_random_official_architectures)."""
    codec = tiny_codec(
        "tiny48", sample_rate=48_000, channels=2, causal=False, norm="time_group_norm",
        normalize=True, segment=1.0, target_bandwidths=(1.2, 2.4), lstm=0, n_residual_layers=0,
    )  # fmt: skip
    onnx_codec = OnnxCodec(export_onnx(codec, tmp_path / "onnx"))
    music, rate = clip("music_48k_stereo.flac")
    wav = torch.stack([music[:, :96_000], music[:, -96_000:]])  # [2, 2, T]: two excerpts
    for n, last in ((48_000, 480), (96_000, 960), (47_530, 10), (47_521, 1)):
        assert codec.model.segments(n)[-1].length == last
        ref = codec.encode(wav[..., :n], rate, 2.4)
        got = onnx_codec.encode(wav[..., :n].numpy(), rate, 2.4).as_framework("pt")
        torch.testing.assert_close(got.scales, ref.scales, rtol=1e-5, atol=1e-7)
        assert torch.equal(got.codes, ref.codes), n
        expected = codec.decode(ref)
        for tokens in (ref, got):  # torch's tokens, and ONNX's own
            audio = torch.from_numpy(onnx_codec.decode(tokens))
            assert (audio - expected).abs().max() <= AUDIO_TOL, n


def test_an_older_export_still_pads_and_says_so(segmented_codec, segmented_onnx, tmp_path):
    """Format 2 sidecars (min_length 961 for 48 kHz) are read with their old behaviour: short
    segments padded before the graph, inexact, with one warning to export again."""
    sidecar = shutil.copytree(segmented_onnx, tmp_path / "onnx") / "model.json"
    meta = json.loads(sidecar.read_text())
    assert (meta["format_version"], meta["min_length"], meta["min_frames"]) == (3, 1, 1)
    meta.update(format_version=2, min_length=961, min_frames=4)
    sidecar.write_text(json.dumps(meta))
    old = OnnxCodec(sidecar.parent)
    music, rate = clip("music_48k_stereo.flac")
    with pytest.warns(UserWarning, match=r"format 2\) codes inputs shorter .* export-onnx -f"):
        tokens = old.encode(music[:, :4801], rate)
    assert tokens.codes.shape[-1] == segmented_codec.num_frames(4801)
    assert np.isfinite(old.decode(tokens)).all()


def test_sent_to_another_process_it_opens_its_folder_again(tiny_onnx):
    codec = OnnxCodec(tiny_onnx)
    again = pickle.loads(pickle.dumps(codec))  # how Ray ships it to its actors
    speech, rate = clip("speech_24k.flac")
    assert np.array_equal(again.encode(speech, rate).codes, codec.encode(speech, rate).codes)


def test_errors_are_one_line(tmp_path, monkeypatch, tiny_onnx):
    from audiotok.cli.main import cli

    folder = shutil.copytree(tiny_onnx, tmp_path / "onnx")  # altered below
    graph = folder / "decoder.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")
    with pytest.raises(CheckpointError, match="SHA-256 differs"):
        OnnxCodec(folder)
    with pytest.raises(CheckpointError, match="not an audiotok ONNX export"):
        OnnxCodec(tmp_path)
    sidecar = json.loads((folder / "model.json").read_text())
    del sidecar["model_id"], sidecar["graphs"]["decoder"]  # was a KeyError
    (folder / "model.json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match=r"model\.json: missing model_id, graphs\.enc"):
        OnnxCodec(folder)
    with pytest.raises(DeviceError, match="CPU"):
        load_codec("audiotok_24khz", backend="onnx", device="meta")
    with pytest.raises(ValueError, match="backend"):
        load_codec("audiotok_24khz", backend="tensorrt")
    runner = CliRunner()
    wav = str(DATA / "speech_24k.flac")
    result = runner.invoke(cli, ["encode", "--backend", "onnx", "--precision", "bf16", wav,
                                 "-o", str(tmp_path / "t.npz")])  # fmt: skip
    assert result.exit_code == 2 and "fp32 graphs" in result.output
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(OnnxRuntimeMissing, match="pip install"):
        OnnxCodec(folder)


def test_cli_compress_and_decompress_on_onnx(tmp_path, default_cache):
    from audiotok.cli.main import cli

    runner = CliRunner()
    wav = str(DATA / "speech_24k.flac")
    outs = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / backend  # -o: the output folder
        result = runner.invoke(cli, ["compress", "--backend", backend, wav, "-o", str(out)])
        assert result.exit_code == 0, result.output
        outs[backend] = (out / "speech_24k.atok").read_bytes()
    assert outs["torch"] == outs["onnx"]
    result = runner.invoke(cli, ["decompress", "--backend", "onnx",
                                 str(tmp_path / "torch" / "speech_24k.atok"),
                                 "-o", str(tmp_path / "back")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sf.info(str(tmp_path / "back" / "speech_24k.wav")).frames == sf.info(wav).frames


def test_an_export_for_fewer_bandwidths_decodes_any(tmp_path, tiny_onnx):
    """The sidecar lists what to encode at; the decoder graph takes any K <= n_q, so files
    and tokens of the same weights at another bandwidth decode, streamed ones (> 20 s) too.

    The run's export of the same weights (conftest.py), its sidecar listing 0.3 kbps only, as
    ``export_onnx(..., bandwidths=[0.3])`` writes it: the graphs are the same for any list
    (tests/test_onnx.py checks the sidecar such an export writes)."""
    from audiotok.compression.files import compress_file, decompress_file

    codec = tiny_codec()
    folder = shutil.copytree(tiny_onnx, tmp_path / "onnx")
    sidecar = json.loads((folder / "model.json").read_text())
    assert sidecar["bandwidths"] == {"0.3": 1, "0.6": 2}
    sidecar["bandwidths"] = {"0.3": 1}
    (folder / "model.json").write_text(json.dumps(sidecar))
    onnx = OnnxCodec(folder)
    assert onnx.bandwidths == (0.3,) and onnx.max_codebooks == codec.config.n_q
    wav = torch.randn(1, 24_000 * 21) * 0.1
    tokens = codec.encode(wav[:, :4800], bandwidth=0.6)  # 2 codebooks, the export lists 1
    np.testing.assert_allclose(
        onnx.decode(tokens.as_framework("np")), codec.decode(tokens).numpy(), atol=1e-4
    )
    sf.write(tmp_path / "long.wav", wav[0].numpy(), 24_000)
    compress_file(tmp_path / "long.wav", tmp_path / "long.atok", codec, bandwidth=0.6)
    assert decompress_file(tmp_path / "long.atok", tmp_path / "long.flac", onnx) is None
    assert sf.info(tmp_path / "long.flac").frames == 24_000 * 21


def test_an_export_leaves_another_process_in_progress_alone(tmp_path, monkeypatch):
    """Working folders were named by pid, and container replicas sharing a cache are all pid 1:
    one export removed the other's half-made folder under it (a FileNotFoundError there)."""
    monkeypatch.setattr("os.getpid", lambda: 1)
    other = tmp_path / ".onnx.1.partial"
    other.mkdir()
    (other / "decoder.onnx").write_bytes(b"another process's graph, being written")
    export_onnx(bare_tiny(), tmp_path / "onnx")  # any model: the same folders
    assert (other / "decoder.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".onnx.1.partial", "onnx"]
