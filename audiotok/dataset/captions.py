"""Captions for token datasets: a description per audio file, kept in the dataset's index.

A file's caption comes, first found wins, from

* the manifest's ``description`` column (any manifest column is kept in the index already);
* a sidecar ``FILE.json`` beside the audio file, as audiocraft's ``MusicDataset`` reads it
  (``Path(path).with_suffix('.json')``): its ``description`` key;
* a sidecar ``FILE.txt`` beside it: the whole text, stripped (an audiotok convenience;
  audiocraft reads no ``.txt``).

The caption is stored as the index record's ``description`` (docs/DATASETS.md), which the
MusicGen / AudioGen fine-tuner (``audiotok finetune``) reads as the text condition.
"""

from __future__ import annotations

import json
from pathlib import Path

from .layout import DatasetError

CAPTION_KEY = "description"


def sidecar_caption(audio: Path) -> str | None:
    """The caption of ``audio`` from a ``.json`` or ``.txt`` file beside it, or None.

    Raises:
        DatasetError: A sidecar that exists but can't be read, or a ``.json`` whose
            ``description`` is not a string.
    """
    info = audio.with_suffix(".json")
    if info.is_file():
        try:
            data = json.loads(info.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DatasetError(f"{info}: not a readable JSON caption file ({exc})") from None
        value = data.get(CAPTION_KEY) if isinstance(data, dict) else None
        if value is not None and not isinstance(value, str):
            raise DatasetError(f"{info}: '{CAPTION_KEY}' must be a string")
        if value and value.strip():
            return value.strip()
    text = audio.with_suffix(".txt")
    if text.is_file():
        try:
            value = text.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{text}: not a readable caption file ({exc})") from None
        return value or None
    return None


def with_caption(audio: Path, extra: dict[str, str]) -> dict[str, str]:
    """``extra`` (the manifest's columns) with a sidecar caption added when it has none."""
    if extra.get(CAPTION_KEY):
        return extra
    caption = sidecar_caption(audio)
    return extra if caption is None else {**extra, CAPTION_KEY: caption}
