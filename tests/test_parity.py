"""Parity with the reference implementations, for each architecture and checkpoint format.

Each case builds a reference model with random weights, writes it in an official format,
loads that file with ``load_codec`` and checks, on real audio, that our codes are identical
at every bandwidth and our decoded audio is within 1e-4 of the reference's.

The 16 kHz architecture (AudioGen's codec) is the 32 kHz one but for its sample rate and last
ratio (2, not 4), in our registry and in the references alike. It runs against audiocraft, the
format AudioGen's codec ships in; that its transformers config is recognised as it too is
checked on the config (``test_16khz_is_the_32khz_architecture``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import load_clip
from reference_models import (
    ARCHS,
    audiocraft_yaml,
    calibrate_codebooks_,
    encodec_package_model,
    encodec_package_run,
    hf_config,
    hf_model,
    hf_run,
    save_audiocraft,
    save_encodec_th,
)

from audiotok import load_codec
from audiotok.zoo.codec_cards import find_card
from audiotok.zoo.codec_checkpoints import Checkpoint, recognise, save_checkpoint
from audiotok.zoo.codec_convert import config_from_audiocraft, config_from_hf

# (clip, seconds). The unsegmented models' excerpts end mid-frame (0.55 s: 41.25 frames at
# 24 kHz, 27.5 at 32 and 16 kHz). The 48 kHz model's 1 s is two segments (stride 0.99 s), the
# last one 480 samples: shorter than the model's widest reflect padding (961 samples).
CLIPS = {
    "encodec_24khz": ("speech_24k.flac", 0.55),
    "encodec_48khz": ("music_48k_stereo.flac", 1.0),
    "encodec_32khz": ("music_48k_stereo.flac", 0.55),
    "encodec_16khz": ("speech_24k.flac", 0.55),
}
CASES = [
    ("encodec_24khz", "encodec"),
    ("encodec_24khz", "hf"),
    ("encodec_48khz", "encodec"),
    ("encodec_48khz", "hf"),
    ("encodec_32khz", "hf"),
    ("encodec_32khz", "audiocraft"),
    ("encodec_16khz", "audiocraft"),
]
ATOL = 1e-4


def clip_for(arch: str) -> torch.Tensor:
    a = ARCHS[arch]
    name, seconds = CLIPS[arch]
    return load_clip(name, a["sample_rate"], a["channels"], seconds=seconds)


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
    bandwidths = codec.bandwidths
    assert bandwidths == tuple(ARCHS[arch]["bandwidths"])
    for bandwidth in bandwidths:
        # The whole excerpt at the lowest and highest bandwidth; those between (other numbers
        # of codebooks, through the same code) on its first 0.15 s.
        whole = bandwidth in (bandwidths[0], bandwidths[-1])
        x = wav if whole else wav[..., : ARCHS[arch]["sample_rate"] * 3 // 20]
        ref_codes, ref_scales, ref_audio = run_reference(x, bandwidth)
        tokens = codec.encode(x, bandwidth=bandwidth)
        assert tokens.codes.shape == ref_codes.shape
        assert torch.equal(tokens.codes, ref_codes), f"codes differ at {bandwidth} kbps"
        if whole:
            assert tokens.codes[:, 0].unique().numel() > 8, "degenerate codes make a weak test"
        if ref_scales is None:
            assert tokens.scales is None
        else:
            torch.testing.assert_close(tokens.scales, ref_scales, rtol=0, atol=1e-7)
        audio = codec.decode(tokens)
        assert audio.shape == ref_audio.shape == x.shape
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


def test_audiotok_checkpoint_round_trip(tmp_path, references, request):
    wav = clip_for("encodec_24khz")
    source, run_reference = references("encodec_24khz", "hf", request)
    codec = load_codec(source)
    card = save_checkpoint(
        codec.model, tmp_path / "mine.json", name="mine", default_bandwidth=3.0, licence="test"
    )

    mine = load_codec(card)

    assert mine.model_id == "mine" and mine.default_bandwidth == 3.0
    assert torch.equal(mine.encode(wav).codes, codec.encode(wav, bandwidth=3.0).codes)
    assert torch.equal(mine.encode(wav).codes, run_reference(wav, 3.0)[0])


def test_16khz_is_the_32khz_architecture():
    """What the 16 kHz architecture does not share with the 32 kHz one (module doc)."""
    ours, theirs = find_card("encodec_16khz").config, find_card("encodec_32khz").config
    assert ours == replace(theirs, sample_rate=16_000, ratios=(8, 5, 4, 2))
    a, b = ARCHS["encodec_16khz"], ARCHS["encodec_32khz"]  # the references' settings
    assert {k for k in a if a[k] != b[k]} == {"sample_rate", "ratios"}
    assert a["ratios"] == list(ours.ratios) and a["bandwidths"] == list(ours.target_bandwidths)
    # Recognised from what each format states (as load_codec reads config.json and xp.cfg).
    stated = {
        "hf": config_from_hf(json.loads(hf_config("encodec_16khz").to_json_string())),
        "audiocraft": config_from_audiocraft(audiocraft_yaml("encodec_16khz")),
    }
    for fmt, config in stated.items():
        card = recognise(Checkpoint(Path(fmt), fmt, {}, config))
        assert card is not None and card.name == "encodec_16khz", fmt
