"""ONNX export (audiotok.codec.onnx_export): the graphs run by onnxruntime agree with torch.

Acceptance for the codes: equal, except where a near tie between two codebook entries tips
the other way (ONNX Runtime's convolutions and LSTM round differently from torch's in the
last bits): every mismatch must start at such a tie, and at least 99.9 % of the codes of real
audio must be equal. Decoded audio (from the same codes) must be within 1e-4 of torch's.
Lengths differ from the traced one (0.25 s, or one segment), batch of 2.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import DATA, tiny_codec
from torch.nn import functional as F

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from audiotok.audio.read import convert_audio  # noqa: E402
from audiotok.codec.model import linear_overlap_add  # noqa: E402
from audiotok.codec.onnx_export import OnnxExportError, export_onnx  # noqa: E402
from audiotok.codec.quantization import FactorisedVectorQuantization  # noqa: E402

MIN_EQUAL = 0.999
SPEECH, MUSIC = "speech_24k.flac", "music_48k_stereo.flac"
AUDIO_TOL = 1e-4


def segmented_tiny():
    return tiny_codec(
        "tiny48", sample_rate=48_000, channels=2, causal=False, norm="time_group_norm",
        normalize=True, segment=0.1, target_bandwidths=(1.2, 2.4),
    )  # fmt: skip


def real_audio(name: str, codec, seconds: float) -> torch.Tensor:
    """Two different excerpts of a test clip, ``[2, C, seconds * rate]`` at the codec's rate."""
    wav, rate = sf.read(DATA / name, dtype="float32", always_2d=True)
    wav = convert_audio(torch.from_numpy(wav.T.copy()), rate, codec.sample_rate, codec.channels)
    n = int(seconds * codec.sample_rate)
    starts = (0, (wav.shape[-1] - n) // 2)
    assert wav.shape[-1] >= starts[1] + n
    return torch.stack([wav[:, s : s + n] for s in starts]).contiguous()


def sessions(sidecar: Path) -> tuple[dict, ort.InferenceSession, ort.InferenceSession]:
    meta = json.loads(sidecar.read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2

    def open_(role: str) -> ort.InferenceSession:
        path = str(sidecar.parent / meta["graphs"][role]["file"])
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    return meta, open_("encoder"), open_("decoder")


def check_codes(model, wav: torch.Tensor, ref: torch.Tensor, got: np.ndarray) -> float:
    """Fraction of equal codes; asserts that each frame's first mismatch is a near tie.

    ``wav`` is what the encoder saw (normalised segment for segmented models).
    """
    got = torch.from_numpy(got)
    assert got.shape == ref.shape and got.dtype == torch.int64
    mismatch = got != ref  # [B, K, F]
    if mismatch.any():
        first = torch.where(mismatch.any(1), mismatch.int().argmax(1), -1)  # [B, F]
        with torch.no_grad():
            residual = model.encoder(wav).transpose(1, 2)  # [B, F, D]
            for k, layer in enumerate(model.quantizer.vq.layers[: ref.shape[1]]):
                embed = layer._codebook.embed
                point = residual
                if isinstance(layer, FactorisedVectorQuantization):  # angles in its projection
                    point = layer.in_proj(residual.transpose(1, 2)).transpose(1, 2)
                    point = F.normalize(point, dim=-1)
                    embed = F.normalize(embed, dim=-1)
                dist = (
                    point.pow(2).sum(-1, keepdim=True)
                    - 2 * point @ embed.t()
                    + embed.t().pow(2).sum(0, keepdim=True)
                )
                b, f = torch.where(first == k)
                d_ref, d_got = dist[b, f, ref[b, k, f]], dist[b, f, got[b, k, f]]
                gap = (d_ref - d_got).abs()
                assert (gap <= 1e-4 * d_ref.abs().clamp(min=1.0)).all(), (k, gap.max())
                residual = residual - layer.decode(ref[:, k]).transpose(1, 2)
    return float((~mismatch).float().mean())


def check_unsegmented(codec, out_dir: Path, cases: list[tuple[str, float, float]]) -> None:
    """Exports ``codec`` and compares the graphs with torch on ``(clip, seconds, min_equal)``."""
    meta, enc, dec = sessions(export_onnx(codec, out_dir))
    assert meta["segmented"] is False and meta["n_q"] == codec.config.n_q
    assert meta["torch_fingerprint"] == codec.fingerprint().hex()
    fractions = {}
    for i, (clip, seconds, min_equal) in enumerate(cases):
        wav = real_audio(clip, codec, seconds)
        with torch.no_grad():
            ref, _ = codec._encode(wav, codec.bandwidths[-1])
        (got,) = enc.run(None, {"audio": wav.numpy()})
        assert got.shape[:2] == (2, codec.config.n_q)
        assert got.shape[-1] == codec.num_frames(wav.shape[-1])
        fraction = check_codes(codec.model, wav, ref, got[:, : ref.shape[1]])
        fractions[clip, seconds] = fraction
        assert fraction >= min_equal, fraction
        # Small models: every bandwidth; big ones (slow in torch): lowest and highest by turns.
        small = codec.config.n_q <= 4
        bandwidths = codec.bandwidths if small else [codec.bandwidths[-(i % 2 == 0)]]
        for bandwidth in bandwidths:
            codes = ref[:, : codec.num_codebooks(bandwidth)]
            with torch.no_grad():
                expected = codec._decode(codes, None, wav.shape[-1])
            (audio,) = dec.run(None, {"codes": codes.numpy()})
            assert audio.shape[-1] == codes.shape[-1] * codec.hop_length
            audio = audio[..., : wav.shape[-1]]
            assert audio.shape == tuple(expected.shape)
            assert np.abs(audio - expected.numpy()).max() <= AUDIO_TOL
    print(codec.model_id, "equal codes:", fractions)


def test_unsegmented_tiny(tmp_path):
    # The graphs were traced on 0.25 s. The tiny model's 16-entry codebooks tie often
    # (0.997 equal seen at 2.3 s): every mismatch is a checked near tie, but the 99.9 %
    # bar is for real models.
    check_unsegmented(tiny_codec(), tmp_path, [(SPEECH, 0.37, 0.99), (SPEECH, 2.3, 0.99)])


def test_unsegmented_tiny_snake(tmp_path):
    # DAC's activation exports as Sin, Pow and Reciprocal nodes.
    codec = tiny_codec("tiny-snake", activation="Snake")
    check_unsegmented(codec, tmp_path, [(SPEECH, 0.37, 0.99)])


def test_unsegmented_default_model(tmp_path):
    import audiotok

    cases = [(SPEECH, 0.37, MIN_EQUAL), (SPEECH, 0.81, MIN_EQUAL)]
    check_unsegmented(audiotok.load_codec("audiotok_24khz"), tmp_path, cases)


def test_random_official_24khz(tmp_path, encodec_package):
    """The official 24 kHz architecture and checkpoint format, random weights."""
    import audiotok

    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    try:
        from exactness_bench import random_official
    finally:
        sys.path.pop(0)
    codec = audiotok.load_codec(random_official("encodec_24khz", tmp_path))
    # On speech these random weights give latents that nearly coincide with their codebook
    # entries (calibrated on the same clip): distances of ~3e-7 against |x|^2 ~0.13, below
    # float32's resolution, so torch itself agrees with a float64 argmin on only ~80 % of
    # them, and ONNX Runtime with torch on ~84 %; on music such ties are rarer but flip with
    # torch's thread count (99.8 % equal with one thread, as under pytest -n 2). Each mismatch
    # must still be such a tie.
    check_unsegmented(codec, tmp_path / "onnx", [(MUSIC, 0.37, 0.99), (SPEECH, 0.37, 0.0)])


def test_segmented_pipeline(tmp_path):
    """Per-segment graphs plus numpy segmentation and overlap-add give the torch codec's."""
    codec = segmented_tiny()
    meta, enc, dec = sessions(export_onnx(codec, tmp_path))
    assert meta["segmented"] and meta["graphs"]["encoder"]["file"] == "encoder_segment.onnx"
    wav = real_audio("music_48k_stereo.flac", codec, 0.25)  # 3 segments, last one short
    k = codec.num_codebooks(codec.bandwidths[-1])
    with torch.no_grad():
        ref, ref_scales = codec._encode(wav, codec.bandwidths[-1])
        expected = codec._decode(ref, ref_scales, wav.shape[-1])
    codes, scales, pieces = [], [], []
    for i, seg in enumerate(codec.model.segments(wav.shape[-1])):
        chunk = wav[..., seg.start : seg.start + seg.length]
        seg_codes, scale = enc.run(None, {"audio": chunk.numpy()})
        seg_ref = ref[..., seg.first_frame : seg.first_frame + seg.frames]
        np.testing.assert_allclose(scale, ref_scales[:, i].numpy(), rtol=1e-6)
        normalized, _ = codec.model.normalize(chunk)
        assert check_codes(codec.model, normalized, seg_ref, seg_codes[:, :k]) >= MIN_EQUAL
        codes.append(seg_codes[:, :k])
        scales.append(scale)
        # Decode torch's codes and scales, to compare the audio on the same input.
        (audio,) = dec.run(
            None, {"codes": seg_ref.numpy(), "scale": ref_scales[:, i].numpy().copy()}
        )
        pieces.append(torch.from_numpy(audio))
    assert np.concatenate(codes, -1).shape == tuple(ref.shape)
    joined = linear_overlap_add(pieces, meta["segment_stride"])[..., : wav.shape[-1]]
    assert np.abs(joined.numpy() - expected.numpy()).max() <= AUDIO_TOL


def test_sidecar_hashes_and_overwrite(tmp_path):
    codec = tiny_codec()
    sidecar = export_onnx(codec, tmp_path, bandwidths=[0.6], opset=17)
    meta = json.loads(sidecar.read_text())
    assert meta["bandwidths"] == {"0.6": 2} and meta["opset"] == 17
    assert meta["sample_rate"] == 24_000 and meta["hop_length"] == codec.hop_length
    for graph in meta["graphs"].values():
        data = (tmp_path / graph["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == graph["sha256"]
    with pytest.raises(OnnxExportError, match="exists"):
        export_onnx(codec, tmp_path)
    export_onnx(codec, tmp_path, overwrite=True)


def test_cli(tmp_path):
    from audiotok.cli.main import cli
    from audiotok.zoo.codec_checkpoints import save_checkpoint

    card = save_checkpoint(tiny_codec().model, tmp_path / "tiny.json", name="tiny")
    out = tmp_path / "onnx"
    runner = CliRunner()
    args = ["export-onnx", str(card), "-o", str(out), "--bandwidth", "0.3"]
    result = runner.invoke(cli, args, prog_name="audiotok")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["model_id"] == "tiny" and meta["bandwidths"] == {"0.3": 1}
    assert {g["file"] for g in meta["graphs"].values()} == {"encoder.onnx", "decoder.onnx"}
    again = runner.invoke(cli, args, prog_name="audiotok")
    assert again.exit_code == 1
    assert again.output.strip().splitlines() == [
        f"audiotok: error: {out / 'model.json'} exists (use -f to overwrite)"
    ]
    assert runner.invoke(cli, [*args, "-f"], prog_name="audiotok").exit_code == 0
    # A batch of one runs too (the graphs were traced with two).
    meta, enc, _ = sessions(out / "model.json")
    wav = real_audio(SPEECH, tiny_codec(), 0.5)[:1]
    (codes,) = enc.run(None, {"audio": wav.numpy()})
    assert codes.shape == (1, meta["n_q"], -(-wav.shape[-1] // meta["hop_length"]))
    bad = runner.invoke(cli, [*args[:-1], "7", "-f"], prog_name="audiotok")
    assert bad.exit_code == 1 and bad.output.count("\n") == 1
    assert "does not support 7" in bad.output


def test_cli_errors(tmp_path, monkeypatch):
    from audiotok.cli import onnx_commands
    from audiotok.cli.main import cli

    runner = CliRunner()
    unknown = runner.invoke(cli, ["export-onnx", "no_such_model", "-o", str(tmp_path)])
    assert unknown.exit_code == 1 and unknown.output.startswith("audiotok: error: unknown model")
    assert unknown.output.count("\n") == 1
    monkeypatch.setattr(onnx_commands.importlib.util, "find_spec", lambda name: None)
    missing = runner.invoke(cli, ["export-onnx", "audiotok_24khz", "-o", str(tmp_path)])
    assert missing.exit_code == 1
    assert missing.output == (
        "audiotok: error: ONNX export needs the onnx package: pip install 'audiotok[onnx]'\n"
    )
