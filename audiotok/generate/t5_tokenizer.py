"""T5's tokenizer from its ``tokenizer.json``, on the ``tokenizers`` library alone.

transformers' fast T5 tokenizer is this file run by ``tokenizers`` (SentencePiece's unigram
model, the Metaspace pre-tokenizer, ``</s>`` appended by the post-processor), with the pad
token named in ``tokenizer_config.json``. ``tokenizer(texts, padding=True)`` pads to the
longest text on the side that file names (right for T5) and does not truncate; so does
:meth:`T5Tokenizer.batch`. tests/test_generate_t5.py checks ids and masks against
transformers' ``AutoTokenizer`` on the same directory.

A directory is read through these files (``tokenizer.json`` required)::

    tokenizer.json            the pipeline: normaliser, pre-tokenizer, model, post-processor
    tokenizer_config.json     pad_token, padding_side (optional)
    special_tokens_map.json   pad_token (optional; older transformers wrote it, and as there
                              it wins unless tokenizer_config.json lists added_tokens_decoder)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelNotAvailableError, first_line
from ..runtime.files import atomic_path

FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class T5Tokenizer:
    """Texts to padded token ids and masks ``[B, T]``.

    Attributes:
        files: The files read (name -> bytes), written back unchanged by :meth:`save`.
        pad_id: The id padding takes (``<pad>``, 0, for T5).
    """

    def __init__(self, files: dict[str, bytes], where: str) -> None:
        from tokenizers import Tokenizer

        self.files = dict(files)
        try:
            self._tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
            settings: dict[str, Any] = {}
            if "tokenizer_config.json" in files:
                settings = json.loads(files["tokenizer_config.json"])
            # As transformers: the older special_tokens_map.json names the special tokens,
            # unless tokenizer_config.json lists its tokens itself (added_tokens_decoder).
            if "special_tokens_map.json" in files and "added_tokens_decoder" not in settings:
                settings |= json.loads(files["special_tokens_map.json"])
        except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
            reason = first_line(exc)
            raise ModelNotAvailableError(
                f"{where}: not a readable T5 tokenizer ({reason})"
            ) from None
        pad = settings.get("pad_token") or "<pad>"
        pad = pad.get("content", "<pad>") if isinstance(pad, dict) else str(pad)
        pad_id = self._tokenizer.token_to_id(pad)
        if pad_id is None:
            raise ModelNotAvailableError(f"{where}: its pad token {pad!r} is not in the vocabulary")
        self.pad_id: int = pad_id
        side = settings.get("padding_side") or "right"
        # transformers replaces whatever padding and truncation tokenizer.json sets with its
        # own call's: pad to the longest, never cut.
        self._tokenizer.no_truncation()
        self._tokenizer.enable_padding(direction=side, pad_id=pad_id, pad_token=pad)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> T5Tokenizer:
        """The tokenizer in ``directory``.

        Raises:
            ModelNotAvailableError: No ``tokenizer.json`` there, or one we can't read.
        """
        directory = Path(directory)
        return cls.from_files({n: directory / n for n in FILES}, str(directory))

    @classmethod
    def from_files(cls, paths: Mapping[str, Path], where: str) -> T5Tokenizer:
        """The tokenizer of the files in ``paths`` (name -> path; other names are ignored).

        Raises:
            ModelNotAvailableError: No ``tokenizer.json``, or one we can't read.
        """
        paths = {n: p for n, p in paths.items() if n in FILES and p.is_file()}
        if "tokenizer.json" not in paths:
            raise ModelNotAvailableError(
                f"{where}: no tokenizer.json, the T5 tokenizer (an official T5 or MusicGen "
                "repository has it beside spiece.model)"
            )
        return cls({n: p.read_bytes() for n, p in paths.items()}, where)

    def __len__(self) -> int:
        """Tokens in the vocabulary, added tokens included (transformers' ``len(tokenizer)``)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, both ``[B, T]`` int64, padded to the longest text."""
        encodings = self._tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return ids, mask

    def save(self, directory: str | os.PathLike) -> None:
        """Writes the files it was read from into ``directory`` (made if missing), each
        atomically; an existing file is an error, not replaced."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            with atomic_path(Path(directory) / name) as tmp:
                tmp.write_bytes(data)
