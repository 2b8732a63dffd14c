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

T5 runs on our own encoder (:mod:`audiotok.generate.t5`, transformers' keys and arithmetic);
its tokenizer needs the ``tokenizers`` package: ``pip install 'audiotok[generate]'``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .t5 import T5EncoderModel
from .t5_tokenizer import T5Tokenizer


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
        tokenizer: The T5 tokenizer.
        t5: The T5 encoder, in eval mode (frozen, as audiocraft's ``finetune: false``).
        output_proj: Linear T5 width -> LM width; key ``output_proj`` as in audiocraft.
    """

    def __init__(
        self, name: str, tokenizer: T5Tokenizer, t5: T5EncoderModel, output_dim: int
    ) -> None:
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
        ids, mask = (t.to(device) for t in self.tokenizer.batch(entries))
        empty = [i for i, entry in enumerate(entries) if entry == ""]
        mask[empty, :] = 0
        return self.t5(ids, mask), mask

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
