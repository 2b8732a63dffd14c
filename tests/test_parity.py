"""Parity with the reference implementations, for each architecture and checkpoint format.

Each case builds a reference model with random weights, writes it in an official format,
loads that file with ``load_codec`` and checks, on real audio, that our codes are identical
at every bandwidth and our decoded audio is within 1e-4 of the reference's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import load_clip
from reference_models import (
    ARCHS,
    calibrate_codebooks_,
    encodec_package_model,
    encodec_package_run,
    hf_model,
    hf_run,
    save_audiocraft,
    save_encodec_th,
)

from audiotok import load_codec
from audiotok.zoo.codec_checkpoints import save_checkpoint

CLIPS = {
    "encodec_24khz": "speech_24k.flac",
    "encodec_48khz": "music_48k_stereo.flac",
    "encodec_32khz": "music_48k_stereo.flac",
    "encodec_16khz": "speech_24k.flac",
}
CASES = [
    ("encodec_24khz", "encodec"),
    ("encodec_24khz", "hf"),
    ("encodec_48khz", "encodec"),
    ("encodec_48khz", "hf"),
    ("encodec_32khz", "hf"),
    ("encodec_32khz", "audiocraft"),
    ("encodec_16khz", "hf"),
    ("encodec_16khz", "audiocraft"),
]
ATOL = 1e-4


def clip_for(arch: str) -> torch.Tensor:
    a = ARCHS[arch]
    # 1.5 s: two segments of the 48 kHz model, over a hundred frames of codes for the rest.
    return load_clip(CLIPS[arch], a["sample_rate"], a["channels"], seconds=1.5)


def reference_in_format(
    arch: str, fmt: str, wav: torch.Tensor, directory: Path, request: pytest.FixtureRequest
) -> tuple[Path, object]:
    """A random reference model saved as ``fmt``; returns the path and a runner."""
    if fmt == "hf":
        model = hf_model(arch)
        calibrate_codebooks_(model, "hf", wav, arch)
        model.save_pretrained(directory)
        return directory, lambda x, bw: hf_run(model, x, bw)
    request.getfixturevalue("encodec_package")
    model = encodec_package_model(arch)
    calibrate_codebooks_(model, "encodec", wav, arch)
    if fmt == "encodec":
        path = save_encodec_th(model, directory, f"{arch}-0123abcd.th")
        return path, lambda x, bw: encodec_package_run(model, x, bw)
    # audiocraft's compression models always use every codebook.
    return save_audiocraft(model, directory, arch), lambda x, bw: encodec_package_run(
        model, x, None
    )


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> Callable[[str, str, pytest.FixtureRequest], tuple]:
    """``(arch, fmt) -> (path, runner)``, each reference built and written once for the
    module: the models of the official sizes (up to 59 M parameters) take seconds to build and
    calibrate, and hundreds of MB to write."""
    built: dict = {}

    def get(arch: str, fmt: str, request: pytest.FixtureRequest) -> tuple[Path, object]:
        if (arch, fmt) not in built:
            directory = tmp_path_factory.mktemp(f"{arch}-{fmt}")
            built[arch, fmt] = reference_in_format(arch, fmt, clip_for(arch), directory, request)
        return built[arch, fmt]

    return get


@pytest.mark.parametrize(("arch", "fmt"), CASES, ids=[f"{a}-{f}" for a, f in CASES])
def test_codes_and_audio_match_reference(arch, fmt, references, request):
    wav = clip_for(arch)
    path, run_reference = references(arch, fmt, request)

    codec = load_codec(path)

    assert codec.model_id == arch, "the architecture should be recognised as the registry's"
    assert codec.bandwidths == tuple(ARCHS[arch]["bandwidths"])
    for bandwidth in codec.bandwidths:
        ref_codes, ref_scales, ref_audio = run_reference(wav, bandwidth)
        tokens = codec.encode(wav, bandwidth=bandwidth)
        assert tokens.codes.shape == ref_codes.shape
        assert torch.equal(tokens.codes, ref_codes), f"codes differ at {bandwidth} kbps"
        assert tokens.codes[:, 0].unique().numel() > 8, "degenerate codes make a weak test"
        if ref_scales is None:
            assert tokens.scales is None
        else:
            torch.testing.assert_close(tokens.scales, ref_scales, rtol=0, atol=1e-7)
        audio = codec.decode(tokens)
        assert audio.shape == ref_audio.shape == wav.shape
        err = (audio - ref_audio).abs().max().item()
        assert err <= ATOL, f"decoded audio differs by {err:.2e} at {bandwidth} kbps"


@pytest.mark.parametrize(("arch", "fmt"), CASES, ids=[f"{a}-{f}" for a, f in CASES])
def test_registry_name_with_checkpoint_matches_path_load(arch, fmt, references, request):
    wav = clip_for(arch)[..., : ARCHS[arch]["sample_rate"] // 2]
    path, run_reference = references(arch, fmt, request)
    bandwidth = ARCHS[arch]["bandwidths"][-1]

    codec = load_codec(arch, checkpoint=path)

    assert torch.equal(
        codec.encode(wav, bandwidth=bandwidth).codes, run_reference(wav, bandwidth)[0]
    )


def test_audiotok_checkpoint_round_trip(tmp_path):
    wav = clip_for("encodec_24khz")
    source = tmp_path / "hf"
    model = hf_model("encodec_24khz", seed=3)
    calibrate_codebooks_(model, "hf", wav, "encodec_24khz")
    model.save_pretrained(source)
    codec = load_codec(source)
    card = save_checkpoint(
        codec.model, tmp_path / "mine.json", name="mine", default_bandwidth=3.0, licence="test"
    )

    mine = load_codec(card)

    assert mine.model_id == "mine" and mine.default_bandwidth == 3.0
    assert torch.equal(mine.encode(wav).codes, codec.encode(wav, bandwidth=3.0).codes)
    assert torch.equal(mine.encode(wav).codes, hf_run(model, wav, 3.0)[0])
