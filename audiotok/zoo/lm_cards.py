"""The generation model zoo: MusicGen and AudioGen, where their weights live, under what licence.

Each card names the official Hugging Face repository. Its first source is the audiocraft
export (``state_dict.bin`` + ``compression_state_dict.bin``), which every official repository
has; for MusicGen the transformers files come second, so a copy cached by transformers'
users is found too (a repository without them just never matches that source). The T5 text
encoder of an audiocraft export is fetched separately, by its Hugging Face name
(``text_encoder``).

This module imports no torch, so that listing models stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .codec_cards import CC_BY_NC, WeightsSource

AUDIOCRAFT_FILES = ("state_dict.bin", "compression_state_dict.bin")
HF_FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class GenerationCard:
    """Everything known about one generation model before its weights are loaded.

    Attributes:
        name: Registry name (``musicgen-small``).
        description: One line for model listings.
        task: ``text-to-music``, ``melody-to-music`` or ``text-to-sound``.
        sources: Where the weights can be fetched from, preferred first.
        codec: The codec's registry name (:func:`audiotok.load_codec`).
        text_encoder: Hugging Face name of the T5 encoder an audiocraft export needs.
        channels: Audio channels generated.
        licence: The weights' licence.
        aliases: Other names that resolve to this card (the Hugging Face ids).
    """

    name: str
    description: str
    task: str
    sources: tuple[WeightsSource, ...]
    codec: str
    text_encoder: str
    channels: int
    licence: str = CC_BY_NC
    aliases: tuple[str, ...] = field(default=())

    @property
    def local_use(self) -> str:
        """How to use a copy of the files got by hand (for "not available" messages)."""
        return "pass their directory as the model (`-m DIR`, `get_pretrained(DIR)`)"


def _card(name: str, description: str, task: str, *, channels: int = 1) -> GenerationCard:
    repo = f"facebook/{name}"
    audiogen = name.startswith("audiogen")
    sources = [WeightsSource("audiocraft", repo_id=repo, filenames=AUDIOCRAFT_FILES)]
    if not audiogen:  # transformers has no AudioGen
        sources.append(WeightsSource("hf", repo_id=repo, filenames=HF_FILES))
    return GenerationCard(
        name=name,
        description=description,
        task=task,
        sources=tuple(sources),
        codec="encodec_16khz" if audiogen else "encodec_32khz",
        text_encoder="t5-large" if audiogen else "t5-base",
        channels=channels,
        aliases=(repo,),
    )


GENERATION_CARDS: tuple[GenerationCard, ...] = (
    _card("musicgen-small", "MusicGen 300M, text to music, 32 kHz mono", "text-to-music"),
    _card("musicgen-medium", "MusicGen 1.5B, text to music, 32 kHz mono", "text-to-music"),
    _card("musicgen-large", "MusicGen 3.3B, text to music, 32 kHz mono", "text-to-music"),
    _card(
        "musicgen-melody",
        "MusicGen 1.5B, text and melody to music, 32 kHz mono",
        "melody-to-music",
    ),
    _card(
        "musicgen-melody-large",
        "MusicGen 3.3B, text and melody to music, 32 kHz mono",
        "melody-to-music",
    ),
    _card(
        "musicgen-stereo-small",
        "MusicGen 300M, text to music, 32 kHz stereo",
        "text-to-music",
        channels=2,
    ),
    _card(
        "musicgen-stereo-medium",
        "MusicGen 1.5B, text to music, 32 kHz stereo",
        "text-to-music",
        channels=2,
    ),
    _card(
        "musicgen-stereo-large",
        "MusicGen 3.3B, text to music, 32 kHz stereo",
        "text-to-music",
        channels=2,
    ),
    _card(
        "musicgen-stereo-melody",
        "MusicGen 1.5B, text and melody to music, 32 kHz stereo",
        "melody-to-music",
        channels=2,
    ),
    _card(
        "musicgen-stereo-melody-large",
        "MusicGen 3.3B, text and melody to music, 32 kHz stereo",
        "melody-to-music",
        channels=2,
    ),
    _card(
        "audiogen-medium",
        "AudioGen 1.5B, text to sound effects, 16 kHz mono",
        "text-to-sound",
    ),
)


def find_generation_card(name: str) -> GenerationCard | None:
    """The card named ``name`` (or aliased so), or None."""
    for card in GENERATION_CARDS:
        if name == card.name or name in card.aliases:
            return card
    return None


def generation_card_names() -> list[str]:
    """Registry names, in registry order."""
    return [card.name for card in GENERATION_CARDS]
