"""Our parameter and buffer names are the official checkpoint keys, so files load unrenamed."""

from __future__ import annotations

from pathlib import Path

import pytest
from reference_models import ARCHS, encodec_package_model

from audiotok.zoo.codec_cards import find_card
from audiotok.zoo.codec_checkpoints import expected_shapes

KEYS = Path(__file__).parent / "data" / "keys"


def golden(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape, as the reference package names them (tests/data/keys/ARCH.txt)."""
    out = {}
    for line in (KEYS / f"{arch}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split()
            out[key] = tuple(int(d) for d in shape.split("x")) if shape else ()
    return out


@pytest.mark.parametrize("arch", list(ARCHS))
def test_state_dict_keys_and_shapes_equal_the_official_ones(arch):
    ours = expected_shapes(find_card(arch).config)
    official = golden(arch)
    assert list(ours) == list(official), "same keys, in the same order"
    assert ours == official


@pytest.mark.parametrize("arch", list(ARCHS))
def test_golden_key_lists_match_the_live_reference(arch, encodec_package):
    live = {k: tuple(v.shape) for k, v in encodec_package_model(arch).state_dict().items()}
    assert live == golden(arch)


def test_weight_norm_keys_are_g_and_v():
    keys = golden("encodec_24khz")
    assert "encoder.model.0.conv.conv.weight_g" in keys
    assert "decoder.model.3.convtr.convtr.weight_v" in keys
    assert "quantizer.vq.layers.31._codebook.embed" in keys
