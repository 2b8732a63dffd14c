"""The model zoo: one card per known codec, with its architecture and where its weights live.

A card names the architecture (a :class:`CodecConfig`), the official places its weights can
be fetched from (in order of preference), their hashes where known, and their licence. Names
are what users type after ``-m``; a few aliases (the Hugging Face ids) resolve to the same
cards.

This module imports no torch, so that ``audiotok models`` and ``--help`` stay fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..codec.config import CodecConfig

ENCODEC_URL = "https://dl.fbaipublicfiles.com/encodec/v0/"
CC_BY_NC = "CC-BY-NC-4.0 (weights released by Meta for non-commercial use)"
# Models that ship inside the package (safetensors + JSON card), usable with no download.
PACKAGED_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_CODEC = "audiotok_24khz"
PRIORS_KEY = "entropy_priors"  # kept beside the state dict in our weights files


@dataclass(frozen=True)
class WeightsSource:
    """One place a model's weights can be fetched from.

    Attributes:
        format: The checkpoint format: ``encodec`` (a ``.th`` state dict), ``hf``
            (a transformers directory), ``audiocraft`` (``compression_state_dict.bin``) or
            ``audiotok`` (safetensors + JSON; in the package itself when ``packaged``).
        url: A direct download URL (for ``encodec`` files), or None.
        repo_id: A Hugging Face repository, or None.
        filenames: Files to take from ``repo_id`` (the first is the weights).
        sha256: The file's SHA-256, in full or as its leading hex digits (as the ``encodec``
            file names carry), or None when unknown.
    """

    format: str
    url: str | None = None
    repo_id: str | None = None
    filenames: tuple[str, ...] = ()
    sha256: str | None = None
    packaged: bool = False

    @property
    def filename(self) -> str:
        """The weights file's name."""
        if self.url:
            return self.url.rsplit("/", 1)[-1]
        return self.filenames[0]

    def describe(self) -> str:
        """Where this source is, for messages."""
        if self.packaged:
            return f"shipped with audiotok ({PACKAGED_DIR / self.filenames[0]})"
        if self.url:
            return self.url
        return f"Hugging Face {self.repo_id} ({', '.join(self.filenames)})"


@dataclass(frozen=True)
class ModelCard:
    """Everything known about one model before its weights are loaded.

    Attributes:
        name: Registry name.
        description: One line for ``audiotok models``.
        config: The architecture.
        sources: Where the weights can be fetched from, preferred first.
        licence: The weights' licence.
        default_bandwidth: kbps used when none is given.
        aliases: Other names that resolve to this card.
    """

    name: str
    description: str
    config: CodecConfig
    sources: tuple[WeightsSource, ...]
    licence: str
    default_bandwidth: float
    aliases: tuple[str, ...] = field(default=())


ENCODEC_24KHZ = CodecConfig(
    sample_rate=24_000,
    channels=1,
    causal=True,
    norm="weight_norm",
    pad_mode="reflect",
    n_q=32,
    bins=1024,
    target_bandwidths=(1.5, 3.0, 6.0, 12.0, 24.0),
)

ENCODEC_48KHZ = CodecConfig(
    sample_rate=48_000,
    channels=2,
    causal=False,
    norm="time_group_norm",
    pad_mode="reflect",
    n_q=16,
    bins=1024,
    target_bandwidths=(3.0, 6.0, 12.0, 24.0),
    normalize=True,
    segment=1.0,
    overlap=0.01,
)

# audiocraft's `encodec_large_nq4_s640` / `_s320`: non-causal, zero padding, identity skips,
# four 2048-entry codebooks at 50 frames/s (2.2 kbps), as MusicGen and AudioGen were trained.
ENCODEC_32KHZ = CodecConfig(
    sample_rate=32_000,
    channels=1,
    causal=False,
    norm="weight_norm",
    pad_mode="constant",
    n_filters=64,
    ratios=(8, 5, 4, 4),
    true_skip=True,
    n_q=4,
    bins=2048,
    target_bandwidths=(2.2,),
)

ENCODEC_16KHZ = CodecConfig(
    sample_rate=16_000,
    channels=1,
    causal=False,
    norm="weight_norm",
    pad_mode="constant",
    n_filters=64,
    ratios=(8, 5, 4, 2),
    true_skip=True,
    n_q=4,
    bins=2048,
    target_bandwidths=(2.2,),
)


def _packaged_card(name: str, description: str) -> ModelCard | None:
    """The card of a model shipped in the package, read from its JSON, or None if absent.

    Only the small JSON card is read here (no torch, no weights).
    """
    path = PACKAGED_DIR / f"{name}.json"
    if not path.is_file():
        return None
    card = json.loads(path.read_text(encoding="utf-8"))
    return ModelCard(
        name=name,
        description=description,
        config=CodecConfig.from_dict(card["config"]),
        sources=(WeightsSource("audiotok", filenames=(path.name,), packaged=True),),
        licence=card.get("licence", "see the card"),
        default_bandwidth=float(card["default_bandwidth"]),
    )


_DEFAULT = _packaged_card(
    DEFAULT_CODEC, "audiotok's own 24 kHz mono codec, trained on open audio; ships in the package"
)

CARDS: tuple[ModelCard, ...] = (
    *((_DEFAULT,) if _DEFAULT else ()),
    ModelCard(
        name="encodec_24khz",
        description="EnCodec 24 kHz mono, causal (streamable), 1.5-24 kbps",
        config=ENCODEC_24KHZ,
        sources=(
            WeightsSource(
                "encodec", url=ENCODEC_URL + "encodec_24khz-d7cc33bc.th", sha256="d7cc33bc"
            ),
            WeightsSource(
                "hf",
                repo_id="facebook/encodec_24khz",
                filenames=("model.safetensors", "config.json"),
            ),
        ),
        licence=CC_BY_NC,
        default_bandwidth=6.0,
        aliases=("facebook/encodec_24khz",),
    ),
    ModelCard(
        name="encodec_48khz",
        description="EnCodec 48 kHz stereo, 1 s segments with loudness scales, 3-24 kbps",
        config=ENCODEC_48KHZ,
        sources=(
            WeightsSource(
                "encodec", url=ENCODEC_URL + "encodec_48khz-7e698e3e.th", sha256="7e698e3e"
            ),
            WeightsSource(
                "hf",
                repo_id="facebook/encodec_48khz",
                filenames=("model.safetensors", "config.json"),
            ),
        ),
        licence=CC_BY_NC,
        default_bandwidth=6.0,
        aliases=("facebook/encodec_48khz",),
    ),
    ModelCard(
        name="encodec_32khz",
        description="MusicGen's EnCodec 32 kHz mono, 4 codebooks of 2048, 2.2 kbps",
        config=ENCODEC_32KHZ,
        sources=(
            WeightsSource(
                "hf",
                repo_id="facebook/encodec_32khz",
                filenames=("model.safetensors", "config.json"),
            ),
            WeightsSource(
                "audiocraft",
                repo_id="facebook/musicgen-small",
                filenames=("compression_state_dict.bin",),
            ),
        ),
        licence=CC_BY_NC,
        default_bandwidth=2.2,
        aliases=("facebook/encodec_32khz",),
    ),
    ModelCard(
        name="encodec_16khz",
        description="AudioGen's EnCodec 16 kHz mono, 4 codebooks of 2048, 2.2 kbps",
        config=ENCODEC_16KHZ,
        sources=(
            WeightsSource(
                "audiocraft",
                repo_id="facebook/audiogen-medium",
                filenames=("compression_state_dict.bin",),
            ),
        ),
        licence=CC_BY_NC,
        default_bandwidth=2.2,
        aliases=("audiogen_16khz", "facebook/audiogen-medium"),
    ),
)


def find_card(name: str) -> ModelCard | None:
    """The card named ``name`` (or aliased so), or None."""
    for card in CARDS:
        if name == card.name or name in card.aliases:
            return card
    return None


def card_names() -> list[str]:
    """Registry names, in registry order."""
    return [card.name for card in CARDS]
