"""The residual vector quantizer as operations that trace into ONNX graphs.

:func:`codes_of_latent` finds each stage's nearest entry with the reference's distance, term by
term, so that float rounding ties break as torch's do; :func:`latent_of_codes` sums the first
``K`` stages for any ``K <= n_q`` read from the codes' shape at run time, so one decoder graph
serves every bandwidth (stages past ``K`` are selected away with ``Where``, adding nothing, in
torch's order).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .model import EncodecModel
from .quantization import FactorisedVectorQuantization


def codes_of_latent(model: EncodecModel, latent: Tensor) -> Tensor:
    """Latent ``[B, D, F]`` -> codes ``[B, n_q, F]`` of every stage, distances in float32."""
    residual = latent.float().transpose(1, 2)  # [B, F, D]
    codes = []
    for layer in model.quantizer.vq.layers:
        if isinstance(layer, FactorisedVectorQuantization):  # projections, cosine lookup
            indices = layer.encode(residual.transpose(1, 2))
            residual = residual - layer.decode(indices).transpose(1, 2)
            codes.append(indices)
            continue
        embed = layer._codebook.embed  # [bins, D]
        # The reference's distance, term by term (see EuclideanCodebook.encode).
        dist = -(
            residual.pow(2).sum(-1, keepdim=True)
            - 2 * residual @ embed.t()
            + embed.t().pow(2).sum(0, keepdim=True)
        )
        indices = dist.argmax(dim=-1)  # [B, F]
        residual = residual - nn.functional.embedding(indices, embed)
        codes.append(indices)
    return torch.stack(codes, dim=1)


def latent_of_codes(model: EncodecModel, codes: Tensor) -> Tensor:
    """Codes ``[B, K, F]`` (``K <= n_q``) -> latent ``[B, D, F]``."""
    k = torch._shape_as_tensor(codes)[1]
    latent = torch.zeros((), dtype=torch.float32)
    for i, layer in enumerate(model.quantizer.vq.layers):
        # Stage i reads row min(i, K - 1), and only counts when i < K.
        row = torch.clamp(k - 1, max=i).reshape(1)
        indices = torch.index_select(codes, 1, row).squeeze(1)  # [B, F]
        if isinstance(layer, FactorisedVectorQuantization):
            entry = layer.decode(indices)
        else:
            entry = nn.functional.embedding(indices, layer._codebook.embed).transpose(1, 2)
        latent = torch.where(k > i, latent + entry, latent)
    return latent
