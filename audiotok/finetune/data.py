"""Captioned token datasets as fine-tuning batches: crops of codes, padding masks, captions.

The tokens are a dataset directory written by ``audiotok encode`` with the LM's own codec
(``encodec_32khz`` for MusicGen, ``encodec_16khz`` for AudioGen), identified by the codec's
fingerprint; captions are the index records' ``description`` (a manifest column, or a
``.json`` / ``.txt`` sidecar, :mod:`audiotok.dataset.captions`).

A training batch is ``batch_size`` crops of ``T`` frames, files drawn in proportion to their
length (as audiocraft samples on duration), each crop at a random start. A file shorter than
``T`` is padded with the special token and masked out of the loss, as audiocraft's solver
does with ``tokens.padding_with_special_token: true`` (masking the tokens past
``floor(n_samples / sample_rate * frame_rate)``; off in its default config, where the codes
of the zero-padded audio are trained on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..codec.base import Codec
from ..dataset.captions import CAPTION_KEY
from ..dataset.layout import INFO_NAME, DatasetError
from ..dataset.reader import TokenDataset
from ..generate.lm_config import LMConfig
from ..generate.load import codec_file
from ..zoo.codec_cards import find_card
from .config import DataConfig, FinetuneError


@dataclass
class Batch:
    """Crops for one forward pass.

    Attributes:
        codes: ``[B, K, T]`` int64; the special token (``card``) where padded.
        mask: ``[B, K, T]`` bool, True on real frames.
        texts: One caption per crop (None: no description, the null condition).
    """

    codes: torch.Tensor
    mask: torch.Tensor
    texts: list[str | None]

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device``."""
        return Batch(self.codes.to(device), self.mask.to(device), self.texts)


@dataclass(frozen=True)
class Clip:
    """One file of a dataset: its index, usable frames and caption."""

    dataset: TokenDataset
    index: int
    frames: int
    caption: str | None


def encode_model(codec: Codec, base: Path | None) -> str | None:
    """What ``audiotok encode -m`` takes for ``codec``: its registry name, else the codec's
    file beside the base checkpoint ``base``; None where there is none (the codec bundled in
    a transformers base's weights). A local codec's model id is a file stem, which ``-m``
    can't take.
    """
    if find_card(codec.model_id) is not None:
        return codec.model_id
    found = codec_file(base) if base is not None else None
    return None if found is None else str(found)


def _open(path: str, codec: Codec, lm: LMConfig, base: Path | None) -> TokenDataset:
    """A dataset, checked to hold tokens of the LM's codec with enough codebooks."""
    if not (Path(path) / INFO_NAME).is_file():
        raise FinetuneError(f"{path}: no token dataset there (make one with audiotok encode)")
    try:
        ds = TokenDataset(path)
    except (OSError, DatasetError) as exc:
        raise FinetuneError(str(exc)) from None
    info = ds.info
    same_format = (int(info["sample_rate"]), float(info["frame_rate"])) == (
        codec.sample_rate,
        float(codec.frame_rate),
    )
    if info.get("fingerprint") != codec.fingerprint().hex() or not same_format:
        model = encode_model(codec, base)
        how = (
            f"audiotok encode -m {model} ..."
            if model is not None
            else f"it is bundled in {base}'s transformers weights, which audiotok encode can't "
            "read: give -m that codec's own checkpoint"
        )
        raise FinetuneError(
            f"{path}: tokens of {info.get('model_id')} (fingerprint "
            f"{str(info.get('fingerprint'))[:12]}, {info['sample_rate']} Hz), but the model's "
            f"codec is {codec.model_id} ({codec.fingerprint().hex()[:12]}, "
            f"{codec.sample_rate} Hz); encode the audio with the model's codec ({how})"
        )
    if int(info["num_codebooks"]) < lm.n_q:
        raise FinetuneError(
            f"{path}: {info['num_codebooks']} codebooks per frame, the LM models {lm.n_q}; "
            "encode at a higher bandwidth (-b)"
        )
    if not len(ds):
        raise FinetuneError(f"{path}: the dataset holds no files")
    return ds


def _clips(ds: TokenDataset) -> list[Clip]:
    info, clips = ds.info, []
    for i in range(len(ds)):
        record = ds.record(i)
        # Frames made from real audio only: a last frame that is mostly padding is masked.
        real = math.floor(record["length"] / record["sample_rate"] * float(info["frame_rate"]))
        caption = record.get(CAPTION_KEY)
        caption = caption.strip() if isinstance(caption, str) and caption.strip() else None
        clips.append(Clip(ds, i, min(int(record["num_frames"]), real), caption))
    return clips


class CaptionedData:
    """The training and validation clips of a fine-tuning run.

    Args:
        config: The recipe's ``data`` section.
        lm: The LM's config (codebooks, card, segment duration).
        codec: The LM's codec: the datasets must hold its tokens.
        base: The base checkpoint's path, to name its codec's file in messages.

    Raises:
        FinetuneError: No dataset, another codec's tokens, no captions at all, too few files.
    """

    def __init__(
        self, config: DataConfig, lm: LMConfig, codec: Codec, base: Path | None = None
    ) -> None:
        if lm.stereo_interleave or lm.channels != 1:
            raise FinetuneError("fine-tuning stereo models is not supported (mono only)")
        if any(not c.is_text for c in lm.conditioners):
            raise FinetuneError("fine-tuning melody-conditioned models is not supported")
        self.config, self.lm = config, lm
        self.n_q, self.special = lm.n_q, lm.card
        train = _clips(_open(config.train, codec, lm, base))
        if config.valid:
            valid = _clips(_open(config.valid, codec, lm, base))
        else:
            if len(train) < 2:
                raise FinetuneError(
                    f"{config.train}: one file can't be split into training and validation; "
                    "add files or name data.valid"
                )
            every = max(2, round(1 / config.valid_fraction))
            held = set(range(every - 1, len(train), every)) or {len(train) - 1}
            valid = [c for i, c in enumerate(train) if i in held]
            train = [c for i, c in enumerate(train) if i not in held]
        if not any(c.caption for c in train):
            # Encoding into the same directory would skip every file it holds (a dataset
            # resumes, and -f does not apply to one): the captions need a new directory.
            raise FinetuneError(
                f"{config.train}: no captions (no 'description' in its index); give a manifest "
                "'description' column or .json/.txt files beside the audio, then encode again "
                f"into a new directory (or remove {config.train} first: encoding into it skips "
                "the files it holds)"
            )
        self.train = [c for c in train if c.frames > 0]
        self.valid = [c for c in valid if c.frames > 0][: config.valid_items]
        if not self.train or not self.valid:
            raise FinetuneError(f"{config.train}: no file long enough for one frame")
        seconds = config.segment_seconds or lm.segment_duration
        frame_rate = float(self.train[0].dataset.info["frame_rate"])
        # No longer than the longest clip: beyond it every crop is padding, masked out, and
        # a segment of hours would only fill memory.
        longest = max(c.frames for c in self.train + self.valid)
        self.frames = max(1, min(round(seconds * frame_rate), longest))
        self._weights = torch.tensor([float(c.frames) for c in self.train])

    def _codes(self, clip: Clip, start: int) -> torch.Tensor:
        """``[K, <= T]`` codes of ``clip`` from frame ``start``."""
        codes = clip.dataset[clip.index].codes[0, : self.n_q]
        return codes[:, start : min(start + self.frames, clip.frames)]

    def _batch(self, pieces: list[torch.Tensor], texts: list[str | None]) -> Batch:
        codes = torch.full((len(pieces), self.n_q, self.frames), self.special, dtype=torch.long)
        mask = torch.zeros(codes.shape, dtype=torch.bool)
        for b, piece in enumerate(pieces):
            codes[b, :, : piece.shape[-1]] = piece
            mask[b, :, : piece.shape[-1]] = True
        return Batch(codes, mask, texts)

    def sample(self, generator: torch.Generator) -> Batch:
        """A training micro-batch: files drawn by length, crops at random starts."""
        picks = torch.multinomial(self._weights, self.config.batch_size, True, generator=generator)
        pieces, texts = [], []
        for i in picks.tolist():
            clip = self.train[i]
            room = max(clip.frames - self.frames, 0)
            start = int(torch.randint(room + 1, (1,), generator=generator))
            pieces.append(self._codes(clip, start))
            texts.append(clip.caption)
        return self._batch(pieces, texts)

    def validation(self) -> list[Batch]:
        """The fixed validation batches: each held-out file's first ``T`` frames."""
        size = self.config.batch_size
        return [
            self._batch(
                [self._codes(c, 0) for c in self.valid[i : i + size]],
                [c.caption for c in self.valid[i : i + size]],
            )
            for i in range(0, len(self.valid), size)
        ]

    def describe(self) -> dict[str, object]:
        """Sizes for the log: files, frames per crop, captioned share."""
        return {
            "train_files": len(self.train),
            "valid_files": len(self.valid),
            "frames": self.frames,
            "captioned": sum(c.caption is not None for c in self.train) / len(self.train),
            "train": str(Path(self.config.train)),
        }
