"""The ``.atok`` entropy coders: round trips, compression, parameters, damage, determinism."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiotok.compression.container.adaptive import AdaptiveCoder
from audiotok.compression.container.coders import coder_for_id, coder_for_name, coder_names
from audiotok.compression.container.entropy import EntropyCoder
from audiotok.compression.container.rawpack import RawCoder
from audiotok.errors import CorruptDataError, FormatError, UnsupportedFormatError

CODERS = (RawCoder, AdaptiveCoder)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_codes(seed: int, k: int, f: int, n: int, kind: str) -> np.ndarray:
    """Codes ``[k, f]`` in ``[0, n)``: uniform, geometric (skewed), constant or runs."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.integers(0, n, (k, f))
    if kind == "geometric":
        return np.minimum(rng.geometric(0.1, (k, f)) - 1, n - 1)
    if kind == "constant":
        return np.full((k, f), rng.integers(0, n))
    return np.repeat(rng.integers(0, n, (k, f // 8 + 1)), 8, axis=1)[:, :f]  # runs


shapes = st.tuples(
    st.integers(0, 2**32 - 1),  # seed
    st.integers(1, 32),  # K
    st.integers(0, 200),  # F
    st.sampled_from([16, 32, 64, 256, 1024, 2048]),
    st.sampled_from(["uniform", "geometric", "constant", "runs"]),
)


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("cls", CODERS)
@FAST
@given(shape=shapes)
def test_round_trip(cls, shape):
    seed, k, f, n, kind = shape
    codes = make_codes(seed, k, f, n, kind)
    coder = cls(n, k)
    payload = coder.encode(codes)
    assert len(payload) <= coder.max_payload_size(f)
    decoded = coder.decode(payload, f)
    assert decoded.dtype == np.int64 and decoded.shape == (k, f)
    np.testing.assert_array_equal(decoded, codes)


@pytest.mark.parametrize("cls", CODERS)
def test_zero_frames(cls):
    coder = cls(1024, 8)
    payload = coder.encode(np.zeros((8, 0), dtype=np.int64))
    assert coder.decode(payload, 0).shape == (8, 0)


def test_extreme_shapes_round_trip():
    rng = np.random.default_rng(0)
    for n, k, f in [(2, 1, 50), (1 << 16, 2, 30), (16, 255, 3)]:
        codes = rng.integers(0, n, (k, f))
        np.testing.assert_array_equal(RawCoder(n, k).decode(RawCoder(n, k).encode(codes), f), codes)
    # Tiny precision: the model halves its counts every few frames.
    coder = AdaptiveCoder(16, 4, prob_bits=7, increment=40)
    codes = make_codes(1, 4, 2000, 16, "geometric")
    np.testing.assert_array_equal(coder.decode(coder.encode(codes), 2000), codes)


def test_raw_layout_is_codebook_major_and_prefix():
    codes = np.array([[0xA, 0xB, 0xC], [0x1, 0x2, 0x3]])
    assert RawCoder(16, 2).encode(codes).hex() == "abc123"
    assert RawCoder(16, 1).encode(codes[:1]).hex() == "abc0"
    codes = make_codes(5, 8, 75, 1024, "uniform")
    full, low = RawCoder(1024, 8).encode(codes), RawCoder(1024, 4).encode(codes[:4])
    assert full.startswith(low)  # fewer codebooks = a prefix (here byte-aligned)


# -------------------------------------------------------------------------- compression


def bits_per_code(coder: EntropyCoder, codes: np.ndarray) -> float:
    return 8 * len(coder.encode(codes)) / codes.size


def test_skewed_codes_compress_below_raw():
    codes = make_codes(3, 8, 75, 1024, "geometric")
    assert bits_per_code(RawCoder(1024, 8), codes) == 10
    assert bits_per_code(AdaptiveCoder(1024, 8), codes) < 9


def test_identical_codes_compress_to_almost_nothing():
    codes = np.full((8, 1000), 123)
    assert bits_per_code(AdaptiveCoder(1024, 8), codes) < 0.3
    codes = np.full((8, 75), 123)  # one packet: the 4 bytes of state per codebook dominate
    assert len(AdaptiveCoder(1024, 8).encode(codes)) < 0.2 * len(RawCoder(1024, 8).encode(codes))


def test_priors_help():
    rng = np.random.default_rng(7)
    probs = 1.0 / np.arange(1, 1025) ** 1.1
    perms = np.stack([rng.permutation(1024) for _ in range(4)])

    def packet():
        return np.take_along_axis(perms, rng.choice(1024, (4, 75), p=probs / probs.sum()), 1)

    priors = AdaptiveCoder.estimate_priors([packet() for _ in range(100)], 1024)
    test = [packet() for _ in range(5)]
    plain = sum(bits_per_code(AdaptiveCoder(1024, 4), c) for c in test)
    primed = sum(bits_per_code(AdaptiveCoder(1024, 4, priors=priors), c) for c in test)
    assert primed < 0.9 * plain


# ---------------------------------------------------------------------- params and priors


def some_priors(k: int, n: int, seed: int = 0) -> np.ndarray:
    codes = make_codes(seed, k, 300, n, "geometric")
    return AdaptiveCoder.estimate_priors([codes], n)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"increment": 1}, {"increment": 500, "prob_bits": 16}, {"prob_bits": 12}, "priors"],
)
def test_params_round_trip(kwargs):
    priors = some_priors(3, 256) if kwargs == "priors" else None
    coder = (
        AdaptiveCoder(256, 3, priors=priors)
        if priors is not None
        else AdaptiveCoder(256, 3, **kwargs)
    )
    data = coder.params()
    assert len(data) == (12 if priors is not None else 4)
    again = coder_for_id(1).from_params(256, 3, data, priors)
    assert (again.increment, again.prob_bits, again.params()) == (
        coder.increment,
        coder.prob_bits,
        data,
    )
    codes = make_codes(1, 3, 40, 256, "geometric")
    assert again.decode(coder.encode(codes), 40).tolist() == codes.tolist()
    assert RawCoder(256, 3).params() == b""
    assert isinstance(RawCoder.from_params(256, 3, b""), RawCoder)


def test_priors_round_trip_and_mismatch():
    priors = some_priors(4, 64)
    assert priors.dtype == np.uint16 and priors.shape == (4, 64)
    assert priors.min() >= 1 and (priors.astype(int).sum(axis=1) == 1 << 14).all()
    coder = AdaptiveCoder(64, 4, priors=priors)
    codes = make_codes(2, 4, 75, 64, "geometric")
    payload, params = coder.encode(codes), coder.params()
    assert params[4:] == hashlib.sha256(priors.astype("<u2").tobytes()).digest()[:8]
    decoded = AdaptiveCoder.from_params(64, 4, params, priors.astype(np.int64)).decode(payload, 75)
    np.testing.assert_array_equal(decoded, codes)

    other = priors.copy()
    other[0, 0] += 1
    with pytest.raises(UnsupportedFormatError, match="priors"):
        AdaptiveCoder.from_params(64, 4, params, other)
    with pytest.raises(UnsupportedFormatError, match="priors"):
        AdaptiveCoder.from_params(64, 4, params, None)
    with pytest.raises(UnsupportedFormatError, match="priors"):
        AdaptiveCoder.from_params(64, 4, params, priors[:3])
    # A stream made without priors decodes without them, whatever the caller has.
    plain = AdaptiveCoder(64, 4)
    assert AdaptiveCoder.from_params(64, 4, plain.params(), priors).priors is None


def test_estimate_priors_shapes_and_validation():
    batch = make_codes(0, 6, 50, 32, "geometric").reshape(2, 3, 50)  # [B, K, F]
    priors = AdaptiveCoder.estimate_priors([batch, np.zeros((3, 0), dtype=np.int32)], 32, budget=64)
    assert priors.shape == (3, 32) and (priors.astype(int).sum(axis=1) == 64).all()
    assert priors.min() >= 1
    with pytest.raises(ValueError):
        AdaptiveCoder.estimate_priors([], 32)
    with pytest.raises(ValueError):
        AdaptiveCoder.estimate_priors([np.zeros((3, 5), int), np.zeros((2, 5), int)], 32)
    with pytest.raises(ValueError):
        AdaptiveCoder.estimate_priors([np.full((3, 5), 32)], 32)
    with pytest.raises(ValueError):
        AdaptiveCoder.estimate_priors([np.zeros((3, 5), int)], 32, budget=16)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"increment": 0},
        {"increment": 1 << 16},
        {"prob_bits": 17},
        {"prob_bits": 10},  # 1024 + 2 * 32 > 2^10
        {"priors": np.ones((2, 1024), dtype=np.int64)},  # K = 3
        {"priors": np.zeros((3, 1024), dtype=np.int64)},
        {"priors": np.full((3, 1024), 40, dtype=np.int64)},  # sums over 2^15
        {"priors": np.ones((3, 1024), dtype=np.float32)},
    ],
)
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        AdaptiveCoder(1024, 3, **kwargs)


@pytest.mark.parametrize("cls", CODERS)
@pytest.mark.parametrize("n, k", [(0, 1), (1, 1), (1000, 1), (1 << 17, 1), (16, 0), (16, -1)])
def test_bad_shapes(cls, n, k):
    with pytest.raises(ValueError):
        cls(n, k)
    with pytest.raises(UnsupportedFormatError):
        cls.from_params(n, k, cls(16, 1).params())


@pytest.mark.parametrize(
    "data, error",
    [
        (b"", CorruptDataError),
        (b"\x00\x0f\x00", CorruptDataError),
        (b"\x00\x0f\x00\x20\x00", CorruptDataError),
        (b"\x01\x0f\x00\x20", CorruptDataError),  # flag without fingerprint
        (b"\x02\x0f\x00\x20", UnsupportedFormatError),  # unknown flag
        (b"\x00\x11\x00\x20", UnsupportedFormatError),  # P = 17
        (b"\x00\x00\x00\x20", UnsupportedFormatError),
        (b"\x00\x0f\x00\x00", UnsupportedFormatError),  # increment 0
        (b"\x00\x0a\x00\x20", UnsupportedFormatError),  # 1024 + 64 > 2^10
    ],
)
def test_adaptive_from_params_errors(data, error):
    with pytest.raises(error):
        AdaptiveCoder.from_params(1024, 2, data)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=16), card_bits=st.integers(1, 16), k=st.integers(1, 40))
def test_from_params_on_garbage(data, card_bits, k):
    for cls in CODERS:
        try:
            coder = cls.from_params(1 << card_bits, k, data, np.ones((k, 1 << card_bits), int))
        except (CorruptDataError, UnsupportedFormatError):
            continue
        assert coder.params() == data


def test_registry():
    assert coder_names() == ("raw", "adaptive")
    assert coder_for_id(0) is RawCoder and coder_for_id(1) is AdaptiveCoder
    assert coder_for_name("raw") is RawCoder and coder_for_name("adaptive") is AdaptiveCoder
    with pytest.raises(UnsupportedFormatError):
        coder_for_id(2)
    with pytest.raises(UnsupportedFormatError, match="raw"):
        coder_for_name("zstd")
    with pytest.raises(CorruptDataError):
        RawCoder.from_params(16, 1, b"\x00")


# ----------------------------------------------------------------------- encode checks


@pytest.mark.parametrize("cls", CODERS)
@pytest.mark.parametrize(
    "codes",
    [
        np.zeros((3, 5), dtype=np.int64),  # K = 3, coder K = 2
        np.zeros(5, dtype=np.int64),
        np.zeros((1, 2, 5), dtype=np.int64),
        np.full((2, 5), -1),
        np.full((2, 5), 16),
        np.full((2, 5), 2**63, dtype=np.uint64),
        np.zeros((2, 5), dtype=np.float32),
    ],
)
def test_encode_rejects_bad_codes(cls, codes):
    with pytest.raises(ValueError):
        cls(16, 2).encode(codes)


# ------------------------------------------------------------------------------ damage


def corpus() -> list[tuple[EntropyCoder, np.ndarray, bytes]]:
    out = []
    for cls in CODERS:
        for k, f, n, kind in [
            (1, 1, 16, "uniform"),
            (3, 20, 16, "geometric"),
            (8, 75, 1024, "runs"),
        ]:
            coder = cls(n, k)
            codes = make_codes(k * f, k, f, n, kind)
            out.append((coder, codes, coder.encode(codes)))
    return out


CORPUS = corpus()


def check_decodes_or_corrupt(coder: EntropyCoder, payload: bytes, num_frames: int) -> None:
    try:
        codes = coder.decode(payload, num_frames)
    except CorruptDataError:
        return
    assert codes.dtype == np.int64 and codes.shape == (coder.num_codebooks, num_frames)
    assert codes.min(initial=0) >= 0 and codes.max(initial=0) < coder.cardinality


@pytest.mark.parametrize("case", range(len(CORPUS)))
def test_truncated_and_extended_payloads(case):
    coder, codes, payload = CORPUS[case]
    f = codes.shape[1]
    for size in range(len(payload)):
        with pytest.raises(CorruptDataError):
            coder.decode(payload[:size], f)
    for tail in (b"\x00", b"\x00\x00", b"\x12\x34", b"\x00" * 7):
        with pytest.raises(CorruptDataError):
            coder.decode(payload + tail, f)
    with pytest.raises(CorruptDataError):
        coder.decode(payload, -1)
    for frames in (f + 1, f + 100, f * 3):
        check_decodes_or_corrupt(coder, payload, frames)


@settings(max_examples=300, deadline=None)
@given(
    case=st.integers(0, len(CORPUS) - 1),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "set"]),
            st.integers(0, 10**6),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_mutated_payloads_decode_or_raise_corrupt(case, edits):
    coder, codes, payload = CORPUS[case]
    data = bytearray(payload)
    for op, where, value in edits:
        pos = where % (len(data) + 1)
        if op == "insert":
            data.insert(pos, value)
        elif data and pos < len(data):
            if op == "delete":
                del data[pos]
            elif op == "flip":
                data[pos] ^= 1 << (value % 8)
            else:
                data[pos] = value
    check_decodes_or_corrupt(coder, bytes(data), codes.shape[1])


def test_single_bit_flips_are_mostly_detected():
    coder, codes, payload = CORPUS[5]  # adaptive, K = 8, F = 75, runs
    assert payload[:1] == b"\x01", "a rANS payload (raw packing has no redundancy to check)"
    detected = 0
    # Every seventh bit, 477 flips (7 is prime to 8: each bit position of a byte in turn):
    # all of them took 15 s in CI, every third bit 8 s on a 2-core EPYC.
    bits = range(0, 8 * len(payload), 7)
    for bit in bits:
        data = bytearray(payload)
        data[bit // 8] ^= 0x80 >> (bit % 8)
        try:
            coder.decode(bytes(data), codes.shape[1])
        except CorruptDataError:
            detected += 1
    assert detected >= 0.9 * len(bits)


@given(data=st.binary(max_size=300), frames=st.integers(0, 100))
@settings(max_examples=200, deadline=None)
def test_random_payloads(data, frames):
    for cls in CODERS:
        check_decodes_or_corrupt(cls(16, 3), data, frames)


def test_corrupt_data_error_is_a_format_error():
    with pytest.raises(FormatError):
        AdaptiveCoder(16, 2).decode(b"\x00" * 8, 0)


# ------------------------------------------------------------------------- determinism

GOLDEN_CODES = [
    [2, 0, 0, 3, 6, 0, 1, 1, 0, 2, 1, 1, 2, 0, 0, 12, 8, 1, 1, 0],
    [8, 4, 3, 0, 0, 9, 1, 1, 0, 2, 0, 2, 0, 4, 1, 2, 0, 0, 0, 11],
    [4, 5, 0, 0, 2, 0, 0, 4, 0, 0, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7],
]
GOLDEN_PRIORS = [
    [1, 2, 3, 4, 5, 6, 7, 8, 8, 7, 6, 5, 4, 3, 2, 1],
    [16] * 16,  # sums to 2^8: the first update halves
    [1] * 15 + [100],
]
# Skewed codes (runs of zeros), where rANS beats raw packing.
GOLDEN_SKEWED = [
    row + [0] * 20 + [r % 3 for r in row] for row in GOLDEN_CODES
]  # fmt: skip
RAW_HEX = "200360110211200c81108430091102020412000b45002004007777777777"
GOLDEN = {
    "raw": (GOLDEN_CODES, RAW_HEX),
    # near-uniform codes: the adaptive coder falls back to raw packing (mode byte 00)
    "adaptive": (GOLDEN_CODES, "00" + RAW_HEX),
    "adaptive-rans": (
        GOLDEN_SKEWED,
        "010004928b0a90c2c717fe24a3822f0106a1eb1c4528053b02a6f1c438e00f68c3a44b40cb1f8f00a51dc3"
        "adcb4101ce93cba003a4d0666c5910be4f1f",
    ),
    # prob_bits 8, so the counts are halved several times within the 60 frames
    "primed-rans": (
        GOLDEN_SKEWED,
        "01b475e81379f79385462ac0086805c7c5d8133c20c96bce3e06ce99104b336a649638ca209d90ee1f97eb"
        "512a1bcd49b808e61868",
    ),
}


def golden_coders() -> dict[str, EntropyCoder]:
    primed = AdaptiveCoder(16, 3, prob_bits=8, increment=32, priors=np.array(GOLDEN_PRIORS))
    return {
        "raw": RawCoder(16, 3),
        "adaptive": AdaptiveCoder(16, 3),
        "adaptive-rans": AdaptiveCoder(16, 3),
        "primed-rans": primed,
    }


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_vectors(name):
    """The bitstream is frozen: a change here breaks every file written before it."""
    coder = golden_coders()[name]
    codes, payload = GOLDEN[name]
    assert coder.encode(np.array(codes)).hex() == payload
    assert coder.decode(bytes.fromhex(payload), len(codes[0])).tolist() == codes
    if name == "primed-rans":
        assert coder.params().hex() == "01080020e04faeff356f2594"


@pytest.mark.parametrize(
    "dtype",
    [
        np.int8,
        np.uint8,
        np.int16,
        np.uint16,
        np.int32,
        np.uint32,
        np.int64,
        np.uint64,
        np.intc,
        np.intp,
        np.int_,
    ],
)
def test_output_does_not_depend_on_the_input_integer_type(dtype):
    for name, coder in golden_coders().items():
        codes, payload = GOLDEN[name]
        assert coder.encode(np.array(codes, dtype=dtype)).hex() == payload
    rans_codes, rans_payload = GOLDEN["adaptive-rans"]
    assert golden_coders()["adaptive-rans"].encode(rans_codes).hex() == rans_payload  # a list


def test_no_platform_dependent_integers_in_the_coders():
    """numpy's default integer is 32 bits on some platforms: the coders name every dtype."""
    root = Path(__file__).parent.parent / "audiotok" / "compression" / "container"
    pattern = re.compile(r"np\.int_\b|np\.intp\b|np\.uint\b|dtype=int\b|astype\(int\)|np\.long\b")
    for name in ("entropy.py", "rawpack.py", "rans.py", "adaptive.py"):
        source = (root / name).read_text()
        assert not pattern.search(source), f"{name}: {pattern.search(source).group()}"


# ------------------------------------------------------- the spec, as an independent decoder


def spec_decode_raw(body: bytes, k: int, f: int, n: int) -> list:
    """Raw-packing decoder written from the raw coder's docstring alone."""
    b = n.bit_length() - 1
    if len(body) != (k * f * b + 7) // 8:
        raise CorruptDataError("size")
    bits = "".join(f"{byte:08b}" for byte in body)
    if "1" in bits[k * f * b :]:
        raise CorruptDataError("padding")
    flat = [int(bits[i * b : (i + 1) * b], 2) for i in range(k * f)]
    return [flat[i * f : (i + 1) * f] for i in range(k)]


def spec_decode(payload: bytes, k: int, f: int, n: int, inc: int, p: int, priors) -> list:
    """Adaptive decoder written from the module docstring alone, on Python ints."""
    if payload[:1] == b"\x00":
        return spec_decode_raw(payload[1:], k, f, n)
    if payload[:1] != b"\x01":
        raise CorruptDataError("mode")
    payload = payload[1:]
    m, lower = 1 << p, 1 << 16
    if len(payload) < 4 * k or (len(payload) - 4 * k) % 2 or len(payload) > 4 * k + 2 * k * f:
        raise CorruptDataError("size")
    x = list(struct.unpack(f">{k}I", payload[: 4 * k]))
    if min(x, default=lower) < lower:
        raise CorruptDataError("state")
    words = list(struct.unpack(f">{(len(payload) - 4 * k) // 2}H", payload[4 * k :]))
    counts = (
        [list(map(int, row)) for row in priors]
        if priors is not None
        else [[1] * n for _ in range(k)]
    )
    out = [[0] * f for _ in range(k)]
    pos = 0
    for t in range(f):
        for lane in range(k):
            c = counts[lane]
            total = sum(c)
            slot = x[lane] % m
            u = ((slot + 1) * total - 1) // m
            cum = 0
            for s in range(n):
                if cum <= u < cum + c[s]:
                    break
                cum += c[s]
            start = cum * m // total
            freq = (cum + c[s]) * m // total - start
            assert start <= slot < start + freq
            out[lane][t] = s
            x[lane] = freq * (x[lane] // m) + slot - start
            if x[lane] < lower:
                if pos == len(words):
                    raise CorruptDataError("ends early")
                x[lane] = x[lane] * 65536 + words[pos]
                pos += 1
            if total + inc > m:
                counts[lane] = c = [(v + 1) // 2 for v in c]
            c[s] += inc
    if pos != len(words) or any(v != lower for v in x):
        raise CorruptDataError("end")
    return out


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 4),
    f=st.integers(0, 40),
    n=st.sampled_from([2, 16, 64]),
    kind=st.sampled_from(["uniform", "geometric", "constant", "runs"]),
    p=st.integers(8, 16),
    inc=st.integers(1, 64),
    primed=st.booleans(),
)
def test_spec_decoder_agrees(seed, k, f, n, kind, p, inc, primed):
    rng = np.random.default_rng(seed)
    priors = rng.integers(1, (1 << p) // n + 1, (k, n)) if primed else None  # rows sum <= 2^p
    coder = AdaptiveCoder(n, k, prob_bits=p, increment=inc, priors=priors)
    codes = make_codes(seed, k, f, n, kind)
    payload = coder.encode(codes)
    assert spec_decode(payload, k, f, n, inc, p, priors) == codes.tolist()
    # Damaged payloads too: the spec and the coder agree on the codes or on the rejection.
    for bit in rng.integers(0, 8 * len(payload), 3):
        data = bytearray(payload)
        data[bit // 8] ^= 0x80 >> (bit % 8)
        try:
            expected = spec_decode(bytes(data), k, f, n, inc, p, priors)
        except CorruptDataError:
            with pytest.raises(CorruptDataError):
                coder.decode(bytes(data), f)
        else:
            assert coder.decode(bytes(data), f).tolist() == expected


def test_spec_decoder_agrees_on_a_long_packet():
    coder = AdaptiveCoder(16, 4, prob_bits=9, increment=50)  # halves every few frames
    codes = make_codes(11, 4, 300, 16, "geometric")
    assert spec_decode(coder.encode(codes), 4, 300, 16, 50, 9, None) == codes.tolist()
