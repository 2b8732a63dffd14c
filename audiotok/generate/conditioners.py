"""Conditioning: text through T5, melody through a chromagram, as audiocraft computes them.

A conditioner turns a batch of inputs into a condition ``(embeds [B, T, dim], mask [B, T])``
at the LM's width, ``dim``; :class:`ConditionTensors` gathers them by name (``description``,
``self_wav``) and the LM fuses them as its config says (cross-attention or prepended).

Text follows audiocraft's ``T5Conditioner``: descriptions are tokenized together (padded to
the longest), a missing description (None) becomes ``""`` with its whole mask set to 0, the
T5 encoder's last hidden state goes through ``output_proj`` (Linear T5 width -> ``dim``) and
is multiplied by the mask, so padded and null positions are exactly zero. The null condition
of classifier-free guidance is therefore all zeros: audiocraft runs ``texts + [None] * B``
through the conditioner, which :meth:`ConditionTensors.cat` with :meth:`ConditionTensors.null`
reproduces for text.

Note: audiocraft does not mask cross-attention; zeroed positions take part in the softmax.
transformers' MusicGen does mask them, so the two differ on batches of unequal texts.
We follow audiocraft.

transformers (for T5) is optional: ``pip install 'audiotok[generate]'``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import AudiotokError, CheckpointError, ModelNotAvailableError

INSTALL_HINT = "pip install 'audiotok[generate]'"
# What transformers reads of a T5 repository for the encoder and its fast tokenizer.
T5_FILES = "config.json model.safetensors tokenizer.json spiece.model"


def require_transformers() -> Any:
    """The ``transformers`` module, or a one-line error saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise AudiotokError(
            f"text conditioning needs the transformers package: {INSTALL_HINT}"
        ) from None
    return transformers


@dataclass(frozen=True)
class ConditionTensors:
    """Conditions by name, each ``(embeds [B, T, dim], mask [B, T])``, for one batch.

    ``embeds`` are already projected to the LM's width and zero where ``mask`` is 0.
    Build a classifier-free-guidance batch with ``ConditionTensors.cat([cond, cond.null()])``.

    Attributes:
        tensors: Condition name -> ``(embeds, mask)``.
    """

    tensors: Mapping[str, tuple[torch.Tensor, torch.Tensor]]

    def __post_init__(self) -> None:
        sizes = {e.shape[0] for e, _ in self.tensors.values()}
        sizes |= {m.shape[0] for _, m in self.tensors.values()}
        if len(sizes) > 1:
            raise ValueError(f"conditions of different batch sizes: {sorted(sizes)}")

    @property
    def batch_size(self) -> int:
        """Sequences in the batch (0 when there are no conditions)."""
        for embeds, _ in self.tensors.values():
            return embeds.shape[0]
        return 0

    def __getitem__(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tensors[name]

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def names(self) -> list[str]:
        """Condition names."""
        return list(self.tensors)

    def null(self) -> ConditionTensors:
        """The null condition of the same shape: zero embeddings, zero mask.

        This is audiocraft's null *text* condition exactly. A melody's null condition is not
        zero (it is the projection of a silent chromagram): compute it with the conditioner.
        """
        return ConditionTensors(
            {n: (torch.zeros_like(e), torch.zeros_like(m)) for n, (e, m) in self.tensors.items()}
        )

    def merge(self, other: ConditionTensors) -> ConditionTensors:
        """The conditions of both (text and melody), which must have different names."""
        common = set(self.tensors) & set(other.tensors)
        if common:
            raise ValueError(f"conditions given twice: {', '.join(sorted(common))}")
        return ConditionTensors({**self.tensors, **other.tensors})

    @staticmethod
    def cat(conditions: Sequence[ConditionTensors]) -> ConditionTensors:
        """Concatenates along the batch, zero-padding each condition to the longest ``T``.

        Zero padding with mask 0 is what audiocraft's joint tokenization yields: padded
        positions are zeroed embeddings.
        """
        if not conditions:
            raise ValueError("nothing to concatenate")
        names = conditions[0].names()
        if any(sorted(c.names()) != sorted(names) for c in conditions):
            raise ValueError("conditions to concatenate have different names")
        out = {}
        for name in names:
            length = max(c[name][0].shape[1] for c in conditions)
            embeds, masks = [], []
            for c in conditions:
                e, m = c[name]
                pad = length - e.shape[1]
                embeds.append(nn.functional.pad(e, (0, 0, 0, pad)))
                masks.append(nn.functional.pad(m, (0, pad)))
            out[name] = (torch.cat(embeds), torch.cat(masks))
        return ConditionTensors(out)


class TextConditioner(nn.Module):
    """audiocraft's ``T5Conditioner`` at inference.

    Attributes:
        name: The condition's name (``description``).
        tokenizer: The T5 tokenizer (a transformers tokenizer).
        t5: The T5 encoder (``transformers.T5EncoderModel``), in eval mode.
        output_proj: Linear T5 width -> LM width; key ``output_proj`` as in audiocraft.
    """

    def __init__(self, name: str, tokenizer: Any, t5: nn.Module, output_dim: int) -> None:
        super().__init__()
        self.name = name
        self.tokenizer = tokenizer
        self.t5 = t5.eval()
        self.output_proj = nn.Linear(t5.config.d_model, output_dim)

    @torch.no_grad()
    def forward(self, texts: Sequence[str | None]) -> ConditionTensors:
        """Conditions ``[B, T, dim]`` for ``texts``; None means no description (null)."""
        return self.project(*self.encode(texts))

    @torch.no_grad()
    def encode(self, texts: Sequence[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen part: T5's last hidden states ``[B, T, d_t5]`` and the mask ``[B, T]``.

        Fine-tuning trains :attr:`output_proj` on these (T5 stays frozen, as audiocraft's
        ``finetune: false``), hence the split from :meth:`project`.
        """
        if isinstance(texts, str) or not len(texts):
            raise ValueError("texts must be a non-empty list of strings or None")
        entries = ["" if t is None else str(t) for t in texts]
        device = self.output_proj.weight.device
        inputs = self.tokenizer(entries, return_tensors="pt", padding=True)
        ids = inputs["input_ids"].to(device)
        mask = inputs["attention_mask"].to(device)
        empty = [i for i, entry in enumerate(entries) if entry == ""]
        mask[empty, :] = 0
        return self.t5(input_ids=ids, attention_mask=mask).last_hidden_state, mask

    def project(self, states: torch.Tensor, mask: torch.Tensor) -> ConditionTensors:
        """The learnt part: ``output_proj`` of :meth:`encode`'s states, zeroed where masked."""
        embeds = self.output_proj(states.to(self.output_proj.weight))
        return ConditionTensors({self.name: (embeds * mask.unsqueeze(-1), mask)})


class ChromaConditioner(nn.Module):
    """The projection of audiocraft's ``ChromaStemConditioner`` (MusicGen-melody).

    The chromagram itself (stem separation, STFT, chroma bins) is computed elsewhere
    (:mod:`audiotok.generate.chroma`); this holds the learnt part, ``output_proj``.
    """

    def __init__(self, name: str, n_chroma: int, output_dim: int) -> None:
        super().__init__()
        self.name = name
        self.output_proj = nn.Linear(n_chroma, output_dim)

    @torch.no_grad()
    def forward(self, chroma: torch.Tensor, mask: torch.Tensor | None = None) -> ConditionTensors:
        """Condition ``[B, T, dim]`` for a chromagram ``[B, T, n_chroma]`` (mask ``[B, T]``)."""
        embeds = self.output_proj(chroma.to(self.output_proj.weight))
        if mask is None:
            # As MusicGen-melody runs it (``_use_masking = False``): every frame counts.
            mask = torch.ones(embeds.shape[:2], dtype=torch.int64, device=embeds.device)
        return ConditionTensors({self.name: (embeds * mask.unsqueeze(-1), mask)})


class ConditionProvider(nn.Module):
    """All the conditioners of one LM, by name (audiocraft's ``ConditioningProvider``).

    Attributes:
        conditioners: Name -> :class:`TextConditioner` or :class:`ChromaConditioner`.
    """

    def __init__(self, conditioners: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.conditioners = nn.ModuleDict(conditioners)

    @property
    def text_names(self) -> list[str]:
        """Names of the text conditions."""
        return [n for n, c in self.conditioners.items() if isinstance(c, TextConditioner)]

    @property
    def wav_names(self) -> list[str]:
        """Names of the waveform (chroma) conditions."""
        return [n for n, c in self.conditioners.items() if isinstance(c, ChromaConditioner)]

    def forward(
        self,
        texts: Sequence[str | None],
        chroma: torch.Tensor | None = None,
        chroma_mask: torch.Tensor | None = None,
    ) -> ConditionTensors:
        """Conditions for a batch: ``texts`` (None = no description) and, for melody models,
        ``chroma`` ``[B, T, n_chroma]``."""
        out = ConditionTensors({})
        for name in self.text_names:
            out = out.merge(self.conditioners[name](texts))
        for name in self.wav_names:
            if chroma is None:
                raise ValueError(f"this model is conditioned on a melody ({name}): pass chroma")
            out = out.merge(self.conditioners[name](chroma, chroma_mask))
        return out


def load_t5(source: str | os.PathLike, offline: bool) -> tuple[Any, nn.Module]:
    """A T5 tokenizer and encoder from a local directory or the Hugging Face cache.

    Args:
        source: A directory (``config.json``, weights, tokenizer files) or a Hugging Face
            name such as ``t5-base``.
        offline: Use the local cache only; otherwise a missing model is downloaded.

    Raises:
        ModelNotAvailableError: Not found locally and not downloadable.
    """
    transformers = require_transformers()
    local = Path(source).is_dir()
    attempts = [True] if local or offline else [True, False]
    reason = ""
    for local_only in attempts:
        try:
            with _quiet(transformers):
                tokenizer = transformers.AutoTokenizer.from_pretrained(
                    str(source), local_files_only=local_only
                )
                t5, info = transformers.T5EncoderModel.from_pretrained(
                    str(source), local_files_only=local_only, output_loading_info=True
                )
        except (OSError, ValueError) as exc:  # hub, file and format errors
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            continue
        if info.get("missing_keys"):  # transformers fills them with random weights
            missing = sorted(info["missing_keys"])
            raise CheckpointError(
                f"text encoder {source}: {len(missing)} T5 encoder weights missing "
                f"({', '.join(missing[:2])}...): not a T5 encoder's checkpoint, or a damaged one"
            )
        check_tokenizer(tokenizer, t5.config.vocab_size, f"text encoder {source}")
        return tokenizer, t5.float().eval()
    if local:
        raise ModelNotAvailableError(
            f"text encoder {source}: not a readable T5 directory ({reason}); it needs "
            "config.json, the weights and the tokenizer files"
        )
    raise ModelNotAvailableError(
        f"text encoder {source}: not found in the Hugging Face cache ({reason}); on a machine "
        f"online run `hf download {source} {T5_FILES}`, or pass text_encoder=DIR (a copy of it)"
    )


def check_tokenizer(tokenizer: Any, vocab_size: int, where: str) -> None:
    """Raises unless ``tokenizer`` can be the T5 encoder's (``vocab_size`` embedding rows).

    Without its vocabulary files transformers still builds a T5 tokenizer (of its 100 extra
    ids and a few specials) that reads every word as ``<unk>``: every prompt then gives the
    same music. A real one has nearly as many tokens as the encoder has rows (t5-base: 32100
    of 32128), never more.

    Raises:
        ModelNotAvailableError: A tokenizer of under half the rows, or more than all of them.
    """
    tokens = len(tokenizer)
    if not vocab_size // 2 <= tokens <= vocab_size:
        raise ModelNotAvailableError(
            f"{where}: its T5 tokenizer has {tokens} tokens for a text encoder of {vocab_size}: "
            "the vocabulary files (tokenizer.json or spiece.model) are missing or another "
            "model's"
        )


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """Without transformers' per-tensor "Loading weights" bar (ours is the only progress shown)
    or its table of missing keys (they are an error, in one line)."""
    logging = transformers.utils.logging
    shown, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if shown:
            logging.enable_progress_bar()


def t5_from_state(
    config: dict[str, Any], state: dict[str, torch.Tensor], tokenizer_dir: str | os.PathLike
) -> tuple[Any, nn.Module]:
    """A T5 tokenizer (from ``tokenizer_dir``) and encoder built from a config and weights.

    Used for transformers' MusicGen checkpoints, which hold the T5 encoder (``text_encoder.*``)
    and its tokenizer files beside the LM.
    """
    transformers = require_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(tokenizer_dir), local_files_only=True
        )
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelNotAvailableError(
            f"{tokenizer_dir}: no readable T5 tokenizer files beside the weights ({reason})"
        ) from None
    t5_config = transformers.T5Config.from_dict(config)
    check_tokenizer(tokenizer, t5_config.vocab_size, str(tokenizer_dir))
    with torch.device("meta"):
        t5 = transformers.T5EncoderModel(t5_config)
    state = dict(state)
    # The token embedding is stored once, as `shared`; the encoder uses the same matrix.
    if "encoder.embed_tokens.weight" not in state and "shared.weight" in state:
        state["encoder.embed_tokens.weight"] = state["shared.weight"]
    result = t5.load_state_dict(state, strict=False, assign=True)
    left = [n for n, t in (*t5.named_parameters(), *t5.named_buffers()) if t.is_meta]
    if result.unexpected_keys or left:
        bad = ", ".join((result.unexpected_keys or left)[:2])
        raise CheckpointError(f"T5 text encoder weights don't fit its config ({bad})")
    return tokenizer, t5.float().eval()
