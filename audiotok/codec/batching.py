"""Batched encoding and decoding: many signals of different lengths, each as if alone.

Padding a short signal with zeros up to the batch's longest would change its codes: every
convolution of EnCodec pads its input on the right by reflecting the signal's own end, and
the non-causal models look at samples after the end. So the batch is processed *ragged*: each
row keeps its own length through the network, and before every convolution each row is padded
exactly as it would be alone (its own reflection, at its own end); before every transposed
convolution the frames past a row's end are zeroed, as if absent. Everything a row's valid
outputs depend on is then what they depend on when the row is encoded alone.

Example, a strided causal convolution (kernel 4, stride 2, reflect padding) on two rows::

    row 0 (5 samples):  a b c d e          alone: [c b] a b c d e [d]   -> 3 frames
    row 1 (8 samples):  p q r s t u v w    alone: [r q] p q r s t u v w -> 4 frames
    batch input:        c b a b c d e d 0 0      (row 0 padded alone, then zeros)
                        r q p q r s t u v w
    row 0's 3 first outputs equal its alone output; its 4th is ignored.

Models with something that averages over time (``time_group_norm``: GroupNorm over a whole
segment; or loudness normalisation of each segment, both in the 48 kHz model) can't be run
ragged: their rows are grouped by equal length instead. For segmented models the unit is the
segment, so the 48 kHz model's 1 s segments, of one file or of many, run together; only last
segments of other lengths run apart.

Exactness: the operations are those of the one-by-one path on larger tensors. Matrix kernels
may round larger shapes differently in the last bit (about 1e-7; a few 1e-6 through the 48 kHz
model's group norms), so decoded audio agrees to about 1e-6 and codes agree except where two
codebook entries are that close to a tie (trained models: none seen on the test audio; see
docs and the tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .conv import SConv1d, SConvTranspose1d, pad1d
from .lstm import SLSTM
from .model import EncodecModel, linear_overlap_add
from .seanet import SEANetDecoder, SEANetEncoder, SEANetResnetBlock
from .snake import Snake1d

# Layers that act on each time step alone (or, for the LSTM, on past steps only), so the
# garbage past a row's end never reaches its valid outputs.
_TIME_LOCAL = (nn.ELU, Snake1d, nn.Identity, nn.Tanh, nn.Sigmoid, SLSTM)


def ragged_forward(module: nn.Module, x: Tensor, lengths: list[int]) -> tuple[Tensor, list[int]]:
    """Runs a SEANet encoder's or decoder's layers on rows of different valid lengths.

    Args:
        module: The encoder or decoder (or one of their layers).
        x: Input ``[B, C, T]``; row ``b`` is valid up to ``lengths[b] <= T``.
        lengths: Valid length of each row.

    Returns:
        The output ``[B, C', T']`` and the valid length of each of its rows.
    """
    if all(n == x.shape[-1] for n in lengths):
        # The module itself: compiled, if the codec was (EncodecCodec.compile).
        return module(x), [_out_length(module, n) for n in lengths]
    if isinstance(module, (SEANetEncoder, SEANetDecoder)):
        return ragged_forward(module.model, x, lengths)
    if isinstance(module, nn.Sequential):
        for layer in module:
            x, lengths = ragged_forward(layer, x, lengths)
        return x, lengths
    if isinstance(module, SConv1d):
        return _ragged_conv(module, x, lengths)
    if isinstance(module, SConvTranspose1d):
        stride = module.convtr.layer.stride
        return module(_zero_tails(x, lengths)), [n * stride for n in lengths]
    if isinstance(module, SEANetResnetBlock):
        shortcut, _ = ragged_forward(module.shortcut, x, lengths)
        block, _ = ragged_forward(module.block, x, lengths)
        return shortcut + block, lengths
    if isinstance(module, _TIME_LOCAL) or _is_activation(module):
        return module(x), lengths
    raise TypeError(f"no ragged batching for {type(module).__name__}")


def _is_activation(module: nn.Module) -> bool:
    """A parameter-free activation of torch.nn (``final_activation`` may name any)."""
    return type(module).__module__ == nn.ELU.__module__ and not any(module.parameters())


def _out_length(module: nn.Module, length: int) -> int:
    """Output length of ``module`` for an input of ``length`` steps."""
    if isinstance(module, (SEANetEncoder, SEANetDecoder)):
        return _out_length(module.model, length)
    if isinstance(module, nn.Sequential):
        for layer in module:
            length = _out_length(layer, length)
        return length
    if isinstance(module, SConv1d):
        return -(-length // module.stride)
    if isinstance(module, SConvTranspose1d):
        return length * module.convtr.layer.stride
    return length


def _ragged_conv(conv: SConv1d, x: Tensor, lengths: list[int]) -> tuple[Tensor, list[int]]:
    """Pads each row as ``conv`` pads a signal of that row's length, then convolves."""
    padded = [
        pad1d(x[row : row + 1, :, :n], conv.paddings(n), conv.pad_mode)
        for row, n in enumerate(lengths)
    ]
    width = max(p.shape[-1] for p in padded)
    stacked = x.new_zeros(x.shape[0], x.shape[1], width)
    for row, p in enumerate(padded):
        stacked[row, :, : p.shape[-1]] = p[0]
    return conv.conv(stacked), [-(-n // conv.stride) for n in lengths]


def _zero_tails(x: Tensor, lengths: list[int]) -> Tensor:
    """``x`` with each row's steps past its length set to zero (a copy when any are)."""
    if all(n == x.shape[-1] for n in lengths):
        return x
    x = x.clone()
    for row, n in enumerate(lengths):
        x[row, :, n:] = 0
    return x


def can_run_ragged(model: EncodecModel) -> bool:
    """Whether rows of different lengths can share a forward pass: nothing that averages over
    time (no time-group norm, no loudness normalisation of the input)."""
    if model.config.normalize:
        return False
    return not any(isinstance(m, nn.GroupNorm) for m in model.modules())


@dataclass
class _Job:
    """One segment of one signal: where it comes from and, once run, its result."""

    item: int
    segment: int
    data: Tensor  # audio [C, n] to encode, or codes [K, f] to decode
    length: int  # n or f
    scale: Tensor | None = None


def _groups(jobs: list[_Job], ragged: bool, max_batch: int) -> list[list[_Job]]:
    """Batches of at most ``max_batch`` jobs of one row count (channels, or codebooks: tokens
    of several bandwidths decode together): by similar length if ragged, else equal."""
    ordered = sorted(jobs, key=lambda job: (job.data.shape[0], job.length), reverse=True)
    groups: list[list[_Job]] = []
    for job in ordered:
        last = groups[-1] if groups else None
        if (
            last is None
            or len(last) >= max_batch
            or last[0].data.shape[0] != job.data.shape[0]
            or (not ragged and last[0].length != job.length)
        ):
            groups.append([job])
        else:
            last.append(job)
    return groups


def _stack(jobs: list[_Job]) -> Tensor:
    """``[N, C, max length]``, each job's data at the start of its row, zeros after."""
    width = max(job.length for job in jobs)
    first = jobs[0].data
    out = first.new_zeros(len(jobs), first.shape[0], width)
    for row, job in enumerate(jobs):
        out[row, :, : job.length] = job.data
    return out


def encode_batch(
    model: EncodecModel, wavs: Sequence[Tensor], n_q: int, max_batch: int = 16
) -> list[tuple[Tensor, Tensor | None]]:
    """Encodes signals of any lengths in batches, each as :meth:`EncodecModel.encode` alone.

    Args:
        model: The network.
        wavs: Signals ``[C, T_i]`` at the model's rate and channel count, on its device.
        n_q: Codebooks to produce.
        max_batch: Most segments (whole signals, for unsegmented models) in one forward pass.

    Returns:
        For each signal, codes ``[n_q, F_i]`` and scales ``[S_i]`` (None unless the model
        normalises).
    """
    jobs = [
        _Job(i, j, wav[:, seg.start : seg.start + seg.length], seg.length)
        for i, wav in enumerate(wavs)
        for j, seg in enumerate(model.segments(wav.shape[-1]))
    ]
    for group in _groups(jobs, can_run_ragged(model), max_batch):
        # Groups of a normalising model have equal lengths (can_run_ragged): each row's RMS
        # is its own.
        x, scale = model.normalize(_stack(group))
        latent, frames = ragged_forward(model.encoder, x, [job.length for job in group])
        codes = model.quantizer.encode(latent, n_q)
        for row, job in enumerate(group):
            job.data = codes[row, :, : frames[row]]
            if scale is not None:
                job.scale = scale[row].view(1)
    by_item: list[list[_Job]] = [[] for _ in wavs]
    for job in jobs:
        by_item[job.item].append(job)
    return [
        (
            torch.cat([job.data for job in mine], dim=-1),
            None if mine[0].scale is None else torch.cat([job.scale for job in mine]),
        )
        for mine in by_item
    ]


def decode_batch(
    model: EncodecModel,
    items: Sequence[tuple[Tensor, Tensor | None, int]],
    max_batch: int = 16,
) -> list[Tensor]:
    """Decodes many code sequences in batches, each as :meth:`EncodecModel.decode` alone.

    Args:
        model: The network.
        items: For each signal: codes ``[K, F_i]``, scales ``[S_i]`` or None, and its length
            in samples (``F_i == model.num_frames(length)``, checked by the caller).
        max_batch: Most segments in one forward pass.

    Returns:
        Audio ``[C, length_i]`` per signal.
    """
    jobs = []
    for i, (codes, scales, length) in enumerate(items):
        for j, seg in enumerate(model.segments(length)):
            frames = codes[:, seg.first_frame : seg.first_frame + seg.frames]
            scale = None if scales is None else scales[j]
            jobs.append(_Job(i, j, frames, seg.frames, scale))
    hop = model.config.hop_length
    for group in _groups(jobs, can_run_ragged(model), max_batch):
        latent = model.quantizer.decode(_stack(group))
        audio, _ = ragged_forward(model.decoder, latent, [job.length for job in group])
        for row, job in enumerate(group):
            out = audio[row, :, : job.length * hop]
            # As decode_segment (which promotes reduced-precision audio to the scale's float32).
            job.data = out if job.scale is None else out * job.scale.reshape(1, 1)
    by_item: list[list[Tensor]] = [[] for _ in items]
    for job in jobs:
        by_item[job.item].append(job.data)
    results = []
    for pieces, (_, _, length) in zip(by_item, items, strict=True):
        if model.config.segment is None:
            results.append(pieces[0][..., :length])
        else:
            results.append(linear_overlap_add(pieces, model.config.segment_stride)[..., :length])
    return results
