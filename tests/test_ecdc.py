"""``.ecdc`` interoperability with Meta's ``encodec`` package, raw and LM-coded.

The references are the package's own models and ``LMModel`` with random weights; ``compress``
and ``decompress`` are run on them by giving the models the official names and serving them
(and their LMs) through monkeypatches. Our LM is loaded from the reference LM's state dict
saved under the official file name.
"""

from __future__ import annotations

import io
import json
import math
import struct
import sys

import numpy as np
import pytest
import torch
from conftest import load_clip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_models import calibrate_codebooks_, encodec_package_model, import_encodec

from audiotok.codec.tokens import Tokens
from audiotok.compression.container import arithmetic
from audiotok.compression.container.ecdc import (
    pack_codes,
    read_ecdc,
    read_ecdc_header,
    segment_frames,
    unpack_codes,
    write_ecdc,
)
from audiotok.compression.container.ecdc_lm import EcdcLM, build_ecdc_lm, load_ecdc_lm
from audiotok.errors import (
    CheckpointError,
    CorruptDataError,
    FormatError,
    ModelNotAvailableError,
    TruncatedError,
    UnsupportedFormatError,
)
from audiotok.zoo.codec_cards import find_card

LM_FILES = {
    "encodec_24khz": "encodec_lm_24khz-1608e3c0.th",
    "encodec_48khz": "encodec_lm_48khz-7add9fc3.th",
}
# (model, bandwidth, clip, seconds): the 48 kHz clip is over 1 s to have two segments.
CASES = {
    "encodec_24khz": (1.5, "speech_24k.flac", 0.5),
    "encodec_48khz": (3.0, "music_48k_stereo.flac", 1.02),
}


def reference_lm(name: str, seed: int = 0, past_context: int | None = None):
    encodec = import_encodec()
    card = find_card(name).config
    frame_rate = math.ceil(card.frame_rate)
    torch.manual_seed(seed)
    lm = encodec.model.LMModel(
        card.n_q, 1024, num_layers=5, dim=200,
        past_context=past_context or int(3.5 * frame_rate),
    )  # fmt: skip
    return lm.eval()


class Reference:
    """A random ``encodec`` model named as an official one, its LM, a clip and its codes."""

    def __init__(self, name: str, directory) -> None:
        bandwidth, clip, seconds = CASES[name]
        self.name = name
        self.model = encodec_package_model(name)
        self.wav = load_clip(clip, self.model.sample_rate, self.model.channels, seconds)
        calibrate_codebooks_(self.model, "encodec", self.wav, name)
        self.model.name = name
        self.model.set_target_bandwidth(bandwidth)
        self.lm = reference_lm(name)
        self.model.get_lm_model = lambda: self.lm
        with torch.no_grad():
            self.frames = self.model.encode(self.wav)
        self.codes = torch.cat([codes for codes, _ in self.frames], dim=-1)
        scales = [scale for _, scale in self.frames]
        self.scales = None if scales[0] is None else torch.cat(scales, dim=1)
        self.tokens = Tokens(
            self.codes, self.scales, self.wav.shape[-1], self.model.sample_rate, bandwidth, name
        )
        path = directory / LM_FILES[name]
        torch.save(self.lm.state_dict(), path)
        self.our_lm = load_ecdc_lm(name, path=path)
        self._files: dict[bool, bytes] = {}

    def compress(self, use_lm: bool) -> bytes:
        if use_lm not in self._files:
            compress = sys.modules["encodec.compress"]
            self._files[use_lm] = compress.compress(self.model, self.wav[0], use_lm=use_lm)
        return self._files[use_lm]

    def decompress(self, data: bytes, monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
        compress = sys.modules["encodec.compress"]
        monkeypatch.setattr(compress, "MODELS", {self.name: lambda: self.model})
        return compress.decompress(data)[0]


@pytest.fixture(scope="module")
def references(encodec_package, tmp_path_factory):
    directory = tmp_path_factory.mktemp("lms")
    return {name: Reference(name, directory) for name in CASES}


PAIRS = [(name, use_lm) for name in CASES for use_lm in (False, True)]
PAIR_IDS = [f"{name}-{'lm' if use_lm else 'raw'}" for name, use_lm in PAIRS]


@pytest.mark.parametrize(("name", "use_lm"), PAIRS, ids=PAIR_IDS)
def test_reference_files_decode_to_reference_codes(references, name, use_lm):
    ref = references[name]
    data = ref.compress(use_lm)
    tokens = read_ecdc(data, lm_loader=lambda model: ref.our_lm)
    assert torch.equal(tokens.codes, ref.codes)
    assert ref.codes.unique().numel() > 20  # the codes are varied, not a constant
    if ref.scales is None:
        assert tokens.scales is None
    else:
        assert tokens.scales.shape[1] == 2  # two segments
        assert torch.equal(tokens.scales, ref.scales)
    assert (tokens.length, tokens.sample_rate) == (ref.wav.shape[-1], ref.model.sample_rate)
    assert (tokens.bandwidth, tokens.model_id) == (ref.tokens.bandwidth, name)
    header = read_ecdc_header(data)
    assert (header.use_lm, header.num_codebooks) == (use_lm, ref.codes.shape[1])


@pytest.mark.parametrize(("name", "use_lm"), PAIRS, ids=PAIR_IDS)
def test_our_files_are_the_reference_files_and_decode_there(references, name, use_lm, monkeypatch):
    ref = references[name]
    ours = write_ecdc(ref.tokens, name, lm=ref.our_lm if use_lm else None)
    assert ours == ref.compress(use_lm)
    audio = ref.decompress(ours, monkeypatch)
    with torch.no_grad():
        expected = ref.model.decode(ref.frames)[0, :, : ref.wav.shape[-1]]
    assert torch.equal(audio, expected)


def test_model_aliases_write_the_official_name(references):
    ref = references["encodec_24khz"]
    assert write_ecdc(ref.tokens, "facebook/encodec_24khz") == ref.compress(False)


def test_reference_reader_miscounts_frames_where_we_do_not(references, monkeypatch):
    # The reference's decompress counts ceil(n / sample_rate * frame_rate) frames in floats:
    # one too many at 6720 samples (21.000000000000004), so its own file fails there.
    ref = references["encodec_24khz"]
    wav = ref.wav[0, :, :6720]
    data = sys.modules["encodec.compress"].compress(ref.model, wav, use_lm=False)
    with torch.no_grad():
        codes = ref.model.encode(wav[None])[0][0]
    assert codes.shape[-1] == 21
    assert torch.equal(read_ecdc(data).codes, codes)
    with pytest.raises(EOFError):
        ref.decompress(data, monkeypatch)


# The LM ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(LM_FILES))
def test_lm_parameter_names_are_the_reference_keys(encodec_package, name):
    ref = reference_lm(name).state_dict()
    ours = build_ecdc_lm(name).state_dict()
    assert list(ours) == list(ref)
    assert all(ours[k].shape == ref[k].shape for k in ref)


@pytest.mark.parametrize(("name", "past_context", "steps"), [
    ("encodec_24khz", None, 12), ("encodec_48khz", None, 8), ("encodec_24khz", 5, 20),
])  # fmt: skip
def test_lm_steps_are_bit_identical_to_the_reference(encodec_package, name, past_context, steps):
    """Stepping frame by frame: same probabilities to the bit, also once the state is cut."""
    ref = reference_lm(name, seed=3, past_context=past_context)
    ours = EcdcLM(ref.n_q, 1024, past_context=ref.transformer.past_context).eval()
    ours.load_state_dict(ref.state_dict())
    codes = torch.randint(0, 1024, (1, ref.n_q // 4, steps), generator=torch.Generator())
    ref_in = torch.zeros_like(codes[..., :1])
    ref_states, ref_offset = None, 0
    stream = ours.stream(codes.shape[1])
    with torch.no_grad():
        for t in range(steps):
            expected, ref_states, ref_offset = ref(ref_in, ref_states, ref_offset)
            ref_in = codes[..., t : t + 1] + 1
            got = stream.probabilities()
            stream.feed(codes[0, :, t])
            assert torch.equal(got, expected[0, :, :, 0].t()), f"step {t}"
    assert [s.shape[1] for s in stream.states] == [s.shape[1] for s in ref_states]
    # One causal pass is the same function, but not (reliably) the same bits: not for coding.
    batched = ours.causal_probabilities(codes)
    assert torch.allclose(batched[0, :, :, -1].t(), got, atol=1e-6)


def test_load_lm_refuses_other_checkpoints(tmp_path):
    path = tmp_path / "lm.th"
    torch.save({"emb.0.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(CheckpointError, match="missing"):
        load_ecdc_lm("encodec_24khz", path)
    with pytest.raises(CheckpointError, match="no entropy-coding LM"):
        load_ecdc_lm("encodec_32khz", path)
    path.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable LM"):
        load_ecdc_lm("encodec_24khz", path)


def test_lm_offline_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as info:
        load_ecdc_lm("encodec_48khz")
    message = str(info.value)
    assert "\n" not in message and "downloads are off" in message
    assert "encodec_lm_48khz-7add9fc3.th" in message
    lm_file = write_ecdc(small_tokens(), "encodec_24khz", lm=small_lm())
    with pytest.raises(ModelNotAvailableError):
        read_ecdc(lm_file)  # no lm_loader: the official LM, which isn't there


def test_lm_from_cache_is_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOTOK_CACHE", str(tmp_path))
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    torch.save(build_ecdc_lm("encodec_24khz").state_dict(), tmp_path / LM_FILES["encodec_24khz"])
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_ecdc_lm("encodec_24khz")


# The arithmetic coder -------------------------------------------------------------------------


@pytest.mark.parametrize("cardinality", [2, 5, 1024])
def test_arithmetic_coder_matches_reference(encodec_package, cardinality):
    ac = sys.modules["encodec.quantization.ac"]
    gen = torch.Generator().manual_seed(cardinality)
    # Peaked and flat distributions: cheap and expensive symbols, long and short ranges.
    temperature = torch.tensor([0.3, 1.0, 8.0]).repeat(30)[:, None, None]
    pdfs = torch.softmax(torch.randn(90, 4, cardinality, generator=gen) * temperature, dim=-1)
    cdfs = arithmetic.build_stable_quantized_cdf(pdfs)
    symbols = torch.multinomial(pdfs.view(-1, cardinality), 1, generator=gen).view(90, 4)
    fo = io.BytesIO()
    coder = ac.ArithmeticCoder(fo)
    for t in range(90):
        for k in range(4):
            expected = ac.build_stable_quantized_cdf(pdfs[t, k], 24, check=False)
            assert torch.equal(cdfs[t, k], expected)
            coder.push(int(symbols[t, k]), expected)
    coder.flush()
    ours = arithmetic.ArithmeticCoder()
    for t in range(90):
        ours.push_frame(symbols[t], cdfs[t])
    data = ours.finish()
    assert data == fo.getvalue()
    decoder = arithmetic.ArithmeticDecoder(data + b"next")
    assert [decoder.pull_frame(cdfs[t]) for t in range(90)] == symbols.tolist()
    assert decoder.position == len(data)
    with pytest.raises(TruncatedError):
        rest = arithmetic.ArithmeticDecoder(data[:-1])
        for t in range(90):
            rest.pull_frame(cdfs[t])


@pytest.mark.parametrize("bits", [1, 3, 8, 10, 13])
def test_bit_packing_matches_reference(encodec_package, bits):
    binary = sys.modules["encodec.binary"]
    values = np.random.default_rng(bits).integers(0, 1 << bits, 101)
    fo = io.BytesIO()
    packer = binary.BitPacker(bits, fo)
    for value in values.tolist():
        packer.push(value)
    packer.flush()
    assert pack_codes(values, bits) == fo.getvalue()
    assert unpack_codes(fo.getvalue(), 101, bits).tolist() == values.tolist()


# Header and segments ------------------------------------------------------------------------


def small_tokens(name: str = "encodec_24khz", length: int = 640, k: int = 2, seed: int = 0):
    config = find_card(name).config
    frames = segment_frames(config, length)
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1024, (1, k, sum(frames)), generator=gen)
    scales = torch.rand(1, len(frames), generator=gen) + 0.5 if config.normalize else None
    bandwidth = next(b for b in config.target_bandwidths if config.num_codebooks(b) == k)
    return Tokens(codes, scales, length, config.sample_rate, bandwidth, name)


def small_lm(name: str = "encodec_24khz") -> EcdcLM:
    torch.manual_seed(0)
    return build_ecdc_lm(name).eval()


# One random LM per model, shared by the tests that only need some LM.
_LMS: dict[str, EcdcLM] = {}


def cached_lm(name: str) -> EcdcLM:
    if name not in _LMS:
        _LMS[name] = small_lm(name)
    return _LMS[name]


def test_header_is_the_reference_header(encodec_package):
    binary = sys.modules["encodec.binary"]
    fo = io.BytesIO()
    binary.write_ecdc_header(fo, {"m": "encodec_24khz", "al": 1601, "nc": 4, "lm": True})
    tokens = small_tokens("encodec_24khz", 1601, 4)
    data = write_ecdc(tokens, "encodec_24khz", lm=cached_lm("encodec_24khz"))
    assert data.startswith(fo.getvalue())
    header = read_ecdc_header(data)
    assert (header.model, header.length, header.num_codebooks, header.use_lm) == (
        "encodec_24khz", 1601, 4, True,
    )  # fmt: skip
    assert (header.sample_rate, header.bandwidth, header.payload_offset) == (
        24_000, 3.0, len(fo.getvalue()),
    )  # fmt: skip
    assert header.duration == 1601 / 24_000
    assert torch.equal(read_ecdc(data, lm_loader=cached_lm).codes, tokens.codes)


def test_segments_follow_the_model():
    from audiotok.codec.model import EncodecModel

    for name in CASES:
        config = find_card(name).config
        model = EncodecModel(config)
        for length in (1, 319, 320, 321, 6720, 47_520, 47_521, 48_000, 48_001, 95_040, 120_000):
            assert segment_frames(config, length) == [s.frames for s in model.segments(length)]


SEGMENT_CASES = [(n, False) for n in (1, 320, 47_521, 48_000, 95_041)] + [(1, True), (47_521, True)]


@pytest.mark.parametrize(("length", "use_lm"), SEGMENT_CASES)
def test_segment_edge_cases_round_trip(length, use_lm):
    # At 48 kHz, 47 521 and 95 041 samples end in a 1-sample segment, 48 000 in a 480-sample one.
    name = "encodec_48khz" if length > 320 else "encodec_24khz"
    tokens = small_tokens(name, length, 2)
    lm = small_lm(name) if use_lm else None
    data = write_ecdc(tokens, name, lm=lm)
    back = read_ecdc(data, lm_loader=lambda model: lm)
    assert torch.equal(back.codes, tokens.codes)
    assert back.length == length
    if tokens.scales is not None:
        assert torch.equal(back.scales, tokens.scales)


@pytest.mark.parametrize(("change", "error"), [
    (lambda t: Tokens(t.codes.repeat(2, 1, 1), None, t.length, 24_000, 1.5, "x"), "batch size"),
    (lambda t: Tokens(t.codes[..., :-1], None, t.length, 24_000, 1.5, "x"), "frames"),
    (lambda t: Tokens(t.codes[:, :1], None, t.length, 24_000, 1.5, "x"), "codebooks"),
    (lambda t: Tokens(t.codes + 1024, None, t.length, 24_000, 1.5, "x"), r"\[0, 1024\)"),
    (lambda t: Tokens(t.codes, torch.ones(1, 1), t.length, 24_000, 1.5, "x"), "scales"),
])  # fmt: skip
def test_write_refuses_tokens_that_do_not_fit(change, error):
    with pytest.raises(ValueError, match=error):
        write_ecdc(change(small_tokens()), "encodec_24khz")


def test_write_refuses_models_without_ecdc():
    with pytest.raises(ValueError, match=r"no \.ecdc format"):
        write_ecdc(small_tokens(), "encodec_32khz")
    with pytest.raises(ValueError, match="scales"):
        tokens = small_tokens("encodec_48khz", 1000)
        write_ecdc(Tokens(tokens.codes, None, 1000, 48_000, 3.0, "x"), "encodec_48khz")


# Damaged files --------------------------------------------------------------------------------


def decode(data: bytes) -> Tokens | FormatError:
    """read_ecdc's result or its FormatError; any other exception fails the test."""
    try:
        return read_ecdc(data, lm_loader=cached_lm)
    except FormatError as exc:
        return exc


def ecdc_bytes(meta: dict | bytes, payload: bytes = b"", version: int = 0) -> bytes:
    body = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return struct.pack("!4sBI", b"ECDC", version, len(body)) + body + payload


SMALL_FILES = {
    "24khz-raw": ("encodec_24khz", 1600, False),
    "48khz-raw": ("encodec_48khz", 47_521, False),  # two segments, two scales
    "24khz-lm": ("encodec_24khz", 1600, True),
}


def small_file(kind: str) -> bytes:
    name, length, use_lm = SMALL_FILES[kind]
    return write_ecdc(small_tokens(name, length), name, lm=cached_lm(name) if use_lm else None)


@pytest.mark.parametrize("kind", list(SMALL_FILES))
def test_truncation_at_every_length_is_reported(kind):
    data = small_file(kind)
    assert isinstance(decode(data), Tokens)
    for n in range(len(data)):
        result = decode(data[:n])
        assert isinstance(result, TruncatedError), (n, result)
        assert result.offset is not None and result.offset <= n


@pytest.mark.parametrize("kind", list(SMALL_FILES))
def test_bit_flips_decode_or_raise_format_errors(kind):
    data = small_file(kind)
    # Every bit of the raw files; one bit per byte of the LM-coded one (each decode runs the LM).
    bits = range(0, len(data) * 8, 9 if kind.endswith("lm") else 1)
    outcomes = set()
    for bit in bits:
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        outcomes.add(type(decode(bytes(damaged))).__name__)
    assert outcomes <= {"Tokens", "TruncatedError", "CorruptDataError", "UnsupportedFormatError"}
    assert "Tokens" in outcomes and "CorruptDataError" in outcomes


META = {"m": "encodec_24khz", "al": 640, "nc": 2, "lm": False}
RAW_PAYLOAD = bytes(5)  # 2 frames x 2 codebooks x 10 bits
META48 = {"m": "encodec_48khz", "al": 320, "nc": 2, "lm": False}  # one segment of one frame
RAW48_PAYLOAD = bytes(3)


def meta(**changes) -> dict:
    return {**META, **changes}


BAD_FILES = {
    "empty": (b"", TruncatedError, 0),
    "magic": (b"RIFF\x00\x00\x00\x00WAVEfmt ", UnsupportedFormatError, 0),
    "short magic": (b"EC", TruncatedError, 2),
    "version": (ecdc_bytes(META, RAW_PAYLOAD, version=1), UnsupportedFormatError, 4),
    "json size absurd": (struct.pack("!4sBI", b"ECDC", 0, 2**32 - 1), CorruptDataError, 5),
    "json size past end": (ecdc_bytes(META)[:-3], TruncatedError, None),
    "not json": (ecdc_bytes(b"{m: 1}"), CorruptDataError, 9),
    "not utf-8": (ecdc_bytes(b'{"m": "\xff"}'), CorruptDataError, 9),
    "json list": (ecdc_bytes(b"[1, 2]"), CorruptDataError, 9),
    "deep json": (ecdc_bytes(b"[" * 60_000), CorruptDataError, 9),
    "no nc": (ecdc_bytes({"m": "encodec_24khz", "al": 640, "lm": False}), CorruptDataError, 9),
    "other model": (ecdc_bytes(meta(m="encodec_32khz")), UnsupportedFormatError, 9),
    "model not str": (ecdc_bytes(meta(m=5)), UnsupportedFormatError, 9),
    "al 0": (ecdc_bytes(meta(al=0)), CorruptDataError, 9),
    "al negative": (ecdc_bytes(meta(al=-640)), CorruptDataError, 9),
    "al float": (ecdc_bytes(meta(al=640.0)), CorruptDataError, 9),
    "al bool": (ecdc_bytes(meta(al=True)), CorruptDataError, 9),
    "al string": (ecdc_bytes(meta(al="640")), CorruptDataError, 9),
    "al over 24 h": (ecdc_bytes(meta(al=24 * 3600 * 24_000 + 1)), CorruptDataError, 9),
    "al huge": (ecdc_bytes(b'{"al": 1' + b"0" * 5000 + b"}"), CorruptDataError, 9),
    "nc 3": (ecdc_bytes(meta(nc=3)), CorruptDataError, 9),
    "nc 64": (ecdc_bytes(meta(nc=64)), CorruptDataError, 9),
    "nc 32 at 48 kHz": (ecdc_bytes(meta(m="encodec_48khz", nc=32)), CorruptDataError, 9),
    "nc bool": (ecdc_bytes(meta(nc=True)), CorruptDataError, 9),
    "lm string": (ecdc_bytes(meta(lm="yes")), CorruptDataError, 9),
    "lm int": (ecdc_bytes(meta(lm=1)), CorruptDataError, 9),
    "raw 24 h, no payload": (ecdc_bytes(meta(al=24 * 3600 * 24_000)), TruncatedError, None),
    "lm 24 h at 48 kHz, no payload": (
        ecdc_bytes(meta(m="encodec_48khz", al=24 * 3600 * 48_000, lm=True), bytes(10)),
        TruncatedError, None,
    ),
    "raw trailing bytes": (ecdc_bytes(META, RAW_PAYLOAD + b"x"), CorruptDataError, None),
    "nan scale": (
        ecdc_bytes(META48, struct.pack("!f", math.nan) + RAW48_PAYLOAD),
        CorruptDataError, None,
    ),
    "negative scale": (
        ecdc_bytes(META48, struct.pack("!f", -1.0) + RAW48_PAYLOAD),
        CorruptDataError, None,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_raise_the_right_format_error(case):
    data, error, offset = BAD_FILES[case]
    result = decode(data)
    assert type(result) is error, result
    if offset is not None:
        assert result.offset == offset, result
    assert "\n" not in str(result)


def test_lm_file_with_trailing_bytes_is_corrupt():
    result = decode(small_file("24khz-lm") + b"\x00")
    assert isinstance(result, CorruptDataError) and "after the last segment" in str(result)


def test_the_bad_files_are_otherwise_valid():
    assert isinstance(decode(ecdc_bytes(META, RAW_PAYLOAD)), Tokens)
    assert isinstance(decode(ecdc_bytes(META48, struct.pack("!f", 0.5) + RAW48_PAYLOAD)), Tokens)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda b: b"ECDC\x00" + b)))
def test_arbitrary_bytes_raise_only_format_errors(data):
    assert isinstance(decode(data), Tokens | FormatError)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["encodec_24khz", "encodec_48khz"]),
    st.integers(1, 5_000),
    st.sampled_from([2, 4, 8, 16, 32]),
    st.booleans(),
    st.binary(max_size=400),
)
def test_valid_headers_with_arbitrary_payloads(model, length, nc, use_lm, payload):
    data = ecdc_bytes({"m": model, "al": length, "nc": nc, "lm": use_lm}, payload)
    result = decode(data)
    assert isinstance(result, Tokens | FormatError)
    if isinstance(result, Tokens):
        assert result.codes.shape[1] == nc and result.length == length


def test_lm_decoded_with_other_threads_is_right_or_reported():
    """The LM's attention sums in a thread-count-dependent order in recent torch (docs/ECDC.md):
    a file coded with 1 thread and decoded with 2 decodes right, or fails saying why, but is
    never silently wrong (the decoder loses sync and the stream's length gives it away)."""
    tokens = small_tokens("encodec_24khz", 40 * 320, 2, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        data = write_ecdc(tokens, "encodec_24khz", lm=cached_lm("encodec_24khz"))
        torch.set_num_threads(2)
        result = decode(data)
    finally:
        torch.set_num_threads(threads)
    if isinstance(result, FormatError):
        assert "threads" in str(result) and "\n" not in str(result)
    else:
        assert torch.equal(result.codes, tokens.codes)
