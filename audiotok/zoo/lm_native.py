"""audiotok's own MusicGen / AudioGen format: safetensors and JSON, everything in one folder.

What ``audiotok finetune`` exports (``RUN/export/audiotok/``), and what :func:`load_lm`,
``MusicGen.get_pretrained(DIR)`` and ``audiotok generate -m DIR`` read::

    lm.json             {"format": "audiotok.lm", "version": 1, "config": LMConfig.to_dict(),
                         "weights": "lm.safetensors", "codec": "codec.json",
                         "text_encoder": T5Config dict or null, ...provenance}
    lm.safetensors      the LM under audiocraft's keys, the conditioners' projections under
                        ``condition_provider.conditioners.{name}.output_proj.*`` (as in an
                        audiocraft ``best_state``), and the T5 encoder under ``text_encoder.*``
                        (transformers' ``T5EncoderModel`` keys; ``shared.weight`` only)
    codec.json + .safetensors    the codec as an audiotok codec card (:func:`load_codec`)
    tokenizer.json ...  the T5 tokenizer, as transformers saves it

With ``text_encoder`` null the T5 encoder is fetched by the name in the config (as for an
audiocraft export). No pickle: nothing here is read with ``torch.load``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from ..generate.lm_config import LMConfig
from .lm_checkpoints import LMCheckpoint, split_conditioner_states
from .weights import card_file, card_version, float_state, load_safetensors, read_json

LM_FORMAT = "audiotok.lm"
LM_VERSION = 1
CARD_NAME = "lm.json"
WEIGHTS_NAME = "lm.safetensors"
CODEC_CARD = "codec.json"
T5_PREFIX = "text_encoder."


def read_audiotok_lm(directory: Path) -> LMCheckpoint:
    """Reads an ``audiotok.lm`` folder (see the module doc).

    Raises:
        CheckpointError: Not ours, a newer version, missing or damaged files.
    """
    card = read_json(directory / CARD_NAME)
    if card.get("format") != LM_FORMAT:
        raise CheckpointError(f"{directory / CARD_NAME}: not an audiotok LM card")
    card_version(card, LM_VERSION, directory / CARD_NAME)
    try:
        config = LMConfig.from_dict(card["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory / CARD_NAME}: bad LM config ({exc})") from None
    weights = card_file(card, "weights", WEIGHTS_NAME, directory / CARD_NAME)
    if not weights.is_file():
        raise CheckpointError(f"{directory}: its weights file {weights.name} is missing")
    state = float_state(load_safetensors(weights), weights)
    t5_state = {k[len(T5_PREFIX) :]: v for k, v in state.items() if k.startswith(T5_PREFIX)}
    state = {k: v for k, v in state.items() if not k.startswith(T5_PREFIX)}
    try:
        lm_state, conditioner_states = split_conditioner_states(state, config)
    except CheckpointError as exc:
        raise CheckpointError(f"{weights}: {exc}") from None
    codec = card_file(card, "codec", CODEC_CARD, directory / CARD_NAME)
    t5_config = card.get("text_encoder")
    if t5_config is not None and not t5_state:
        raise CheckpointError(f"{weights}: the card names a bundled T5 encoder, none is stored")
    return LMCheckpoint(
        path=directory,
        format="audiotok",
        config=config,
        lm_state=lm_state,
        conditioner_states=conditioner_states,
        codec_path=codec if codec.is_file() else None,
        t5_config=t5_config,
        t5_state=t5_state or None,
    )


def t5_tensors(t5: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A T5 encoder's weights for ``lm.safetensors`` (``text_encoder.*``), ties stored once.

    safetensors refuses tensors that share memory; the encoder's token embedding is
    ``shared.weight`` again, which :func:`~audiotok.generate.conditioners.t5_from_state` ties
    back when it is missing.
    """
    out = {}
    for key, value in t5.state_dict().items():
        if key == "encoder.embed_tokens.weight":
            continue
        out[T5_PREFIX + key] = value.detach().cpu().contiguous().clone()
    return out
