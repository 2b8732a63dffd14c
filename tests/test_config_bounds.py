"""Codec configs with numbers no model has are one-line errors, not tracebacks or hangs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import DATA, tiny_codec, tiny_config

from audiotok.cli.main import cli
from audiotok.zoo.codec_cards import CARDS
from audiotok.zoo.codec_checkpoints import save_checkpoint


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # RuntimeError "Storage size calculation overflowed" from torch.
        ({"n_filters": 10**9}, "n_filters must be >= 1 with n_filters x 2 ** len(ratios) <= "),
        ({"n_q": 10**6}, "n_q must be >= 1 and <= 1024, not 1000000"),  # SystemError
        ({"segment": -1.0}, "segment must be null or at least one frame"),  # compress hung
        ({"sample_rate": 0}, "sample_rate must be in [1000, 768000] Hz, not 0"),  # loaded
        ({"ratios": [0]}, "ratios must be 1 to 8 numbers in [1, 64], not [0]"),
        ({"kernel_size": 0}, "kernel sizes must be in [1, 64], not [0, 7, 3]"),
        ({"overlap": 1.5}, "overlap must be in [0, 1), not 1.5"),
        ({"n_filters": 1e9}, "n_filters: expected an integer, not 1000000000.0"),
    ],
)
def test_out_of_range_cards_are_one_line_errors_on_the_command_line(
    tmp_path, monkeypatch, change, message
):
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    monkeypatch.setenv("AUDIOTOK_CACHE", str(tmp_path / "cache"))
    card = save_checkpoint(tiny_codec().model, tmp_path / "bad.json", name="bad")
    data = json.loads(card.read_text())
    data["config"].update(change)
    card.write_text(json.dumps(data))
    args = ["compress", str(DATA / "speech_24k.flac"), str(tmp_path / "o.atok"), "-m", str(card)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"audiotok: error: {card}: bad codec config")
    assert message in lines[0]


def test_every_official_and_test_architecture_is_within_the_bounds():
    for card in CARDS:
        assert card.config.from_dict(card.config.to_dict()) == card.config
    tiny_config(sample_rate=48_000, channels=2, causal=False, norm="time_group_norm",
                normalize=True, segment=0.1, target_bandwidths=(1.2, 2.4))  # fmt: skip
    tiny_config(bins=65_536)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dimension": 5000}, "dimension must be in [1, 4096], not 5000"),
        ({"n_filters": 512}, "n_filters x 2 ** len(ratios) <= 4096, not 512"),
        ({"bins": 2**30}, "n_q x bins x codebook size must be <= 268435456"),
        ({"sample_rate": 10**9}, "sample_rate must be in [1000, 768000] Hz"),
        ({"trim_right_ratio": 2.0}, "trim_right_ratio must be in [0, 1]"),
        ({"target_bandwidths": (0.0, 1.0)}, "target_bandwidths must be finite and > 0"),
        ({"ratios": ()}, "ratios must be 1 to 8 numbers in [1, 64], not []"),
    ],
)
def test_constructor_names_each_problem(fields, message):
    with pytest.raises(ValueError, match=r"^invalid codec config: ") as refused:
        tiny_config(**fields)
    assert message in str(refused.value)
