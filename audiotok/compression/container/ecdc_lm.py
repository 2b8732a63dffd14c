"""The entropy-coding language model of ``.ecdc`` files (``encodec.model.LMModel``).

``.ecdc`` files written with ``use_lm=True`` arithmetic-code each frame's ``K`` codes with the
probabilities a small causal transformer predicts from the previous frames. :class:`EcdcLM`
is that model: a sum of per-codebook embeddings of the previous frame's codes (index 0 means
"no previous frame", code ``c`` is index ``c + 1``), input LayerNorm, sinusoidal positions,
5 post-norm transformer layers (8 heads, width 200, GELU MLP of 800) attending to at most
``past_context = int(3.5 * frame_rate)`` earlier steps, and a linear + softmax per codebook.
Its parameter names are the reference's state-dict keys, so the official files
``encodec_lm_24khz-1608e3c0.th`` and ``encodec_lm_48khz-7add9fc3.th`` load as they are.

Coding needs the decoder to see exactly the probabilities the encoder saw, and files must
decode in the reference, which runs the model one frame at a time. So :meth:`EcdcLM.forward`
performs the reference's operations, in its order, on tensors of its shapes (see
docs/ECDC.md, "Float determinism of LM coding"): the streaming state of a layer starts as one
zero vector that every step can attend to, grows by each step's layer input and keeps the last
``past_context`` entries. Running all frames of a segment in one causal pass gives the same
function but not the same bits, and is not used for coding.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import CheckpointError, ModelNotAvailableError, first_line
from ...zoo import hub
from ...zoo.codec_cards import ENCODEC_URL, WeightsSource, find_card

States = list[Tensor]


def create_sin_embedding(positions: Tensor, dim: int, max_period: float = 10_000) -> Tensor:
    """Sinusoidal embeddings ``[B, T, dim]`` (cosines, then sines) of ``positions [B, T, 1]``.

    The reference's expression, op for op: vectorised and scalar ``cos`` may differ in the last
    bit, and which elements take which path depends on the tensor's size.
    """
    half_dim = dim // 2
    adim = torch.arange(half_dim, device=positions.device).view(1, 1, -1)
    phase = positions / (max_period ** (adim / (half_dim - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class StreamingTransformerLayer(nn.Module):
    """A post-norm layer attending to its own past inputs (the reference's subclass of
    ``nn.TransformerEncoderLayer``, whose parameter names it keeps).

    Args:
        dim: Model width.
        num_heads: Attention heads.
        hidden_dim: Width of the feed-forward block.
    """

    def __init__(self, dim: int, num_heads: int, hidden_dim: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0, batch_first=True)
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, x_past: Tensor, attn_mask: Tensor) -> Tensor:
        """One layer.

        Args:
            x: This call's inputs ``[B, T, dim]``.
            x_past: Inputs of earlier steps ``[B, H, dim]``.
            attn_mask: bool ``[T, H + T]``, True where a query may NOT attend.

        Returns:
            ``[B, T, dim]``.
        """
        # Keys differ from the queries, so MultiheadAttention takes its general path (separate
        # q and kv projections, SDPA with the mask) exactly as in the reference.
        keys = torch.cat([x_past, x], dim=1)
        attended = self.self_attn(x, keys, keys, attn_mask=attn_mask, need_weights=False)[0]
        x = self.norm1(x + attended)
        return self.norm2(x + self.linear2(F.gelu(self.linear1(x))))


class EcdcLM(nn.Module):
    """``encodec``'s entropy-coding LM, predicting each frame's codes from the previous ones.

    Args:
        n_q: Codebooks the model knows (32 for 24 kHz, 16 for 48 kHz).
        card: Codebook cardinality.
        dim: Transformer width.
        num_layers: Transformer layers.
        num_heads: Attention heads.
        hidden_scale: Feed-forward width over ``dim``.
        past_context: Earlier steps a step can attend to.
        max_period: Longest period of the positional sinusoids.
    """

    def __init__(
        self,
        n_q: int = 32,
        card: int = 1024,
        dim: int = 200,
        num_layers: int = 5,
        num_heads: int = 8,
        hidden_scale: float = 4.0,
        past_context: int = 262,
        max_period: float = 10_000,
    ) -> None:
        super().__init__()
        self.n_q, self.card, self.dim = n_q, card, dim
        self.past_context, self.max_period = past_context, max_period
        self.transformer = nn.Module()
        self.transformer.norm_in = nn.LayerNorm(dim)
        self.transformer.layers = nn.ModuleList(
            StreamingTransformerLayer(dim, num_heads, int(dim * hidden_scale))
            for _ in range(num_layers)
        )
        self.emb = nn.ModuleList(nn.Embedding(card + 1, dim) for _ in range(n_q))
        self.linears = nn.ModuleList(nn.Linear(dim, card) for _ in range(n_q))
        self._masks: dict[tuple[int, int, str], Tensor] = {}

    def _attn_mask(self, steps: int, past: int, device: torch.device) -> Tensor:
        """The reference's mask ``[steps, past + steps]`` (True = masked), cached."""
        key = (steps, past, str(device))
        mask = self._masks.get(key)
        if mask is None:
            queries = torch.arange(past, steps + past, device=device).view(-1, 1)
            delta = queries - torch.arange(steps + past, device=device).view(1, -1)
            mask = ~((delta >= 0) & (delta <= self.past_context))
            if steps == 1:  # one per state size: at most past_context + 1 of them
                self._masks[key] = mask
        return mask

    def forward(
        self, indices: Tensor, states: States | None = None, offset: int = 0
    ) -> tuple[Tensor, States, int]:
        """Probabilities of each frame's codes given the previous frames (reference API).

        Args:
            indices: int64 ``[B, K, T]``: ``1 +`` the codes of the frame before each step, 0
                where there is none (the first step). ``K <= n_q``.
            states: Streaming state from the previous call, None to start.
            offset: Steps already taken (the position of the first of these).

        Returns:
            Probabilities ``[B, card, K, T]`` (float32), the new states (one ``[B, H, dim]``
            per layer, ``H <= past_context``) and the new offset.
        """
        _, num_codebooks, steps = indices.shape
        # Python's sum, as the reference: ((0 + e_0) + e_1) + ..., in codebook order.
        x = sum([self.emb[k](indices[:, k]) for k in range(num_codebooks)])
        if states is None:
            states = [torch.zeros_like(x[:, :1]) for _ in range(1 + len(self.transformer.layers))]
        positions = torch.arange(steps, device=x.device).view(1, -1, 1) + offset
        x = self.transformer.norm_in(x)
        x = x + create_sin_embedding(positions, self.dim, self.max_period)
        new_states: States = []
        # The reference's first state list has one entry more than layers; zip drops it.
        for past, layer in zip(states, self.transformer.layers, strict=False):
            out = layer(x, past, self._attn_mask(steps, past.shape[1], x.device))
            new_states.append(torch.cat([past, x], dim=1)[:, -self.past_context :, :])
            x = out
        logits = torch.stack([self.linears[k](x) for k in range(num_codebooks)], dim=1)
        probas = torch.softmax(logits.permute(0, 3, 1, 2), dim=1)
        return probas, new_states, offset + steps

    def stream(self, num_codebooks: int) -> LMStream:
        """A frame-by-frame stepper for one segment of ``num_codebooks`` codebooks."""
        return LMStream(self, num_codebooks)

    @torch.no_grad()
    def causal_probabilities(self, codes: Tensor) -> Tensor:
        """All frames' probabilities in one causal pass (NOT bit-identical to stepping).

        Mathematically the same as :class:`LMStream` over ``codes``, but its matrix products
        have other shapes and round differently, so it must not be used for coding (see
        docs/ECDC.md). Useful to estimate a segment's coded size quickly.

        Args:
            codes: int64 ``[B, K, T]``.

        Returns:
            ``[B, card, K, T]``.
        """
        first = torch.zeros_like(codes[..., :1])
        indices = torch.cat([first, codes[..., :-1] + 1], dim=-1)
        return self(indices, None, 0)[0]


class LMStream:
    """Steps an :class:`EcdcLM` through one segment, one frame at a time, as ``encodec`` does.

    Call :meth:`probabilities` for the next frame, code it, then :meth:`feed` its codes.

    Args:
        lm: The model (in eval mode).
        num_codebooks: ``K``, the codebooks of the file.
    """

    def __init__(self, lm: EcdcLM, num_codebooks: int) -> None:
        if not 1 <= num_codebooks <= lm.n_q:
            raise ValueError(f"the LM knows {lm.n_q} codebooks, not {num_codebooks}")
        self.lm = lm
        self.device = next(lm.parameters()).device
        self.states: States | None = None
        self.offset = 0
        self.indices = torch.zeros(1, num_codebooks, 1, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def probabilities(self) -> Tensor:
        """The next frame's probabilities ``[K, card]`` (float32, on the LM's device)."""
        probas, self.states, self.offset = self.lm(self.indices, self.states, self.offset)
        return probas[0, :, :, 0].t()

    def feed(self, codes: Tensor) -> None:
        """Gives the codes ``[K]`` of the frame just coded, for the next step."""
        self.indices = (codes.to(self.device).long() + 1).view(1, -1, 1)


@dataclass(frozen=True)
class LMCard:
    """An entropy-coding LM and where its weights live (what :func:`hub.fetch` needs).

    Attributes:
        name: Name of the LM, for messages.
        model: The codec whose codes it models.
        sources: Where the weights can be fetched from.
        n_q: Codebooks of the codec.
        frame_rate: The codec's frame rate, rounded up as ``encodec`` does.
    """

    name: str
    model: str
    sources: tuple[WeightsSource, ...]
    n_q: int
    frame_rate: int

    @property
    def past_context(self) -> int:
        """Earlier steps a step attends to: 3.5 s."""
        return int(3.5 * self.frame_rate)


def _lm_card(model: str, filename: str) -> LMCard:
    config = find_card(model).config
    sha = filename.rsplit("-", 1)[1].split(".")[0]
    name = filename.split("-", 1)[0]
    source = WeightsSource("encodec", url=ENCODEC_URL + filename, sha256=sha)
    return LMCard(name, model, (source,), config.n_q, math.ceil(config.frame_rate))


LM_CARDS: dict[str, LMCard] = {
    "encodec_24khz": _lm_card("encodec_24khz", "encodec_lm_24khz-1608e3c0.th"),
    "encodec_48khz": _lm_card("encodec_48khz", "encodec_lm_48khz-7add9fc3.th"),
}


def lm_card(model_name: str) -> LMCard:
    """The LM card of a codec (registry name or alias)."""
    card = find_card(model_name)
    if card is None or card.name not in LM_CARDS:
        raise CheckpointError(
            f"no entropy-coding LM exists for model {model_name!r}; "
            f"there are LMs for {', '.join(LM_CARDS)}"
        )
    return LM_CARDS[card.name]


def build_ecdc_lm(model_name: str) -> EcdcLM:
    """An untrained :class:`EcdcLM` with the architecture of ``model_name``'s LM."""
    card = lm_card(model_name)
    return EcdcLM(card.n_q, find_card(card.model).config.bins, past_context=card.past_context)


def _fetch(card: LMCard) -> Path:
    try:
        return hub.fetch(card)[1]  # type: ignore[arg-type]  # needs only .name and .sources
    except ModelNotAvailableError as exc:
        # hub's message suggests `audiotok models fetch NAME`, which knows codecs only.
        found = re.search(r"not downloadable \((.*)\)\. On a machine", str(exc))
        why = found.group(1) if found else str(exc)
        source = card.sources[0]
        raise ModelNotAvailableError(
            f"entropy-coding LM of {card.model}: weights not found locally (looked in "
            f"{', '.join(hub.places(card))}) and not downloadable ({why}). "  # type: ignore[arg-type]
            f"Download {source.url} on a machine online and put it in {hub.cache_dir()}"
        ) from None


def load_ecdc_lm(model_name: str, path: str | os.PathLike | None = None) -> EcdcLM:
    """The official entropy-coding LM of ``model_name``, in eval mode on the CPU.

    Args:
        model_name: ``encodec_24khz`` or ``encodec_48khz`` (or an alias).
        path: The LM's ``.th`` file; None looks in the caches (``$AUDIOTOK_CACHE``, torch
            hub's) and downloads it there if allowed.

    Raises:
        ModelNotAvailableError: Not cached and not downloadable (one line, saying where we
            looked and what to download).
        CheckpointError: The file is not such an LM's state dict.
    """
    card = lm_card(model_name)
    path = Path(path) if path is not None else _fetch(card)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # missing, unpickling refused, damaged zip: many types
        reason = first_line(exc)
        raise CheckpointError(f"{path}: not a readable LM checkpoint ({reason})") from None
    lm = build_ecdc_lm(card.model)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    expected = lm.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        problems = [
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        ]
        raise CheckpointError(
            f"{path}: not the entropy-coding LM of {card.model} ({'; '.join(problems)})"
        )
    lm.load_state_dict(state)
    return lm.eval()
