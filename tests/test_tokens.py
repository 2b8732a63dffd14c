"""Tokens files: .npz and .safetensors round trips, and refusal of anything else."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from audiotok.codec.tokens import Tokens
from audiotok.errors import TokensError


@pytest.fixture
def tokens():
    codes = torch.randint(0, 1024, (2, 4, 39), generator=torch.Generator().manual_seed(0))
    return Tokens(codes, torch.rand(2, 3) + 0.1, 12_345, 48_000, 3.0, "encodec_48khz")


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_round_trip(tokens, tmp_path, suffix):
    path = tokens.save(tmp_path / f"t{suffix}")
    back = Tokens.load(path)
    assert torch.equal(back.codes, tokens.codes) and back.codes.dtype == torch.int64
    assert torch.equal(back.scales, tokens.scales)
    assert (back.length, back.sample_rate, back.bandwidth, back.model_id) == (
        12_345, 48_000, 3.0, "encodec_48khz",
    )  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == [f"t{suffix}"], "no temporary file is left"


def test_round_trip_without_scales(tmp_path):
    t = Tokens(torch.zeros(1, 2, 5, dtype=torch.long), None, 1600, 24_000, 1.5, "encodec_24khz")
    assert Tokens.load(t.save(tmp_path / "t.npz")).scales is None


def test_refuses_to_overwrite(tokens, tmp_path):
    path = tmp_path / "t.npz"
    path.write_bytes(b"keep me")
    with pytest.raises(TokensError, match="exists"):
        tokens.save(path)
    assert path.read_bytes() == b"keep me"
    tokens.save(path, overwrite=True)
    assert Tokens.load(path).length == 12_345


def test_unknown_suffix(tokens, tmp_path):
    with pytest.raises(TokensError, match=r"\.npz or \.safetensors"):
        tokens.save(tmp_path / "t.pt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a tokens file"),
        (b"not a zip at all", "not a tokens file"),  # numpy would try it as a pickle
        (b"PK\x03\x04garbage", "not a readable tokens file"),
    ],
    ids=["empty", "text", "bad-zip"],
)
def test_garbage_is_a_tokens_error(tmp_path, content, message):
    path = tmp_path / "t.npz"
    path.write_bytes(content)
    with pytest.raises(TokensError, match=message) as info:
        Tokens.load(path)
    assert "pickle" not in str(info.value)


def test_the_format_is_told_by_the_content_not_the_name(tokens, tmp_path):
    tokens.save(tmp_path / "t.safetensors")
    (tmp_path / "t.safetensors").rename(tmp_path / "renamed.npz")
    assert torch.equal(Tokens.load(tmp_path / "renamed.npz").codes, tokens.codes)


def test_pickled_arrays_are_not_loaded(tmp_path):
    path = tmp_path / "t.npz"
    meta = {"format": "audiotok.tokens", "version": 1, "length": 1, "sample_rate": 1,
            "bandwidth": 1, "model_id": "x"}  # fmt: skip
    np.savez(path, metadata=np.array(json.dumps(meta)), codes=np.array([object()], dtype=object))
    with pytest.raises(TokensError, match="not a readable tokens file"):
        Tokens.load(path)


def test_other_npz_and_newer_versions_are_refused(tokens, tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(TokensError, match="not a readable tokens file"):
        Tokens.load(other)
    newer = tmp_path / "newer.npz"
    meta = {**tokens.metadata(), "version": 99}
    np.savez(newer, metadata=np.array(json.dumps(meta)), codes=tokens.codes.numpy())
    with pytest.raises(TokensError, match="version 99 is newer"):
        Tokens.load(newer)


@pytest.mark.parametrize("change", [{"length": None}, {"sample_rate": [1]}, {"version": "x"}])
def test_malformed_metadata_is_a_tokens_error(tokens, tmp_path, change):
    path = tmp_path / "m.npz"
    meta = {**tokens.metadata(), **change}
    np.savez(path, metadata=np.array(json.dumps(meta)), codes=tokens.codes.numpy())
    with pytest.raises(TokensError, match="bad tokens metadata"):
        Tokens.load(path)
    np.savez(path, metadata=np.array(json.dumps([1, 2])), codes=tokens.codes.numpy())
    with pytest.raises(TokensError, match="not an audiotok tokens file"):
        Tokens.load(path)


def test_float_codes_are_refused(tokens, tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, metadata=np.array(json.dumps(tokens.metadata())), codes=np.zeros((1, 1, 1)))
    with pytest.raises(TokensError, match="codes must be integers"):
        Tokens.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(TokensError, match="no such tokens file"):
        Tokens.load(tmp_path / "nope.npz")


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_numpy_tokens_save_and_load_as_either_kind(tokens, tmp_path, suffix):
    as_numpy = tokens.as_framework("np")
    assert as_numpy.framework == "np" and isinstance(as_numpy.scales, np.ndarray)
    path = as_numpy.save(tmp_path / f"t{suffix}")
    for framework, kind in (("np", np.ndarray), ("pt", torch.Tensor)):
        loaded = Tokens.load(path, framework=framework)
        assert loaded.framework == framework and isinstance(loaded.codes, kind)
        assert isinstance(loaded.scales, kind) and loaded.metadata() == tokens.metadata()
        np.testing.assert_array_equal(np.asarray(loaded.codes), tokens.codes.numpy())
        np.testing.assert_array_equal(np.asarray(loaded.scales), tokens.scales.numpy())
    # A file saved from tensors holds the same.
    again = Tokens.load(tokens.save(tmp_path / f"u{suffix}"), framework="np")
    np.testing.assert_array_equal(again.codes, Tokens.load(path, framework="np").codes)


def test_arrays_take_the_kind_and_dtype_of_the_codes():
    mixed = Tokens(np.ones((1, 2, 3), np.int32), torch.ones(1, 1), 960, 24_000, 1.5, "m")
    assert mixed.codes.dtype == np.int64 and mixed.scales.dtype == np.float32
    assert mixed.to("cpu").framework == "np"
    with pytest.raises(ValueError, match="CPU"):
        mixed.to("cuda")
    assert (
        Tokens(torch.ones(1, 2, 3, dtype=torch.int32), None, 960, 24_000, 1.5, "m").codes.dtype
        == torch.int64
    )


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_files_get_the_mode_the_umask_gives(tokens, tmp_path, suffix):
    import os

    old = os.umask(0o022)  # safetensors' save_file would make it 0600: unreadable to others
    try:
        path = tokens.save(tmp_path / f"t{suffix}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"codes": np.full((1, 2, 75), 3.9)}, "codes must be integers, not float64"),  # was cut
        ({"codes": torch.ones(1, 2, 75, dtype=torch.bool)}, "codes must be integers, not bool"),
        ({"codes": np.zeros((0, 2, 75), np.int64)}, "at least one item"),
        ({"length": 24_000.5}, "length must be a whole number"),
        ({"length": -1}, "length must be a whole number >= 0, not -1"),
        ({"sample_rate": 0}, "sample_rate must be positive"),
    ],
)
def test_the_constructor_refuses_what_no_codec_decodes(change, message):
    fields = dict(codes=np.zeros((1, 2, 75), np.int64), scales=None, length=24_000,
                  sample_rate=24_000, bandwidth=1.5, model_id="encodec_24khz")  # fmt: skip
    with pytest.raises(TokensError, match=message):
        Tokens(**{**fields, **change})
    listed = Tokens(**{**fields, "codes": [[[1, 2], [3, 4]]], "length": 640})  # nested lists
    assert listed.codes.dtype == np.int64 and listed.num_frames == 2


def test_tokens_of_no_audio_are_refused_by_either_backend():
    import audiotok

    codec = audiotok.load_codec()
    empty = Tokens(np.zeros((1, 2, 0), np.int64), None, 0, 24_000, 1.5, codec.model_id)
    with pytest.raises(TokensError, match=r"stand for no audio \(length 0\)"):
        codec.decode(empty)


def _npz_with_codes_header(path, header: dict, zeros: int, compress: bool) -> None:
    """A tokens .npz whose codes member has ``header`` (a npy header) and ``zeros`` zero bytes,
    streamed into the archive so that a large member is never in memory here."""
    import io
    import zipfile

    meta = {"format": "audiotok.tokens", "version": 1, "length": 320, "sample_rate": 24_000,
            "bandwidth": 6.0, "model_id": "audiotok_24khz"}  # fmt: skip
    buf = io.BytesIO()
    np.save(buf, np.array(json.dumps(meta)))
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, header)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method, compresslevel=1) as z:
        z.writestr("metadata.npy", buf.getvalue())
        with z.open("codes.npy", "w", force_zip64=True) as f:
            f.write(head.getvalue())
            for start in range(0, zeros, 1 << 24):
                f.write(bytes(min(1 << 24, zeros - start)))


def test_a_zip_bomb_is_refused_before_it_is_expanded(tmp_path):
    # 139 MB of int64 zeros deflated to a tenth of a MB: one frame more than a day at 200/s
    # (the old load expanded every member whole; the audit's 1.5 MB file held 1.5 GiB).
    frames = 24 * 3600 * 200 + 1
    path = tmp_path / "bomb.npz"
    header = {"descr": "<i8", "fortran_order": False, "shape": (1, 1, frames)}
    _npz_with_codes_header(path, header, 8 * frames, compress=True)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(TokensError, match=r"codes of shape .* is beyond what a tokens file") as e:
        Tokens.load(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_a_header_that_lies_about_its_shape_is_refused(tmp_path):
    # 64 MB declared, 64 bytes held: numpy would allocate the declared shape before reading.
    path = tmp_path / "lie.npz"
    header = {"descr": "<i8", "fortran_order": False, "shape": (1, 8, 1_000_000)}
    _npz_with_codes_header(path, header, 64, compress=False)
    with pytest.raises(TokensError, match=r"declares shape \[1, 8, 1000000\], 64000000 bytes, "
                       r"but holds 64\)"):  # fmt: skip
        Tokens.load(path)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_codes_beyond_a_readers_limits_are_refused_unread(tokens, tmp_path, suffix):
    """A service reads at most ``max_shape`` ``[B, K, F]``: each dimension is checked on the
    file's array header, before the codes are read (or a deflated member expanded)."""
    from audiotok.errors import TokensTooLargeError

    tokens.save(tmp_path / f"t{suffix}")  # codes [2, 4, 39]
    assert Tokens.load(tmp_path / f"t{suffix}", max_shape=(2, 4, 39)).codes.shape == (2, 4, 39)
    for limits in [(1, 4, 39), (2, 3, 39), (2, 4, 38)]:
        with pytest.raises(TokensTooLargeError, match=r"codes of shape \[2, 4, 39\] are beyond"):
            Tokens.load(tmp_path / f"t{suffix}", max_shape=limits)
    # Checked on the header alone: a member whose data is cut short is refused as too large.
    path = tmp_path / "cut.npz"
    header = {"descr": "<i8", "fortran_order": False, "shape": (1, 8, 1_000_000)}
    _npz_with_codes_header(path, header, 64, compress=False)
    with pytest.raises(TokensTooLargeError):
        Tokens.load(path, max_shape=(1, 8, 75))
