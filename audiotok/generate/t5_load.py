"""Loading the T5 text encoder: from a local directory, the Hugging Face cache (found or
fetched by :mod:`audiotok.zoo.text_encoders`), or the weights bundled in a generator's
checkpoint, read by :mod:`audiotok.generate.t5` and :mod:`audiotok.generate.t5_tokenizer`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import AudiotokError, CheckpointError, ModelNotAvailableError
from ..zoo.text_encoders import NEEDED, OPTIONAL_FILES, T5_FILES, WEIGHT_FILES, t5_hub_files
from ..zoo.weights import float_state, load_safetensors, load_torch, read_json
from .t5 import DECODER_KEYS, T5Config, T5EncoderModel, t5_encoder_from_state
from .t5_tokenizer import T5Tokenizer

INSTALL_HINT = "pip install 'audiotok[generate]'"


def require_tokenizers() -> None:
    """Raises a one-line error saying how to install ``tokenizers`` when it is missing."""
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        raise AudiotokError(
            f"text conditioning needs the tokenizers package: {INSTALL_HINT}"
        ) from None


def load_t5(source: str | os.PathLike, offline: bool) -> tuple[T5Tokenizer, T5EncoderModel]:
    """A T5 tokenizer and encoder from a local directory or the Hugging Face cache.

    Args:
        source: A directory (``config.json``, weights, ``tokenizer.json``) or a Hugging Face
            name such as ``t5-base``.
        offline: Use the local cache only; otherwise a missing model is downloaded.

    Raises:
        ModelNotAvailableError: Not found locally and not downloadable.
        CheckpointError: Found, but not a T5 encoder's weights.
    """
    require_tokenizers()
    if Path(source).is_dir():
        directory = Path(source)
        names = ("config.json", "tokenizer.json", *OPTIONAL_FILES)
        files = {n: directory / n for n in names if (directory / n).is_file()}
        weights = [directory / n for n in WEIGHT_FILES if (directory / n).is_file()]
        files |= {"weights": weights[0]} if weights else {}
        where = f"text encoder {directory}"
    else:
        files = t5_hub_files(str(source), offline)
        where = f"text encoder {source}"
    missing = [" or ".join(WEIGHT_FILES) if n == "weights" else n for n in NEEDED if n not in files]
    if missing:
        raise ModelNotAvailableError(f"{where}: no {missing[0]}; a T5 encoder needs {T5_FILES}")
    tokenizer = T5Tokenizer.from_files(files, where)
    config = _config(read_json(files["config.json"]), where)
    weights = files["weights"]

    # Only the encoder's tensors are read: a whole T5's file (t5-base's, t5-large's) holds its
    # decoder too, more than half of it (about 1.6 of t5-large's 2.9 GB of float32).
    def encoder(key: str) -> bool:
        return not key.startswith(DECODER_KEYS)

    if weights.suffix == ".safetensors":
        raw = load_safetensors(weights, keep=encoder)
    else:  # mapped: the decoder's tensors are never read
        raw = load_torch(weights, mmap=True)
        raw = {k: v for k, v in raw.items() if encoder(k)} if isinstance(raw, dict) else raw
    state = float_state(raw, weights)
    check_tokenizer(tokenizer, config.vocab_size, where)
    return tokenizer, t5_encoder_from_state(config, state, where)


def t5_from_state(
    config: dict[str, Any], state: dict[str, torch.Tensor], tokenizer_dir: str | os.PathLike
) -> tuple[T5Tokenizer, T5EncoderModel]:
    """A T5 tokenizer (from ``tokenizer_dir``) and encoder built from a config and weights.

    Used for checkpoints that hold the T5 encoder beside the LM (transformers' MusicGen,
    ``text_encoder.*``; audiotok's own export) with its tokenizer files.
    """
    require_tokenizers()
    tokenizer = T5Tokenizer.from_dir(tokenizer_dir)
    t5_config = _config(config, str(tokenizer_dir))
    check_tokenizer(tokenizer, t5_config.vocab_size, str(tokenizer_dir))
    return tokenizer, t5_encoder_from_state(t5_config, state, f"T5 text encoder {tokenizer_dir}")


def _config(config: dict[str, Any], where: str) -> T5Config:
    try:
        return T5Config.from_dict(config)
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def check_tokenizer(tokenizer: T5Tokenizer, vocab_size: int, where: str) -> None:
    """Raises unless ``tokenizer`` can be the T5 encoder's (``vocab_size`` embedding rows).

    A tokenizer of another model, or of a few specials only, reads every word as ``<unk>``:
    every prompt then gives the same music. A real one has nearly as many tokens as the
    encoder has rows (t5-base: 32100 of 32128), never more.

    Raises:
        ModelNotAvailableError: A tokenizer of under half the rows, or more than all of them.
    """
    tokens = len(tokenizer)
    if not vocab_size // 2 <= tokens <= vocab_size:
        raise ModelNotAvailableError(
            f"{where}: its T5 tokenizer has {tokens} tokens for a text encoder of {vocab_size}: "
            "tokenizer.json is missing or another model's"
        )
