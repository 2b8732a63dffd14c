"""Golden .atok files: every committed version decodes to its committed tokens, forever."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from audiotok.codec.tokens import Tokens
from audiotok.compression.container.atok import read_tokens
from audiotok.compression.container.reader import AtokReader
from audiotok.compression.container.writer import AtokWriter

GOLDEN = Path(__file__).parent / "data" / "golden"
FILES = sorted(GOLDEN.glob("v*.atok"))


def test_there_are_golden_files_for_the_current_version():
    from audiotok.compression.container.header import MAJOR, MINOR

    names = {p.name for p in FILES}
    for case in ("adaptive", "raw", "segmented"):
        assert f"v{MAJOR}.{MINOR}_{case}.atok" in names


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_golden_file_decodes_to_its_tokens(path):
    expected = Tokens.load(path.with_suffix(".npz"))
    tokens = read_tokens(path)
    assert torch.equal(tokens.codes, expected.codes)
    assert (tokens.scales is None) == (expected.scales is None)
    if tokens.scales is not None:
        assert torch.equal(tokens.scales, expected.scales)
    assert (tokens.length, tokens.sample_rate, tokens.bandwidth, tokens.model_id) == (
        expected.length, expected.sample_rate, expected.bandwidth, expected.model_id,
    )  # fmt: skip


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_todays_writer_reproduces_the_golden_bytes(path):
    data = path.read_bytes()
    with AtokReader(data) as reader:
        header, coder = reader.header, reader.coder
        if path.stem.endswith("_adaptive"):
            modes = {packet.payload[:1] for _, packet in reader.packets()}
            assert modes == {b"\x00", b"\x01"}, "the golden covers both payload modes"
    from audiotok.compression.container.header import MAJOR, MINOR

    if not path.name.startswith(f"v{MAJOR}.{MINOR}_"):
        pytest.skip("older versions need only decode")
    out = io.BytesIO()
    with AtokWriter(out, header, coder) as writer:
        writer.write_tokens(Tokens.load(path.with_suffix(".npz")))
    assert out.getvalue() == data
