"""Our T5 text encoder and tokenizer against transformers', and finding T5 on disk.

transformers is the independent implementation here (audiocraft runs its ``T5EncoderModel``
and ``T5Tokenizer``); audiotok itself no longer imports it to generate.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch
from test_loading import put_in_hf_cache

from audiotok.errors import CheckpointError, ModelNotAvailableError
from audiotok.generate.t5 import T5Config, relative_position_bucket, t5_encoder_from_state
from audiotok.generate.t5_load import load_t5
from audiotok.generate.t5_tokenizer import T5Tokenizer

transformers = pytest.importorskip("transformers")

CORPUS = [
    "lo-fi hip hop beat with warm piano chords",
    "an energetic rock song with drums and electric guitar",
    "dogs barking in the distance, rain on a tin roof",
    "ambient synth pads, slow and dreamy",
]
TEXTS = ["lo-fi  hip hop, warm piano!", "Ünïcode café — 東京", "", "dogs barking"]


def random_t5(feed_forward_proj: str, attn: str = "eager", **more) -> torch.nn.Module:
    """A random transformers T5 encoder, 3 blocks; 8 buckets up to distance 20, so that a
    40-token text reaches the log-spaced and the last buckets."""
    config = transformers.T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=20,
        feed_forward_proj=feed_forward_proj, **more,
    )  # fmt: skip
    model = transformers.T5EncoderModel._from_config(config, attn_implementation=attn)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # transformers' init is near zero: outputs would be too
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


def t5_tokenizer_dir(directory):
    """A T5-like unigram tokenizer (SentencePiece's model, Metaspace, ``</s>`` appended) saved
    by transformers as a T5 tokenizer, as an official T5 repository holds it."""
    from tokenizers import SentencePieceUnigramTokenizer, processors

    tok = SentencePieceUnigramTokenizer()
    tok.train_from_iterator(
        CORPUS * 20, vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>", show_progress=False,
    )  # fmt: skip
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    transformers.T5TokenizerFast(
        tokenizer_object=tok._tokenizer, pad_token="<pad>", eos_token="</s>",
        unk_token="<unk>", extra_ids=0,
    ).save_pretrained(directory)  # fmt: skip
    return directory


# The config's own dense_act_fn overrides what feed_forward_proj says, in transformers too.
@pytest.mark.parametrize(
    "feed_forward_proj, more",
    [("relu", {}), ("gated-gelu", {}), ("gated-gelu", {"dense_act_fn": "gelu"})],
)
def test_encoder_equals_transformers(feed_forward_proj, more):
    reference = random_t5(feed_forward_proj, **more)
    assert reference.config.dense_act_fn == more.get("dense_act_fn", reference.config.dense_act_fn)
    ours = t5_encoder_from_state(config_of(reference), reference.state_dict(), "test")
    ids = torch.randint(0, 100, (3, 40), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 40, dtype=torch.long)
    mask[1, 25:] = 0
    mask[2, 5:] = 0
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    # The same operations in the same order as transformers' eager attention: equal bits.
    assert torch.equal(got, expected)
    with torch.no_grad():  # its default attention (SDPA) rounds differently, not more
        sdpa = random_t5(feed_forward_proj, "sdpa", **more)(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(got, sdpa.last_hidden_state, rtol=0, atol=1e-5)


def test_relative_position_buckets_equal_transformers():
    distance = torch.arange(-300, 301)[None, :]
    reference = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    for buckets, far in [(32, 128), (8, 20)]:
        expected = reference(distance, bidirectional=True, num_buckets=buckets, max_distance=far)
        assert torch.equal(relative_position_bucket(distance, buckets, far), expected)
    # The docstring's worked examples.
    examples = relative_position_bucket(torch.tensor([-3, 3, -10, -200, 200]), 32, 128)
    assert examples.tolist() == [3, 19, 8, 15, 31]


def test_tokenizer_equals_transformers(tmp_path):
    directory = t5_tokenizer_dir(tmp_path / "tok")
    reference = transformers.AutoTokenizer.from_pretrained(directory)
    ours = T5Tokenizer.from_dir(directory)
    expected = reference(TEXTS, padding=True)
    ids, mask = ours.batch(TEXTS)
    assert ids.tolist() == expected["input_ids"]
    assert mask.tolist() == expected["attention_mask"]
    assert len(ours) == len(reference)
    assert ids[0, int(mask[0].sum()) - 1] == 1  # </s> closes each text; padding is <pad>, 0
    assert ids[2].tolist() == [1] + [0] * (ids.shape[1] - 1)
    ours.save(tmp_path / "copy")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "copy" / name).read_bytes() == (directory / name).read_bytes()
    # An older layout: special_tokens_map.json names the specials, and wins over a
    # tokenizer_config.json that does not list its tokens (here: padding with </s>, id 1).
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config.pop("added_tokens_decoder", None)
    (directory / "tokenizer_config.json").write_text(json.dumps(config | {"pad_token": "<pad>"}))
    (directory / "special_tokens_map.json").write_text(json.dumps({"pad_token": "</s>"}))
    expected = transformers.AutoTokenizer.from_pretrained(directory)(TEXTS, padding=True)
    ids, mask = T5Tokenizer.from_dir(directory).batch(TEXTS)
    assert (ids.tolist(), mask.tolist()) == (expected["input_ids"], expected["attention_mask"])
    assert ids[2, -1] == 1


@pytest.mark.parametrize("zipped", [True, False])  # torch.save's format, and its legacy one
def test_load_from_the_hugging_face_cache_offline(tmp_path, monkeypatch, zipped):
    """A T5 that transformers cached (here: PyTorch weights, no safetensors) is found by name."""
    import huggingface_hub.constants

    reference = random_t5("relu")
    folder = t5_tokenizer_dir(tmp_path / "t5")
    reference.config.save_pretrained(folder)
    state = {k: v for k, v in reference.state_dict().items() if k != "encoder.embed_tokens.weight"}
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=zipped)
    hub = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    with pytest.raises(ModelNotAvailableError, match=r"hf download tiny/t5 config\.json") as info:
        load_t5("tiny/t5", offline=True)
    assert "\n" not in str(info.value)

    def unresolved(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with monkeypatch.context() as m:  # online, but the Hub can't be reached: said as much
        m.setattr(socket, "getaddrinfo", unresolved)
        m.delenv("HF_ENDPOINT", raising=False)
        said = r"tiny/t5: not in the Hugging Face cache, and huggingface\.co unreachable \(Name"
        with pytest.raises(ModelNotAvailableError, match=said):
            load_t5("tiny/t5", offline=False)
    put_in_hf_cache(hub, "tiny/t5", folder)
    tokenizer, t5 = load_t5("tiny/t5", offline=True)
    ids, mask = tokenizer.batch(TEXTS[:2])
    torch.testing.assert_close(t5.shared.weight, state["shared.weight"], rtol=0, atol=0)
    assert t5(ids, mask).shape == (2, ids.shape[1], 32)


def test_a_whole_t5s_encoder_is_read_without_its_decoder(tmp_path, monkeypatch):
    """t5-base and t5-large are stored whole (encoder, decoder, LM head): only the encoder's
    tensors are read from the file, and they give transformers' encoder's states."""
    import safetensors

    config = random_t5("gated-gelu").config
    whole = transformers.T5ForConditionalGeneration._from_config(
        config, attn_implementation="eager"
    )
    whole.eval().save_pretrained(t5_tokenizer_dir(tmp_path / "t5"))
    read: list[str] = []
    opened = safetensors.safe_open

    class Recording:  # safe_open, recording the tensors read
        def __init__(self, *args, **kwargs):
            self.file = opened(*args, **kwargs)

        def __enter__(self):
            self.inner = self.file.__enter__()
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def get_tensor(self, key):
            read.append(key)
            return self.inner.get_tensor(key)

    monkeypatch.setattr(safetensors, "safe_open", Recording)
    tokenizer, t5 = load_t5(tmp_path / "t5", offline=True)
    assert read and not [k for k in read if k.startswith(("decoder.", "lm_head."))]
    ids, mask = tokenizer.batch(TEXTS)
    with torch.no_grad():
        expected = whole.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        assert torch.equal(t5(ids, mask), expected)


def test_weights_of_another_t5_are_refused(tmp_path):
    reference = random_t5("relu")
    config = T5Config.from_dict(reference.config.to_dict() | {"d_ff": 48})  # another T5
    with pytest.raises(CheckpointError, match=r"wi\.weight is \(64, 32\), its config makes it"):
        t5_encoder_from_state(config, reference.state_dict(), "t5")
    gated = {"feed_forward_proj": "gated-gelu", "is_gated_act": True, "dense_act_fn": "gelu_new"}
    gated = T5Config.from_dict(reference.config.to_dict() | gated)
    with pytest.raises(CheckpointError, match=r"T5 encoder weights missing \(encoder\.block"):
        t5_encoder_from_state(gated, reference.state_dict(), "t5")
    with pytest.raises(CheckpointError, match="activation 'tanh' is not one T5 uses"):
        T5Config.from_dict({"feed_forward_proj": "gated-tanh"})
    # A whole T5 (encoder and decoder, as t5-base is stored) loads its encoder.
    whole = reference.state_dict() | {"decoder.final_layer_norm.weight": torch.ones(32)}
    assert t5_encoder_from_state(config_of(reference), whole, "t5") is not None


def config_of(model: torch.nn.Module) -> T5Config:
    return T5Config.from_dict(model.config.to_dict())


def test_generating_imports_no_transformers(tmp_path):
    """A generator process starts without transformers (about 8 s of CPU it no longer pays)."""
    from generate_reference import save_audiocraft, tiny_musicgen

    export, t5_dir = save_audiocraft(tiny_musicgen(seed=0), tmp_path / "export")
    code = (
        "import sys; from audiotok.generate import MusicGen;"
        f"m = MusicGen.get_pretrained({str(export)!r}, device='cpu', text_encoder={str(t5_dir)!r});"
        "m.set_generation_params(duration=0.1); m.generate(['drums']);"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('transformers', 'peft')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
