"""The codec in training: EMA codebooks, dead-code restarts, quantizer dropout, commitment.

Inference (:mod:`.quantization`) only looks codes up; training also has to *learn* the
codebooks. As in EnCodec, they are not trained by gradient but as an exponential moving
average (EMA) of the latents assigned to each entry: per entry ``cluster_size`` (how many
latents chose it, on average per step) and ``embed_avg`` (their sum), so that
``embed = embed_avg / cluster_size``. The encoder learns through a straight-through
estimator (the decoder's gradient passes the quantizer unchanged) plus a commitment loss
pulling latents towards their entries.

Two more pieces from the paper:

* **Dead codes**: an entry that no latent chose for a while (``cluster_size`` below a
  threshold) is moved onto a latent of the current batch, so every entry earns its bits.
  Unlike the reference, the restarted entry's statistics are reset too; otherwise the next
  EMA update would move it straight back.
* **Quantizer dropout**: each step uses the first ``n_q`` codebooks only, with ``n_q`` drawn
  from the bandwidths the model serves, so one model decodes every bandwidth. With
  ``CodebookTraining.dropout`` below 1 the draw is per item instead, as DAC's
  ``quantizer_dropout``: that share of the batch draws, the rest uses every codebook.

With ``CodecConfig.codebook_dim`` the stages are DAC's factorised quantizer instead: the
entries are parameters learned by gradient (DAC's codebook loss, ``TrainStep.codebook``),
with neither EMA nor k-means nor restarts, and the decoder's gradient reaches the encoder
through each stage's projections (:meth:`TrainableCodec._factorised`).

All randomness comes from a ``torch.Generator`` the caller owns, so that training resumes
exactly from a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..codec.config import CodecConfig
from ..codec.conv import WeightNormedConv
from ..codec.model import EncodecModel
from ..codec.quantization import EuclideanCodebook, FactorisedVectorQuantization


@dataclass(frozen=True)
class CodebookTraining:
    """How codebooks learn.

    Attributes:
        decay: EMA decay of the codebook statistics per step.
        epsilon: Laplace smoothing of cluster sizes (keeps empty entries finite).
        dead_code_threshold: An entry whose EMA usage per step falls below this is restarted.
        kmeans_iters: K-means iterations of the first batch that initialise a fresh codebook.
        dropout: Quantizer dropout. 1: one bandwidth drawn per step for the whole batch (as
            EnCodec). Below 1: per item, as DAC's ``quantizer_dropout`` (its recipe: 0.5): the
            first ``int(B * dropout)`` items of a batch each draw a bandwidth, the others use
            all codebooks; every step then runs all codebooks.
    """

    decay: float = 0.99
    epsilon: float = 1e-5
    dead_code_threshold: float = 0.05
    kmeans_iters: int = 10
    dropout: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"codebooks.dropout must be in [0, 1], not {self.dropout}")


@dataclass
class TrainStep:
    """What one training forward pass produced.

    Attributes:
        audio: Reconstruction ``[B, C, T]``, differentiable.
        codes: Codes ``[B, n_q, F]``.
        commitment: Mean squared distance between latents and their quantized values.
        n_q: Codebooks used in this step (the batch's mean with per-item dropout).
        codebook: Factorised codes only: the entries' squared distance to the projections
            that chose them (DAC's codebook loss); 0 for EMA codebooks.
    """

    audio: Tensor
    codes: Tensor
    commitment: Tensor
    n_q: float
    codebook: Tensor | float = 0.0


def _sample_rows(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` rows of ``x`` ``[N, D]`` drawn at random (with replacement when ``N < n``)."""
    if x.shape[0] >= n:
        index = torch.randperm(x.shape[0], generator=generator)[:n]
    else:
        index = torch.randint(0, x.shape[0], (n,), generator=generator)
    return x[index.to(x.device)]


@torch.no_grad()
def kmeans_init(
    codebook: EuclideanCodebook, x: Tensor, iters: int, generator: torch.Generator
) -> None:
    """Initialises a codebook by k-means on the latents ``x`` ``[N, D]`` of its first batch."""
    bins = codebook.codebook_size
    centroids = _sample_rows(x, bins, generator)
    counts = torch.zeros(bins, dtype=x.dtype, device=x.device)
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(dim=1)
        counts = torch.bincount(assign, minlength=bins).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        used = counts > 0
        centroids[used] = sums[used] / counts[used, None]
    codebook.embed.copy_(centroids)
    codebook.embed_avg.copy_(centroids * counts[:, None])
    codebook.cluster_size.copy_(counts)
    codebook.inited.fill_(1.0)


def smoothed_usage(cluster_size: Tensor, epsilon: float) -> Tensor:
    """Laplace-smoothed usage ``[bins]``, the divisor of the EMA sums: ``embed = embed_avg / it``.

    Smoothing keeps entries nobody chose finite; the total usage is kept.
    """
    total = cluster_size.sum()
    return (cluster_size + epsilon) / (total + cluster_size.numel() * epsilon) * total


@torch.no_grad()
def ema_update(
    codebook: EuclideanCodebook,
    x: Tensor,
    codes: Tensor,
    settings: CodebookTraining,
    generator: torch.Generator,
) -> None:
    """One EMA step of a codebook on the latents ``x`` ``[N, D]`` that chose ``codes`` ``[N]``."""
    bins = codebook.codebook_size
    onehot = F.one_hot(codes, bins).to(x.dtype)
    codebook.cluster_size.lerp_(onehot.sum(0), 1 - settings.decay)
    codebook.embed_avg.lerp_(onehot.t() @ x, 1 - settings.decay)
    codebook.embed.copy_(
        codebook.embed_avg / smoothed_usage(codebook.cluster_size, settings.epsilon)[:, None]
    )
    dead = codebook.cluster_size < settings.dead_code_threshold
    n_dead = int(dead.sum())
    if n_dead:
        fresh = _sample_rows(x, n_dead, generator)
        codebook.embed[dead] = fresh
        codebook.embed_avg[dead] = fresh
        codebook.cluster_size[dead] = 1.0


class TrainableCodec(nn.Module):
    """An :class:`EncodecModel` with the training behaviour of its quantizer.

    Args:
        config: The architecture.
        codebooks: How the codebooks learn.
        autocast: The dtype of the encoder and decoder in training steps (the recipe's
            ``precision``), or None for float32.

    Example:
        >>> codec = TrainableCodec(CodecConfig(sample_rate=24_000, channels=1, causal=True))
        >>> step = codec(torch.randn(2, 1, 24_000), n_q=8, generator=torch.Generator())
        >>> step.audio.shape, step.codes.shape
        (torch.Size([2, 1, 24000]), torch.Size([2, 8, 75]))
    """

    def __init__(
        self,
        config: CodecConfig,
        codebooks: CodebookTraining | None = None,
        autocast: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.model = EncodecModel(config)
        self.codebooks = codebooks or CodebookTraining()
        # Under autocast the encoder's and decoder's convolutions and LSTM run in this dtype;
        # the weights, the quantizer (nearest entries need float32's resolution), the losses
        # and eval stay float32.
        self.autocast = autocast
        for layer in self.model.quantizer.vq.layers:
            codebook = layer._codebook
            if isinstance(layer, FactorisedVectorQuantization):
                # Learned by gradient: the entries become a parameter of the same name.
                embed = codebook._buffers.pop("embed")
                codebook.embed = nn.Parameter(embed)
            else:
                # Fresh codebooks start from k-means on the first batch, as in the reference.
                codebook.inited.fill_(0.0)

    @property
    def config(self) -> CodecConfig:
        """The architecture."""
        return self.model.config

    @torch.no_grad()
    def data_init(self, x: Tensor, output_std: float | None = None) -> None:
        """Rescales every convolution so that its output has unit variance on ``x`` (LSUV).

        With PyTorch's default initialisation each convolution shrinks its input's variance
        about threefold; through EnCodec's ~30 convolutions an untrained model's output no
        longer depends on its input (the input-output gradient is ~1e-8), and training from
        scratch sits at the silent-output solution for thousands of steps. Layer-sequential
        unit-variance initialisation (Mishkin & Matas, 2016) fixes that: in forward order,
        each convolution's gain ``weight_g`` (or weight) is scaled so that its output on the
        batch has unit standard deviation; biases start at zero; the last convolution aims at
        the input's own level. Official checkpoints are never touched by this.

        Args:
            x: A batch of training audio ``[B, C, T]``.
            output_std: Target level of the decoder output (default: ``x``'s).
        """
        # Encoder and decoder only: the factorised quantizer's projections are not on that path.
        parts = (self.model.encoder, self.model.decoder)
        convs = [m for part in parts for m in part.modules() if isinstance(m, WeightNormedConv)]
        last = convs[-1]
        captured: dict[str, Tensor] = {}
        for conv in convs:
            conv.bias.zero_()
        for conv in convs:
            target = float(x.std()) if output_std is None else output_std
            target = target if conv is last else 1.0
            hook = conv.register_forward_hook(lambda _m, _i, out: captured.update(out=out))
            for _ in range(2):  # a second pass corrects what normalisation after it changed
                self.model.decoder(self.model.encoder(x))
                std = float(captured["out"].std())
                gain = conv.weight_g if conv.weight_norm else conv.weight
                gain.mul_(target / max(std, 1e-8))
            hook.remove()

    def _through(self, part: nn.Module, x: Tensor) -> Tensor:
        """``part(x)`` (the encoder or the decoder), under autocast in a training step."""
        if self.autocast is None or not self.training:
            return part(x)
        with torch.autocast(x.device.type, dtype=self.autocast):
            return part(x).float()

    def bandwidth_codebooks(self) -> list[int]:
        """Codebook counts of the bandwidths the model serves, ascending."""
        return sorted({self.config.num_codebooks(b) for b in self.config.target_bandwidths})

    def draw_codebooks(self, batch: int, generator: torch.Generator) -> int | Tensor:
        """Quantizer dropout of one step: an ``n_q`` for the batch, or ``[B]`` per item.

        Example (``dropout`` 0.5, a batch of 4; ``n_q`` drawn from 2, 4, 8, 16, 32):
        ``tensor([8, 2, 32, 32])``: the first half draws, the second half uses all 32.
        """
        choices = self.bandwidth_codebooks()
        if self.codebooks.dropout >= 1.0:
            return choices[int(torch.randint(len(choices), (1,), generator=generator))]
        per_item = torch.full((batch,), choices[-1], dtype=torch.long)
        drawn = int(batch * self.codebooks.dropout)
        index = torch.randint(len(choices), (drawn,), generator=generator)
        per_item[:drawn] = torch.tensor(choices)[index]
        return per_item

    def forward(self, x: Tensor, n_q: int | Tensor, generator: torch.Generator) -> TrainStep:
        """Encodes, quantizes with the first ``n_q`` codebooks and decodes ``x`` ``[B, C, T]``.

        ``n_q`` is one count for the batch or ``[B]``, one per item (each item decodes from
        its own first ``n_q[b]`` codebooks; its ``codes`` beyond them are -1). In training
        mode the codebooks used are updated (k-means on the first batch, then EMA and
        dead-code restarts) on the latents that used them; in eval mode they are left as they
        are.
        """
        latent = self._through(self.model.encoder, x)  # [B, D, F]
        if self.config.codebook_dim:
            return self._factorised(x, latent, n_q)
        b, d, f = latent.shape
        flat = latent.transpose(1, 2).reshape(-1, d)
        # Per item: which of the B * F latent rows each codebook quantizes.
        rows_q = n_q.to(flat.device).repeat_interleave(f) if isinstance(n_q, Tensor) else None
        depth = int(n_q.max()) if isinstance(n_q, Tensor) else n_q
        residual, quantized = flat, torch.zeros_like(flat)
        codes, commitment = [], latent.new_zeros(())
        for i, layer in enumerate(self.model.quantizer.vq.layers[:depth]):
            codebook: EuclideanCodebook = layer._codebook
            active = None if rows_q is None else rows_q > i
            target = residual.detach()
            used = target if active is None else target[active]
            if self.training and not codebook.inited.item():
                kmeans_init(codebook, used, self.codebooks.kmeans_iters, generator)
            with torch.no_grad():
                indices = codebook.encode(target)
            chosen = codebook.decode(indices).detach()
            if active is None:
                commitment = commitment + F.mse_loss(residual, chosen)
            else:
                chosen = chosen * active[:, None]
                # Summed here, divided by the rows quantized over all codebooks below.
                commitment = commitment + (residual - chosen)[active].square().sum()
            quantized = quantized + chosen
            residual = residual - chosen
            if self.training:
                picked = indices if active is None else indices[active]
                ema_update(codebook, used, picked, self.codebooks, generator)
            codes.append(
                (indices if active is None else indices.masked_fill(~active, -1)).view(b, f)
            )
        if rows_q is None:
            commitment, mean_q = commitment / n_q, float(n_q)
        else:
            commitment = commitment / (rows_q.sum() * d)
            mean_q = float(n_q.float().mean())
        # Straight-through: the forward pass sees the entries, the backward the identity.
        quantized = flat + (quantized - flat).detach()
        latent_q = quantized.view(b, f, d).transpose(1, 2)
        audio = self._through(self.model.decoder, latent_q)[..., : x.shape[-1]]
        return TrainStep(audio, torch.stack(codes, dim=1), commitment, mean_q)

    def _factorised(self, x: Tensor, latent: Tensor, n_q: int | Tensor) -> TrainStep:
        """:meth:`forward` through DAC's factorised stages (``ResidualVectorQuantize``).

        Per stage: the projection ``z_e`` of the residual, the entry ``z_q`` of highest
        cosine, the codebook loss ``|z_q - sg(z_e)|^2`` and the commitment ``|z_e -
        sg(z_q)|^2``, then ``out_proj(z_e + sg(z_q - z_e))`` is added to the output and taken
        off the residual, gradient and all, as DAC does. Items past their ``n_q[b]`` stages
        add nothing and their codes are -1 (DAC takes them off the residual all the same,
        which changes no output). Unlike DAC, which sums the two losses over stages and
        averages each over the whole batch, ours are means over the rows each stage codes,
        averaged over the stages.
        """
        b, _, f = latent.shape
        depth = int(n_q.max()) if isinstance(n_q, Tensor) else n_q
        # [B, 1, F] mask of the items each stage codes (None: all of them).
        per_item = n_q.to(latent.device)[:, None, None] if isinstance(n_q, Tensor) else None
        residual, quantized = latent, torch.zeros_like(latent)
        codes, commitment, codebook_loss = [], latent.new_zeros(()), latent.new_zeros(())
        for i, layer in enumerate(self.model.quantizer.vq.layers[:depth]):
            z_e = layer.in_proj(residual)  # [B, d, F]
            with torch.no_grad():
                indices = layer.lookup(z_e)  # [B, F]
            z_q = layer._codebook.decode(indices).transpose(1, 2)  # [B, d, F], learns
            active = None if per_item is None else (per_item > i).to(latent.dtype)
            weight = 1.0 if active is None else active
            # Every stage up to the deepest item's codes at least that item: rows > 0.
            rows = b * f if active is None else int(active.sum()) * f
            scale = weight / (rows * z_e.shape[1])
            commitment = commitment + ((z_e - z_q.detach()).square() * scale).sum()
            codebook_loss = codebook_loss + ((z_q - z_e.detach()).square() * scale).sum()
            stage = layer.out_proj(z_e + (z_q - z_e).detach()) * weight
            quantized = quantized + stage
            residual = residual - stage
            if active is not None:
                indices = indices.masked_fill(active[:, 0] == 0, -1)
            codes.append(indices)
        mean_q = float(n_q.float().mean()) if isinstance(n_q, Tensor) else float(n_q)
        audio = self._through(self.model.decoder, quantized)[..., : x.shape[-1]]
        return TrainStep(
            audio,
            torch.stack(codes, dim=1),
            commitment / depth,
            mean_q,
            codebook_loss / depth,
        )
