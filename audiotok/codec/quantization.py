"""Residual vector quantization: latents ``[B, D, F]`` <-> codes ``[K, B, F]``.

Each of the ``K`` codebooks quantizes what the previous ones left over, so the first ``k``
codebooks alone give a coarser reconstruction: that is how one model serves every bandwidth.
Buffer names (``quantizer.vq.layers.3._codebook.embed`` ...) equal the official ones.

Example, with 2 codebooks of 2 entries in 1 dimension::

    codebook 0: [-1.0, +1.0]    codebook 1: [-0.25, +0.25]
    latent 0.8 -> code 1 (+1.0), residual -0.2 -> code 0 (-0.25): codes [1, 0], decoded 0.75

With ``codebook_dim`` above 0 each stage is DAC's factorised quantizer instead
(:class:`FactorisedVectorQuantization`); the codes and the residual scheme are the same.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .conv import WeightNormedConv
from .precision import full_precision


class EuclideanCodebook(nn.Module):
    """One codebook, searched by Euclidean distance.

    Buffers as in the reference: ``embed`` ``[bins, D]`` (the entries), and the training
    statistics ``embed_avg``, ``cluster_size`` and ``inited``, kept so that checkpoints
    round-trip unchanged.

    Args:
        dim: Dimension of an entry.
        codebook_size: Number of entries.
    """

    def __init__(self, dim: int, codebook_size: int) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.register_buffer("inited", torch.tensor([1.0]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        embed = nn.init.kaiming_uniform_(torch.empty(codebook_size, dim))
        self.register_buffer("embed", embed)
        self.register_buffer("embed_avg", embed.clone())

    def encode(self, x: Tensor) -> Tensor:
        """Nearest entries of ``x`` ``[..., D]``: indices ``[...]``.

        The distance is computed term by term exactly as the reference does, because a
        mathematically equal reordering can flip the argmax between near-equidistant entries.
        """
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        embed = self.embed.t()
        dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ embed + embed.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices.view(*shape[:-1])

    def decode(self, indices: Tensor) -> Tensor:
        """Entries of ``indices`` ``[...]``: ``[..., D]``."""
        return F.embedding(indices, self.embed)


class VectorQuantization(nn.Module):
    """One quantizer stage on channel-first latents.

    Args:
        dim: Latent dimension.
        codebook_size: Entries in the codebook.
    """

    def __init__(self, dim: int, codebook_size: int) -> None:
        super().__init__()
        self._codebook = EuclideanCodebook(dim, codebook_size)

    @property
    def codebook(self) -> Tensor:
        """The entries ``[bins, D]``."""
        return self._codebook.embed

    def encode(self, x: Tensor) -> Tensor:
        """``[B, D, F]`` -> codes ``[B, F]``."""
        return self._codebook.encode(x.transpose(1, 2))

    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``[B, F]`` -> ``[B, D, F]``."""
        return self._codebook.decode(codes).transpose(1, 2)


class FactorisedVectorQuantization(nn.Module):
    """One stage of DAC's factorised quantizer (``dac/nn/quantize.py``, ``VectorQuantize``).

    The residual ``[B, D, F]`` is projected to ``codebook_dim`` dimensions by a weight-normed
    1x1 convolution (``in_proj``); the code is the entry of highest cosine similarity (both
    sides L2-normalised); decoding maps the entry itself, not normalised, back to ``D``
    dimensions (``out_proj``). Looking up in a few dimensions by angle keeps every entry in
    use without EMA statistics or restarts; the entries learn by gradient (DAC's codebook
    loss).

    Example, 2 entries in 2 dimensions: ``[1, 0]`` and ``[0, 4]``. A projection ``[0.9, 1]``
    is nearer ``[1, 0]`` by Euclidean distance (1.0 against 3.1) but has the higher cosine
    with ``[0, 4]`` (0.74 against 0.67): code 1, decoded ``out_proj([0, 4])``.

    Args:
        dim: Latent dimension.
        codebook_dim: Dimension of the lookup.
        codebook_size: Entries in the codebook.
    """

    def __init__(self, dim: int, codebook_dim: int, codebook_size: int) -> None:
        super().__init__()
        self.in_proj = WeightNormedConv(dim, codebook_dim, 1)
        self.out_proj = WeightNormedConv(codebook_dim, dim, 1)
        self._codebook = EuclideanCodebook(codebook_dim, codebook_size)

    @property
    def codebook(self) -> Tensor:
        """The entries ``[bins, codebook_dim]``."""
        return self._codebook.embed

    def lookup(self, projected: Tensor) -> Tensor:
        """Projections ``[B, codebook_dim, F]`` -> codes ``[B, F]`` (highest cosine).

        DAC's distance between the normalised vectors, term by term, so that near ties
        break as in DAC.
        """
        z = F.normalize(projected.transpose(1, 2), dim=-1)  # [B, F, d]
        embed = F.normalize(self._codebook.embed, dim=-1)
        dist = -(z.pow(2).sum(-1, keepdim=True) - 2 * z @ embed.t() + embed.pow(2).sum(-1))
        return dist.argmax(dim=-1)

    def encode(self, x: Tensor) -> Tensor:
        """``[B, D, F]`` -> codes ``[B, F]``."""
        return self.lookup(self.in_proj(x))

    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``[B, F]`` -> ``[B, D, F]``."""
        return self.out_proj(self._codebook.decode(codes).transpose(1, 2))


class ResidualVectorQuantization(nn.Module):
    """A stack of quantizer stages, each coding the residual of those before it.

    Args:
        dim: Latent dimension.
        codebook_size: Entries per codebook.
        num_quantizers: Number of stages.
        codebook_dim: 0 for EnCodec's stages, else the lookup dimension of DAC's.
    """

    def __init__(
        self, dim: int, codebook_size: int, num_quantizers: int, codebook_dim: int = 0
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            FactorisedVectorQuantization(dim, codebook_dim, codebook_size)
            if codebook_dim
            else VectorQuantization(dim, codebook_size)
            for _ in range(num_quantizers)
        )

    def encode(self, x: Tensor, n_q: int) -> Tensor:
        """Latents ``[B, D, F]`` -> codes ``[n_q, B, F]`` of the first ``n_q`` stages.

        Always in float32, even when the encoder ran under autocast (see ``precision.py``).
        """
        with full_precision(x.device):
            residual = x.float()
            codes = []
            for layer in self.layers[:n_q]:
                indices = layer.encode(residual)
                residual = residual - layer.decode(indices)
                codes.append(indices)
            return torch.stack(codes)

    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``[K, B, F]`` -> the sum of the ``K`` stages' entries ``[B, D, F]``."""
        # Accumulating from a scalar zero in stage order keeps the reference's rounding.
        with full_precision(codes.device):
            out = torch.tensor(0.0, device=codes.device)
            for layer, indices in zip(self.layers, codes, strict=False):
                out = out + layer.decode(indices)
            return out


class ResidualVectorQuantizer(nn.Module):
    """The codec's quantizer (the ``quantizer`` of the checkpoints).

    Args:
        dimension: Latent dimension.
        n_q: Number of codebooks.
        bins: Entries per codebook.
        codebook_dim: 0 for EnCodec's lookup, else DAC's factorised one in this many dimensions.
    """

    def __init__(self, dimension: int, n_q: int, bins: int, codebook_dim: int = 0) -> None:
        super().__init__()
        self.dimension, self.n_q, self.bins = dimension, n_q, bins
        self.vq = ResidualVectorQuantization(dimension, bins, n_q, codebook_dim)

    def encode(self, x: Tensor, n_q: int) -> Tensor:
        """Latents ``[B, D, F]`` -> codes ``[B, n_q, F]``."""
        if not 1 <= n_q <= self.n_q:
            raise ValueError(f"n_q must be in [1, {self.n_q}], not {n_q}")
        return self.vq.encode(x, n_q).transpose(0, 1)

    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``[B, K, F]`` -> latents ``[B, D, F]``."""
        return self.vq.decode(codes.transpose(0, 1))
