"""Reading audiocraft LM exports (configs, key layouts, damage), the registry, and errors."""

from __future__ import annotations

import sys

import pytest
import torch
from generate_reference import musicgen_yaml
from test_generate_cache import CHROMA, SMALL, TEXT, random_lm

from audiotok.errors import AudiotokError, CheckpointError, ModelNotAvailableError
from audiotok.generate import ConditionTensors, LMConfig, find_generation_card, load_lm
from audiotok.generate.load import build_lm, read_lm_checkpoint

MELODY = LMConfig(
    **SMALL,
    conditioners=(CHROMA, TEXT),
    cross_attention=False,
    fuse_cross=(),
    fuse_prepend=("self_wav", "description"),
    delays=(0, 1, 2, 3),
    segment_duration=30.0,
)


def melody_yaml() -> str:
    """audiocraft's ``chroma2music`` conditioning on the tiny LM (``SMALL``), as exported."""
    text = musicgen_yaml().replace("card: 64", "card: 32")
    fuser_cross = "  cross:\n  - description\n"
    assert fuser_cross in text
    text = text.replace(fuser_cross, "  cross: []\n").replace(
        "  prepend: []\n", "  prepend:\n  - self_wav\n  - description\n"
    )
    return text.replace(
        "conditioners:\n",
        """conditioners:
  self_wav:
    model: chroma_stem
    chroma_stem:
      sample_rate: ${sample_rate}
      n_chroma: 12
      radix2_exp: 14
      argmax: true
      match_len_on_eval: false
      eval_wavs: null
      n_eval_wavs: 100
      cache_path: null
""",
    )


def write_export(directory, yaml_text: str, state: dict[str, torch.Tensor]):
    directory.mkdir(parents=True, exist_ok=True)
    pkg = {"xp.cfg": yaml_text, "best_state": state, "version": "1.3.0", "exported": True}
    torch.save(pkg, directory / "state_dict.bin")
    return directory / "state_dict.bin"


def melody_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """An LM ``best_state`` as audiocraft saves MusicGen-melody: fp16, with the conditioners'
    projections and the chroma extractor's STFT window."""
    state = {k: v.half() for k, v in random_lm(MELODY, seed).state_dict().items()}
    prefix = "condition_provider.conditioners."
    state[prefix + "self_wav.output_proj.weight"] = torch.randn(64, 12).half()
    state[prefix + "self_wav.output_proj.bias"] = torch.randn(64).half()
    state[prefix + "self_wav.chroma.spec.window"] = torch.hann_window(16)
    state[prefix + "description.output_proj.weight"] = torch.randn(64, 32).half()
    state[prefix + "description.output_proj.bias"] = torch.randn(64).half()
    return state


def test_melody_export_is_read(tmp_path):
    state = melody_state()
    ckpt = read_lm_checkpoint(write_export(tmp_path, melody_yaml(), state))
    assert ckpt.format == "audiocraft" and ckpt.codec_path is None
    assert ckpt.config == MELODY
    chroma, text = ckpt.config.conditioners
    assert (chroma.name, chroma.model, chroma.dim, chroma.sample_rate) == (
        "self_wav", "chroma_stem", 12, 32_000,
    )  # fmt: skip
    assert (chroma.n_chroma, chroma.radix2_exp, chroma.argmax) == (12, 14, True)
    assert (text.name, text.t5_name, text.dim) == ("description", "t5-base", 32)
    assert set(ckpt.conditioner_states["self_wav"]) == {"output_proj.weight", "output_proj.bias"}
    assert all(v.dtype == torch.float32 for v in ckpt.lm_state.values())
    lm = build_lm(ckpt.config, ckpt.lm_state, "test")
    codes = torch.randint(0, 33, (1, 4, 5))
    condition = {
        "self_wav": (torch.randn(1, 6, 64), torch.ones(1, 6, dtype=torch.long)),
        "description": (torch.randn(1, 3, 64), torch.ones(1, 3, dtype=torch.long)),
    }
    with torch.no_grad():
        assert lm(codes, ConditionTensors(condition)).shape == (1, 4, 5, 32)


def test_nn_multihead_attention_keys_are_renamed(tmp_path):
    """audiocraft LMs built without custom attention save ``self_attn.mha.*`` keys."""
    state = melody_state()
    renamed = {k.replace("self_attn.", "self_attn.mha."): v for k, v in state.items()}
    ckpt = read_lm_checkpoint(write_export(tmp_path, melody_yaml(), renamed))
    assert set(ckpt.lm_state) == {k for k in state if not k.startswith("condition_provider")}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("positional_embedding: sin", "positional_embedding: rope"), "positional_embedding"),
        (("kv_repeat: 1", "kv_repeat: 2"), "kv_repeat"),
        (("  sum: []", "  sum:\n  - description"), "fusers"),
        (("modeling: delay", "modeling: musiclm"), "musiclm"),
        (("model: t5", "model: clap"), "clap"),
        (("normalize_text: false", "normalize_text: true"), "normalize_text"),
        (("card: 32", "card: 40"), "don't fit"),
    ],
)
def test_unsupported_configs_are_one_line_errors(tmp_path, edit, message):
    text = melody_yaml()
    assert edit[0] in text
    path = write_export(tmp_path, text.replace(*edit), melody_state())
    with pytest.raises(CheckpointError, match=message) as info:
        ckpt = read_lm_checkpoint(path)
        build_lm(ckpt.config, ckpt.lm_state, str(path))
    assert "\n" not in str(info.value)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "state_dict.bin"
    torch.save({"xp.cfg": melody_yaml(), "best_state": melody_state(), "x": ValueError()}, path)
    with pytest.raises(CheckpointError, match="pickled") as info:
        read_lm_checkpoint(tmp_path)
    assert "weights_only" not in str(info.value)


def test_damaged_and_missing_checkpoints(tmp_path):
    (tmp_path / "state_dict.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        read_lm_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such file"):
        read_lm_checkpoint(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"config\.json"):
        read_lm_checkpoint(empty)
    with pytest.raises(ModelNotAvailableError, match="musicgen-small"):
        load_lm(tmp_path / "does-not-exist")


def test_export_without_codec_is_an_error(tmp_path):
    write_export(tmp_path, melody_yaml(), melody_state())
    with pytest.raises(CheckpointError, match=r"compression_state_dict\.bin"):
        load_lm(tmp_path)


def test_registry():
    card = find_generation_card("facebook/musicgen-small")
    assert card is not None and card.name == "musicgen-small"
    assert card.sources[0].filenames == ("state_dict.bin", "compression_state_dict.bin")
    assert (card.codec, card.text_encoder, card.channels) == ("encodec_32khz", "t5-base", 1)
    audiogen = find_generation_card("audiogen-medium")
    assert audiogen is not None
    assert (audiogen.codec, audiogen.text_encoder) == ("encodec_16khz", "t5-large")
    assert find_generation_card("musicgen-stereo-melody").channels == 2
    assert "CC-BY-NC" in card.licence
    assert find_generation_card("encodec_32khz") is None


def test_registry_model_not_cached_offline(monkeypatch):
    from audiotok.zoo import hub

    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    monkeypatch.setattr(hub, "find_local", lambda card: None)
    with pytest.raises(ModelNotAvailableError, match="musicgen-small") as info:
        load_lm("musicgen-small")
    assert "\n" not in str(info.value)


def test_missing_tokenizers_is_one_line(monkeypatch):
    from audiotok.generate.t5_load import load_t5

    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(AudiotokError, match=r"pip install 'audiotok\[generate\]'"):
        load_t5("t5-base", offline=True)


def test_codec_checkpoints_of_a_generator_are_found_or_named(tmp_path):
    """An official MusicGen snapshot (its config.json and compression_state_dict.bin) did not
    load as a codec, and the wrong file gave messages naming none."""
    import shutil

    from generate_reference import save_audiocraft, save_hf, tiny_musicgen

    from audiotok.errors import CheckpointError
    from audiotok.zoo.codec_checkpoints import read_checkpoint

    model = tiny_musicgen(seed=0)
    export, _ = save_audiocraft(model, tmp_path / "audiocraft")
    hf = save_hf(model, tmp_path / "hf")
    snapshot = shutil.copytree(export, tmp_path / "snapshot")
    shutil.copy(hf / "config.json", snapshot / "config.json")
    assert read_checkpoint(snapshot).path == snapshot / "compression_state_dict.bin"
    lm = export / "state_dict.bin"
    with pytest.raises(CheckpointError, match=rf"^{lm}: an audiocraft language model \(MusicGen"):
        read_checkpoint(lm)
    with pytest.raises(CheckpointError, match=rf"^{hf}: config.json describes a 'musicgen'"):
        read_checkpoint(hf)
