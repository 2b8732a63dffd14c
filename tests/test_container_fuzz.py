"""Fuzzing the .atok reader: any bytes give audio or a FormatError, fast, in bounded memory."""

from __future__ import annotations

import dataclasses
import tracemalloc
import warnings

import pytest
import torch
from conftest import tiny_codec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiotok.compression.decode import decode_stream
from audiotok.compression.encode import compress
from audiotok.errors import FormatError

CODEC = tiny_codec()
SEGMENTED = tiny_codec(
    "tiny48", sample_rate=48_000, channels=2, causal=False, norm="time_group_norm",
    normalize=True, segment=0.1, target_bandwidths=(1.2, 2.4),
)  # fmt: skip
VALID = {
    "adaptive": compress(CODEC, torch.randn(1, 24_000 * 2) * 0.1, entropy="adaptive"),
    "raw": compress(CODEC, torch.randn(1, 30_000) * 0.1, entropy="raw"),
    "segmented": compress(SEGMENTED, torch.randn(2, 14_000) * 0.1, bandwidth=2.4),
}
MEMORY_LIMIT = 64 << 20
FUZZ = settings(max_examples=150, deadline=3000, suppress_health_check=[HealthCheck.too_slow])


def decode_or_format_error(data: bytes, codec, recover: bool) -> None:
    """Decodes ``data``; only audio or a FormatError may come out, in bounded memory."""
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = decode_stream(data, codec, recover=recover)
        assert result.audio.dim() == 2 and torch.isfinite(result.audio).all()
    except FormatError as exc:
        assert exc.offset is None or 0 <= exc.offset <= len(data) + 64
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"decoding {len(data)} bytes allocated {peak} bytes"


@FUZZ
@given(st.binary(max_size=2000), st.booleans())
def test_arbitrary_bytes(data, recover):
    decode_or_format_error(data, CODEC, recover)


@FUZZ
@given(st.binary(max_size=600), st.booleans())
def test_arbitrary_bytes_after_a_valid_header(tail, recover):
    from audiotok.compression.container.reader import AtokReader

    with AtokReader(VALID["adaptive"]) as reader:
        size = reader.header_size
    decode_or_format_error(VALID["adaptive"][:size] + tail, CODEC, recover)


mutation = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
    st.integers(0, 10_000),
    st.integers(0, 255),
)


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.lists(mutation, min_size=1, max_size=6), st.booleans())
def test_mutated_files(kind, mutations, recover):
    data = bytearray(VALID[kind])
    for op, position, value in mutations:
        if not data:
            break
        i = position % len(data)
        if op == "flip":
            data[i] ^= 1 << (value % 8)
        elif op == "set":
            data[i] = value
        elif op == "insert":
            data[i:i] = bytes([value]) * (value % 7 + 1)
        elif op == "delete":
            del data[i : i + value % 9 + 1]
        else:
            del data[i:]
    decode_or_format_error(bytes(data), SEGMENTED if kind == "segmented" else CODEC, recover)


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_files_still_decode(kind):
    codec = SEGMENTED if kind == "segmented" else CODEC
    assert decode_stream(VALID[kind], codec).damage == []


LENGTHS = st.one_of(st.none(), st.integers(0, 2**64 - 2), st.integers(0, 100_000))


@settings(max_examples=40, deadline=3000, suppress_health_check=[HealthCheck.too_slow])
@given(LENGTHS, LENGTHS, st.booleans())
def test_header_lengths(length, original, recover):
    """Lengths the index does not bear out are a FormatError, never a huge allocation (a 3 s
    stream said to be 24 h asked for 7.7 GiB)."""
    from audiotok.compression.container.reader import AtokReader

    data = VALID["adaptive"]
    with AtokReader(data) as reader:
        header, size = reader.header, reader.header_size
    forged = dataclasses.replace(header, length=length, original_length=original).to_bytes()
    decode_or_format_error(forged + data[size:], CODEC, recover)
