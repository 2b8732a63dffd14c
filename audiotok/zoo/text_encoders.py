"""Where a generator's T5 text encoder lives: its files in a Hugging Face repository.

audiocraft's exports name their T5 (``t5-base`` for MusicGen, ``t5-large`` for AudioGen) and
fetch it from the Hub at load. We fetch the same files into the same cache
(``huggingface_hub``), so a copy that transformers or audiocraft already cached is found
offline; :mod:`audiotok.generate.t5_load` reads them. This module imports no torch, so that
``audiotok models fetch`` can fetch a generator's T5 beside its weights.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelNotAvailableError
from .hub import check_hub_reachable

# What a T5 repository must hold for us (the weights as safetensors, else PyTorch's file).
T5_FILES = "config.json model.safetensors tokenizer.json tokenizer_config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
NEEDED = ("config.json", "tokenizer.json", "weights")
OPTIONAL_FILES = ("tokenizer_config.json", "special_tokens_map.json")


def t5_hub_files(name: str, offline: bool) -> dict[str, Path]:
    """``name``'s T5 files in the Hugging Face cache, fetched unless ``offline``: by file
    name, with ``weights`` for the weights found.

    Files are fetched one by one, not the whole repository: an official T5 repository also
    holds the weights for TensorFlow, Flax and Rust, gigabytes we never read.

    Raises:
        ModelNotAvailableError: A required file neither cached nor downloadable, in one line
            saying how to fetch it.
    """
    from huggingface_hub import hf_hub_download

    def fetch(filename: str, local_only: bool) -> Path | None:
        try:
            return Path(hf_hub_download(name, filename, local_files_only=local_only))
        except Exception as exc:  # offline, missing, HTTP: the hub has many error types
            if local_only or "EntryNotFound" in type(exc).__name__:
                return None
            raise ModelNotAvailableError(
                f"text encoder {name}: {type(exc).__name__}: "
                f"{(str(exc).strip().splitlines() or [''])[0]}"
            ) from None

    def first(candidates: tuple[str, ...], local_only: bool) -> Path | None:
        return next(filter(None, (fetch(n, local_only) for n in candidates)), None)

    wanted = {"config.json": ("config.json",), "tokenizer.json": ("tokenizer.json",)}
    wanted |= {"weights": WEIGHT_FILES} | {n: (n,) for n in OPTIONAL_FILES}
    found = {k: first(names, True) for k, names in wanted.items()}
    if not all(found[k] for k in NEEDED):
        how = f"on a machine online run `hf download {name} {T5_FILES}`, or pass a copy of it"
        if offline:
            raise ModelNotAvailableError(
                f"text encoder {name}: not found in the Hugging Face cache; {how} as the text "
                "encoder (text_encoder=DIR, --text-encoder DIR)"
            )
        try:
            check_hub_reachable()
        except ModelNotAvailableError as exc:
            raise ModelNotAvailableError(
                f"text encoder {name}: not in the Hugging Face cache, and {exc}; {how} as the "
                "text encoder (text_encoder=DIR, --text-encoder DIR)"
            ) from None
        found = {k: found[k] or first(names, False) for k, names in wanted.items()}
    missing = [k for k in NEEDED if not found[k]]
    if missing:
        what = " or ".join(WEIGHT_FILES) if missing[0] == "weights" else missing[0]
        raise ModelNotAvailableError(f"text encoder {name}: the Hub's repository has no {what}")
    return {k: v for k, v in found.items() if v is not None}
