"""Streaming for unsegmented codecs: audio in chunks of any size, codes of finished frames out.

Each layer of the SEANet gets a small typed state (as in moshi's ``modules/streaming.py``):

* :class:`ConvState` keeps the input samples a strided convolution still needs (its left
  padding is taken from the first samples, exactly as offline, its right padding is added at
  the end of the stream from the total length);
* :class:`ConvTrState` keeps the partial output tail that the next frames will add to;
* :class:`ResidualState` aligns the block and shortcut branches, which may start emitting at
  different times;
* :class:`LSTMState` carries the LSTM's hidden and cell states.

The streamed encoder computes the same operations as the offline one on shorter tensors;
matrix kernels may round differently for different shapes, so latents can differ from the
offline ones in the last bits (about 1e-7). The tests check that the codes are identical on
real audio at chunk sizes 1, 7, 320 and 4800 samples, and that decoded audio is within 1e-5.

Latency: for causal models (24 kHz) a frame's codes come out as soon as its last sample is in
(13.3 ms at 24 kHz), plus compute. Non-causal ones (MusicGen's 32 kHz and AudioGen's 16 kHz
codecs) look ahead: each convolution waits for the samples its right padding covers, so a
frame comes out a few frames late, and ``encode_end`` / ``decode_end`` flush the rest with the
offline right padding. Models with time-group norm (normalising over a whole segment) can't
stream frame by frame; the segmented 48 kHz model streams by segment
(:mod:`audiotok.codec.segment_streaming`). Streams run in float32 whatever
``Codec.set_precision`` says; their inputs are checked as ``encode`` and ``decode`` check
theirs (:mod:`audiotok.codec.stream_checks`).

Example:
    >>> with codec.streaming(batch_size=1, bandwidth=6.0) as stream:    # doctest: +SKIP
    ...     for chunk in chunks:                     # [B, C, n], any n
    ...         codes = stream.encode(chunk)         # [B, K, f], f >= 0
    ...         audio = stream.decode(codes)         # [B, C, f * hop]
    ...     codes = stream.encode_end()              # the last, partly padded frame
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .conv import SConv1d, SConvTranspose1d, pad1d
from .lstm import SLSTM
from .precision import exact_inference
from .seanet import SEANetResnetBlock
from .stream_checks import StreamGuard


class LayerState:
    """One layer's streaming state: ``step`` consumes input, ``end`` flushes it."""

    def step(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def end(self) -> Tensor:
        """Output owed at the end of the stream (may be empty)."""
        raise NotImplementedError


@dataclass
class StatelessState(LayerState):
    """An element-wise layer (ELU, ...)."""

    layer: nn.Module
    empty: Tensor

    def step(self, x: Tensor) -> Tensor:
        return self.layer(x)

    def end(self) -> Tensor:
        return self.empty


@dataclass
class ConvState(LayerState):
    """A padded strided convolution over a stream.

    Outputs come out as soon as their whole window is in: at once for causal layers, after
    the right padding's worth of lookahead for the others.

    Attributes:
        layer: The convolution.
        buffer: Input not yet consumed, left padding included once it is known.
        history: The last input samples, from which the right padding is reflected at the end.
        seen: Input samples received so far.
        started: Whether the left padding has been prepended.
    """

    layer: SConv1d
    buffer: Tensor
    history: Tensor | None = None
    seen: int = 0
    started: bool = False

    @property
    def _kernel(self) -> int:
        return self.layer._effective_kernel

    @property
    def _left(self) -> int:
        return self.layer.paddings(0)[0]  # the left padding does not depend on the length

    @property
    def _history_length(self) -> int:
        # Enough to reflect the largest right padding: total // 2 + stride - 1 samples.
        return self.layer.padding_total + self.layer.stride + 1

    def step(self, x: Tensor) -> Tensor:
        self.buffer = torch.cat([self.buffer, x], dim=-1)
        # Causal stride-1 layers have no right padding: nothing to reflect at the end.
        if not self.layer.causal or self.layer.stride > 1:
            history = x if self.history is None else torch.cat([self.history, x], dim=-1)
            # A copy: a view would keep every layer's whole input chunk alive.
            self.history = history[..., -self._history_length :].clone()
        self.seen += x.shape[-1]
        layer = self.layer
        if not self.started:
            # Reflect padding mirrors samples 1..p: wait until they are here.
            needed = self._left + 1 if layer.pad_mode == "reflect" else 0
            if self.buffer.shape[-1] < needed:
                return self._empty()
            self.buffer = pad1d(self.buffer, (self._left, 0), layer.pad_mode)
            self.started = True
        return self._consume()

    def _consume(self) -> Tensor:
        stride, kernel = self.layer.stride, self._kernel
        length = self.buffer.shape[-1]
        frames = (length - kernel) // stride + 1 if length >= kernel else 0
        if frames <= 0:
            return self._empty()
        out = self.layer.conv(self.buffer[..., : (frames - 1) * stride + kernel])
        self.buffer = self.buffer[..., frames * stride :].clone()  # (the chunk may be long)
        return out

    def _empty(self) -> Tensor:
        out_channels = self.layer.conv.layer.out_channels
        return self.buffer.new_zeros(self.buffer.shape[0], out_channels, 0)

    def end(self) -> Tensor:
        layer = self.layer
        if not self.started:  # a stream shorter than the padding: do it offline
            return layer(self.buffer) if self.seen else self._empty()
        right = layer.paddings(self.seen)[1]
        if right:
            # The history holds the signal's last samples (all of it if it is short), which
            # is all the offline right padding reflects.
            padded = pad1d(self.history, (0, right), layer.pad_mode)
            self.buffer = torch.cat([self.buffer, padded[..., -right:]], dim=-1)
        return self._consume()


@dataclass
class ConvTrState(LayerState):
    """A transposed convolution over a stream, trimmed as offline.

    Attributes:
        layer: The transposed convolution.
        empty: An empty output, for steps that emit nothing.
        tail: The last ``kernel - stride`` output samples, still owed contributions.
        to_trim: Output samples still to drop at the start (the left trim).
    """

    layer: SConvTranspose1d
    empty: Tensor
    tail: Tensor | None = None
    to_trim: int = -1

    def _finish(self, y: Tensor) -> Tensor:
        """Bias and norm of raw output samples, less what the left trim still takes."""
        conv = self.layer.convtr.layer
        if self.to_trim < 0:
            self.to_trim = self.layer.padding_left
        out = self.layer.convtr.norm(y + conv.bias.view(1, -1, 1))
        cut = min(self.to_trim, out.shape[-1])
        self.to_trim -= cut
        return out[..., cut:]

    def step(self, x: Tensor) -> Tensor:
        conv = self.layer.convtr.layer
        if x.shape[-1] == 0:
            return self.empty
        y = nn.functional.conv_transpose1d(x, conv.effective_weight(), None, conv.stride)
        if self.tail is not None:
            y[..., : self.tail.shape[-1]] += self.tail
        ready = x.shape[-1] * conv.stride
        self.tail = y[..., ready:].clone()
        return self._finish(y[..., :ready])

    def end(self) -> Tensor:
        # Offline keeps the tail's first `padding_left` samples and trims the rest (the
        # right padding); causal layers keep none of it.
        keep = self.layer.padding_left
        if self.tail is None or keep == 0:
            return self.empty
        return self._finish(self.tail[..., :keep])


@dataclass
class LSTMState(LayerState):
    """The bottleneck LSTM, carrying its states across chunks."""

    layer: SLSTM
    empty: Tensor
    hidden: tuple[Tensor, Tensor] | None = None

    def step(self, x: Tensor) -> Tensor:
        if x.shape[-1] == 0:
            return x
        seq = x.permute(2, 0, 1)
        y, self.hidden = self.layer.lstm(seq, self.hidden)
        if self.layer.skip:
            y = y + seq
        return y.permute(1, 2, 0)

    def end(self) -> Tensor:
        return self.empty


@dataclass
class SequenceState(LayerState):
    """Layers in sequence: each one's output feeds the next.

    Attributes:
        layers: Their states, in order.
        empty: An empty output ``[B, C_out, 0]``, for steps that emit nothing.
    """

    layers: list[LayerState]
    empty: Tensor

    def step(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            # A layer given nothing emits nothing and keeps its state (a strided convolution
            # has already consumed every full window), so the layers after the first that
            # waits are skipped: with chunks shorter than a frame (an audio callback's 128
            # samples), most steps end at a downsampling; one-sample steps took 2.3x as long
            # walking the rest.
            if x.shape[-1] == 0:
                return self.empty
            x = layer.step(x)
        return x

    def end(self) -> Tensor:
        # What layer i flushes still has to go through layers i+1, ...
        out: Tensor | None = None
        for layer in self.layers:
            stepped = layer.step(out) if out is not None and out.shape[-1] else None
            flushed = layer.end()
            out = flushed if stepped is None else torch.cat([stepped, flushed], dim=-1)
        return out


@dataclass
class ResidualState(LayerState):
    """A residual block: ``shortcut(x) + block(x)``, the branches aligned in time."""

    block: SequenceState
    shortcut: LayerState
    pending: list[Tensor] = field(default_factory=lambda: [None, None])

    def _add(self, a: Tensor, b: Tensor) -> Tensor:
        for i, piece in enumerate((a, b)):
            self.pending[i] = (
                piece if self.pending[i] is None else torch.cat([self.pending[i], piece], -1)
            )
        n = min(p.shape[-1] for p in self.pending)
        out = self.pending[0][..., :n] + self.pending[1][..., :n]
        self.pending = [p[..., n:].clone() for p in self.pending]
        return out

    def step(self, x: Tensor) -> Tensor:
        return self._add(self.shortcut.step(x), self.block.step(x))

    def end(self) -> Tensor:
        return self._add(self.shortcut.end(), self.block.end())


def build_state(
    module: nn.Module, batch_size: int, channels: int, device: torch.device
) -> LayerState:
    """The streaming state of ``module`` (an encoder's or decoder's ``model`` or a layer)."""
    if isinstance(module, nn.Sequential):
        states, width = [], channels
        for layer in module:
            states.append(build_state(layer, batch_size, width, device))
            width = _out_channels(layer, width)
        return SequenceState(states, torch.zeros(batch_size, width, 0, device=device))
    if isinstance(module, SConv1d):
        return ConvState(module, torch.zeros(batch_size, channels, 0, device=device))
    if isinstance(module, SConvTranspose1d):
        empty = torch.zeros(batch_size, module.convtr.layer.out_channels, 0, device=device)
        return ConvTrState(module, empty)
    if isinstance(module, SLSTM):
        return LSTMState(module, torch.zeros(batch_size, channels, 0, device=device))
    if isinstance(module, SEANetResnetBlock):
        return ResidualState(
            build_state(module.block, batch_size, channels, device),
            build_state(module.shortcut, batch_size, channels, device),
        )
    return StatelessState(module, torch.zeros(batch_size, channels, 0, device=device))


def _out_channels(layer: nn.Module, width: int) -> int:
    if isinstance(layer, SConv1d):
        return layer.conv.layer.out_channels
    if isinstance(layer, SConvTranspose1d):
        return layer.convtr.layer.out_channels
    return width


class CodecStream:
    """Streaming encode and decode with one unsegmented model; see the module docstring.

    Args:
        model: The codec's network (``EncodecModel``).
        batch_size: Signals streamed in parallel.
        num_codebooks: Codebooks ``K`` to produce.
    """

    def __init__(self, model: nn.Module, batch_size: int, num_codebooks: int) -> None:
        cfg = model.config
        if cfg.segment is not None or any(isinstance(m, nn.GroupNorm) for m in model.modules()):
            raise ValueError(
                "frame-by-frame streaming needs an unsegmented model without time-group norm "
                "(segmented models stream by segment)"
            )
        self.device = device = next(model.parameters()).device
        self.guard = StreamGuard(batch_size, cfg.channels, cfg.n_q, cfg.bins, device)
        self.model, self.num_codebooks = model, num_codebooks
        self.encoder = build_state(model.encoder.model, batch_size, cfg.channels, device)
        self.decoder = build_state(model.decoder.model, batch_size, cfg.dimension, device)

    def __enter__(self) -> CodecStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.guard.closed = True  # a finished stream can't be fed again

    def _codes(self, latent: Tensor) -> Tensor:
        if latent.shape[-1] == 0:
            return torch.zeros(latent.shape[0], self.num_codebooks, 0, dtype=torch.long,
                               device=latent.device)  # fmt: skip
        return self.model.quantizer.encode(latent, self.num_codebooks)

    def encode(self, audio: Tensor) -> Tensor:
        """Audio ``[B, C, n]`` (any ``n``, even 0) -> codes ``[B, K, f]`` of completed frames.

        Raises:
            AudioError: A chunk of another shape, not float, or not finite.
        """
        self.guard.check_open("encode")
        audio = self.guard.chunk(audio)
        with exact_inference(self.device):
            return self._codes(self.encoder.step(audio))

    def encode_end(self) -> Tensor:
        """Codes ``[B, K, f]`` of the last frames, padded as the offline encoder pads them."""
        self.guard.check_open("encode")
        self.guard.encode_ended = True
        with exact_inference(self.device):
            return self._codes(self.encoder.end())

    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``[B, K, f]`` -> audio ``[B, C, f * hop]``.

        Raises:
            TokensError: Codes of another shape, not integers, or out of range.
        """
        self.guard.check_open("decode")
        codes = self.guard.codes(codes)
        with exact_inference(self.device):
            if codes.shape[-1] == 0:
                return self.decoder.step(
                    torch.zeros(codes.shape[0], self.model.config.dimension, 0, device=codes.device)
                )
            return self.decoder.step(self.model.quantizer.decode(codes))

    def decode_end(self) -> Tensor:
        """Audio still owed at the end (empty for causal decoders, the lookahead otherwise)."""
        self.guard.check_open("decode")
        self.guard.decode_ended = True
        with exact_inference(self.device):
            return self.decoder.end()
