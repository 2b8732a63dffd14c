"""Codecs and generation LMs under ``torch.inference_mode()``, loaded inside it or not.

Weights made under inference mode are inference tensors: they keep no version counter, can
only change in place under inference mode, and break if converted with ``.to()`` outside it.
Every path gives under inference mode exactly what it gives under ``no_grad``.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_codec

from audiotok.codec.conv import WeightNormedConv
from audiotok.codec.inference import module_to
from audiotok.codec.load import load_codec
from audiotok.zoo.codec_checkpoints import save_checkpoint


def noise(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.1


def segmented() -> object:
    return tiny_codec(
        "tiny48", sample_rate=48_000, channels=2, causal=False, norm="time_group_norm",
        normalize=True, segment=0.1, target_bandwidths=(1.2, 2.4),
    )  # fmt: skip


def everything(codec, x: torch.Tensor) -> dict[str, object]:
    """What every offline path of ``codec`` gives for ``x`` ``[1, C, T]``."""
    tokens = codec.encode(x, bandwidth=codec.bandwidths[-1])
    batch = codec.encode_batch([x[0], x[0, :, : x.shape[-1] // 3]], max_batch=2)
    return {
        "codes": tokens.codes,
        "scales": tokens.scales,
        "audio": codec.decode(tokens),
        "batch": [t.codes for t in batch],
        "batch audio": codec.decode_batch(batch),
        "fingerprint": codec.fingerprint(),
    }


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, list):
            assert all(torch.equal(p, q) for p, q in zip(x, y, strict=True)), key
        elif isinstance(x, torch.Tensor):
            assert torch.equal(x, y), key
        else:
            assert x == y, key


@pytest.mark.parametrize("make", [tiny_codec, segmented], ids=["causal", "segmented"])
def test_codec_made_under_inference_mode_equals_no_grad(make):
    x = noise(1, 2, 12_000)
    reference = make()
    x = x[:, : reference.channels]
    with torch.no_grad():
        expected = everything(reference, x)
    with torch.inference_mode():
        codec = make()
        assert all(p.is_inference() for p in codec.model.parameters())
        assert_same(expected, everything(codec, x))
    # used afterwards, outside inference mode, and a normal codec used inside it
    assert_same(expected, everything(codec, x))
    with torch.inference_mode():
        assert_same(expected, everything(reference, x))


def test_loading_a_checkpoint_under_inference_mode(tmp_path):
    reference = tiny_codec()
    card = save_checkpoint(reference.model, tmp_path / "tiny.json", name="tiny")
    x = noise(1, 1, 5000)
    with torch.no_grad():
        expected = everything(load_codec(card), x)
    with torch.inference_mode():
        codec = load_codec(card)
        assert next(codec.model.parameters()).is_inference()
        assert_same(expected, everything(codec, x))


def stream_causal(codec, x: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    with codec.streaming(1, 0.6) as s:
        codes = [s.encode(x[..., i : i + chunk]) for i in range(0, x.shape[-1], chunk)]
        codes.append(s.encode_end())
        audio = [s.decode(c) for c in codes] + [s.decode_end()]
    return torch.cat(codes, -1), torch.cat(audio, -1)


def stream_segments(codec, x: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    with codec.streaming(1, 2.4) as s:
        pieces = []
        for i in range(0, x.shape[-1], chunk):
            pieces += s.encode(x[..., i : i + chunk])
        pieces += s.encode_end()
        audio = [s.decode(c, scale) for c, scale in pieces] + [s.decode_end()]
    return torch.cat([c for c, _ in pieces], -1), torch.cat(audio, -1)


@pytest.mark.parametrize(
    ("make", "stream"),
    [(tiny_codec, stream_causal), (segmented, stream_segments)],
    ids=["causal", "segmented"],
)
def test_streaming_under_inference_mode_equals_no_grad(make, stream):
    reference = make()
    x = noise(1, reference.channels, 11_000)
    with torch.no_grad():
        codes, audio = stream(reference, x, 1000)
    with torch.inference_mode():
        codec = make()
        got = stream(codec, x, 1000)
    assert torch.equal(got[0], codes) and torch.equal(got[1], audio)
    outside = stream(codec, x, 1000)  # made under inference mode, streamed outside it
    assert torch.equal(outside[0], codes) and torch.equal(outside[1], audio)
    # a stream opened under inference mode and fed outside it, and the other way round
    with torch.inference_mode():
        s = codec.streaming(1, reference.bandwidths[-1])
    first = s.encode(x[..., :6000])
    with torch.inference_mode():
        rest = s.encode(x[..., 6000:])
    if isinstance(first, torch.Tensor):
        got = torch.cat([first, rest, s.encode_end()], -1)
    else:
        got = torch.cat([c for c, _ in first + rest + s.encode_end()], -1)
    assert torch.equal(got, codes)


def test_weights_loaded_under_inference_mode_follow_updates():
    """Inference tensors have no version: load_state_dict still refreshes the folded
    weights and the fingerprint."""
    x = noise(1, 1, 3200)
    with torch.inference_mode():
        codec = tiny_codec()
        before, fingerprint = codec.decode(codec.encode(x)), codec.fingerprint()
        state = {
            k: v + 0.05 if k.endswith("weight_v") else v
            for k, v in codec.model.state_dict().items()
        }
        codec.model.load_state_dict(state)
        after = codec.decode(codec.encode(x))
        assert codec.fingerprint() != fingerprint
    fresh = tiny_codec()
    fresh.model.load_state_dict(state)
    assert not torch.equal(before, after)
    assert torch.equal(after, fresh.decode(fresh.encode(x)))
    assert codec.fingerprint() == fresh.fingerprint()


def test_folded_weights_made_under_inference_mode_follow_in_place_steps(codec):
    """The cache, filled under inference mode, sees an optimiser-like in-place update."""
    x = noise(1, 1, 3200)
    with torch.inference_mode():
        before = codec.decode(codec.encode(x))
    conv = [m for m in codec.model.decoder.modules() if isinstance(m, WeightNormedConv)][-1]
    with torch.no_grad():
        conv.weight_g.mul_(1.5)
    with torch.inference_mode():
        after = codec.decode(codec.encode(x))
    with torch.no_grad():
        weight = torch._weight_norm(conv.weight_v, conv.weight_g, 0)
        assert torch.equal(conv.effective_weight(), weight)
    assert not torch.equal(before, after)


def test_converting_weights_made_under_inference_mode():
    """``.to()`` outside inference mode would leave such weights unusable; ``module_to``
    (behind ``Codec.to``) converts them under inference mode."""
    x = noise(1, 1, 4000)
    expected = tiny_codec().encode(x).codes
    with torch.inference_mode():
        codec = tiny_codec()
        codec.encode(x)  # fills the folded-weight cache
    module_to(codec.model, torch.float64)
    assert next(codec.model.parameters()).dtype == torch.float64
    module_to(codec.model, torch.float32)
    codec.to("cpu")
    assert torch.equal(codec.encode(x).codes, expected)
    with torch.inference_mode():
        assert torch.equal(codec.encode(x).codes, expected)


# --- generation ----------------------------------------------------------------------------

TEXTS = ["lo fi beat with drums", "calm piano song with guitar"]


@pytest.fixture(scope="module")
def musicgen_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from generate_reference import save_hf, tiny_musicgen

    return save_hf(tiny_musicgen(seed=0), tmp_path_factory.mktemp("inference") / "hf")


def generations(model) -> dict[str, object]:
    """Sampled (seeded) text, unconditional and continuation runs, and a stream."""
    prompt = noise(2, 1, 3200, seed=1)
    model.set_generation_params(duration=0.3, seed=0)
    out = {"text": model.generate(TEXTS, return_tokens=True)}
    model.set_generation_params(duration=0.2, seed=3)
    out["unconditional"] = model.generate_unconditional(2, return_tokens=True)
    model.set_generation_params(duration=0.4, seed=0)
    out["continuation"] = model.generate_continuation(prompt, 16_000, TEXTS, return_tokens=True)
    model.set_generation_params(duration=0.3, seed=0)
    out["stream"] = torch.cat(list(model.generate_stream(TEXTS, chunk_duration=0.1)), -1)
    return out


def assert_same_generations(a: dict[str, object], b: dict[str, object]) -> None:
    for key in a:
        x, y = a[key], b[key]
        pairs = zip(x, y, strict=True) if isinstance(x, tuple) else [(x, y)]
        assert all(torch.equal(p, q) for p, q in pairs), key


def test_generation_under_inference_mode_equals_no_grad(musicgen_dir):
    from audiotok.generate import MusicGen

    with torch.no_grad():
        expected = generations(MusicGen.get_pretrained(musicgen_dir, device="cpu"))
    with torch.inference_mode():
        model = MusicGen.get_pretrained(musicgen_dir, device="cpu")
        assert next(model.lm.parameters()).is_inference()
        assert_same_generations(expected, generations(model))
    assert_same_generations(expected, generations(model))  # loaded inside, used outside


def test_generation_stream_resumed_in_another_mode(musicgen_dir):
    """A stream started under inference mode and consumed outside it (its state is then
    inference tensors), and the other way round; neither leaks its mode into the consumer."""
    from audiotok.generate import MusicGen

    model = MusicGen.get_pretrained(musicgen_dir, device="cpu")
    model.set_generation_params(duration=0.3, seed=0)
    expected = torch.cat(list(model.generate_stream(TEXTS, chunk_duration=0.1)), -1)
    with torch.inference_mode():
        stream = model.generate_stream(TEXTS, chunk_duration=0.1)
        first = next(stream)
    assert torch.is_grad_enabled()
    assert torch.equal(torch.cat([first, *stream], -1), expected)
    stream = model.generate_stream(TEXTS, chunk_duration=0.1)
    first = next(stream)
    assert torch.is_grad_enabled(), "the generation's no_grad must not leak between chunks"
    with torch.inference_mode():
        rest = list(stream)
    assert torch.equal(torch.cat([first, *rest], -1), expected)


def test_lm_loaded_under_inference_mode_changes_precision(musicgen_dir):
    from audiotok.generate import MusicGen

    reference = MusicGen.get_pretrained(musicgen_dir, device="cpu")
    reference.set_precision("bf16")
    reference.set_generation_params(use_sampling=False, duration=0.2)
    expected = reference.generate(TEXTS, return_tokens=True)[1]
    with torch.inference_mode():
        model = MusicGen.get_pretrained(musicgen_dir, device="cpu")
    model.set_precision("bf16")  # outside inference mode
    assert model.lm.dtype == torch.bfloat16
    model.set_generation_params(use_sampling=False, duration=0.2)
    assert torch.equal(model.generate(TEXTS, return_tokens=True)[1], expected)


def test_what_the_codec_returns_is_an_ordinary_tensor():
    """ML users feed codes to an embedding they train and audio to a loss: inference tensors
    (what ``torch.inference_mode`` makes) refuse both outside inference mode."""
    codec = tiny_codec()
    x = noise(1, 1, 4800)
    tokens = codec.encode(x)
    audio = codec.decode(tokens)
    with codec.streaming(1) as stream:
        streamed = [stream.encode(x), stream.encode_end()]
        streamed.append(stream.decode(streamed[0]))
    batch = codec.encode_batch([x[0]])[0]
    returned = [tokens.codes, audio, *streamed, batch.codes, codec.decode_batch([batch])[0]]
    assert not any(t.is_inference() for t in returned)
    embedding = torch.nn.Embedding(codec.cardinality, 4)
    embedding(tokens.codes).sum().backward()
    assert embedding.weight.grad is not None
    gain = torch.ones((), requires_grad=True)
    torch.nn.functional.mse_loss(gain * audio, audio).backward()
    tokens.codes[0, 0, 0] = 1  # in place, as a masking step does
    seg = segmented()
    with seg.streaming(1) as stream:
        (codes, scale), *_ = stream.encode(noise(1, 2, 4800 * 2))
        assert not codes.is_inference() and not stream.decode(codes, scale).is_inference()
