"""One-step streaming graphs of causal codecs, their state as explicit inputs and outputs.

A causal model's every layer only looks back, so a stream can be run step by step by a graph
that takes, besides the new audio (or codes), what each layer remembers of the past, and gives
back what it will remember next. The state tensors, in the order of the layers:

* a convolution: the last ``padding_total = (kernel - 1) * dilation + 1 - stride`` samples of
  its padded input ``[B, C_in, p]`` (what its next windows overlap);
* a transposed convolution: the last ``kernel - stride`` raw output samples ``[B, C_out, k - s]``
  (the overlap the next frames still add to; trimmed away at the end, as offline does);
* the bottleneck LSTM: hidden and cell states ``[layers, B, D]`` each.

Four graphs (:func:`export_streaming`): ``encoder_start`` takes the first whole frames of audio
and no state: its left padding is the offline model's, which with ``reflect`` padding mirrors
the first samples of each layer's own input, so it needs at least ``start_samples`` of them
(``start_frames`` codes for ``decoder_start``); ``encoder_step`` / ``decoder_step`` take any
number of new frames and the state. The step graph also ends a stream: given the last partial
frame (``1 <= n < hop`` samples), every strided layer pads its end as the offline graphs do
(``stride - 1`` more samples, of which the windows read exactly the offline ``extra``
padding; see :mod:`~audiotok.codec.onnx_export`), so the streamed codes are the offline ones.

Worked example, the packaged default (hop 320; constant padding, so ``start_samples`` = 320)::

    audio 1000 samples, fed as 700 + 300:
      encoder_start(audio[:640])              -> codes [B, n_q, 2], state
      encoder_step(audio[640:960], state)     -> codes [B, n_q, 1], state
      encoder_step(audio[960:1000], state)    -> codes [B, n_q, 1]   (the end: ceil(40/320))
    = the offline encoder's 4 frames.

Exported only where every convolution is causal, every transposed convolution trims on the
right only (``trim_right_ratio = 1``), and no layer normalises over time (:func:`why_not`).
:class:`~audiotok.codec.onnx_runtime.OnnxStream` runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .conv import SConv1d, SConvTranspose1d
from .lstm import SLSTM
from .model import EncodecModel
from .onnx_vq import codes_of_latent, latent_of_codes
from .seanet import SEANetResnetBlock

STREAM_GRAPHS = ("encoder_start", "encoder_step", "decoder_start", "decoder_step")


def why_not(model: EncodecModel) -> str | None:
    """Why ``model`` has no streaming graphs, or None if it can have them."""
    if model.config.segment is not None:
        return "segmented models stream by segment, with the offline segment graphs"
    for module in model.modules():
        if isinstance(module, nn.GroupNorm):
            return "time-group norm looks at the whole signal"
        if isinstance(module, SConv1d) and not module.causal:
            return "non-causal convolutions look ahead"
        if isinstance(module, SConvTranspose1d) and module.padding_left:
            return "a transposed convolution trims on the left (trim_right_ratio < 1)"
    return None


class _Next(list):
    """The next state, in layer order, with the batch axis of each tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_axes: list[int] = []

    def add(self, tensor: Tensor, batch_axis: int = 0) -> None:
        self.append(tensor)
        self.batch_axes.append(batch_axis)


def _step(module: nn.Module, x: Tensor, state: list[Tensor] | None, out: _Next) -> Tensor:
    """``module`` on the new samples ``x`` ``[B, C, n]``; the state is consumed from ``state``
    (None: the stream's start, padded as offline) and the next one added to ``out``."""
    if isinstance(module, nn.Sequential):
        for layer in module:
            x = _step(layer, x, state, out)
        return x
    if isinstance(module, SEANetResnetBlock):
        return _step(module.shortcut, x, state, out) + _step(module.block, x, state, out)
    if isinstance(module, SConv1d):
        keep = module.padding_total
        if state is None:
            buffer = F.pad(x, (keep, 0), module.pad_mode) if keep else x
        else:
            buffer = torch.cat([state.pop(0), x], dim=-1) if keep else x
        if keep:
            out.add(buffer[..., buffer.shape[-1] - keep :])
        if module.stride > 1:  # the end of a stream: see the module doc
            buffer = F.pad(buffer, (0, module.stride - 1), module.pad_mode)
        return module.conv(buffer)
    if isinstance(module, SConvTranspose1d):
        conv = module.convtr.layer
        raw = F.conv_transpose1d(x, conv.effective_weight(), None, conv.stride, groups=conv.groups)
        overlap = conv.kernel_size - conv.stride
        head = raw[..., : raw.shape[-1] - overlap]  # [B, C, n * stride]: finished samples
        if overlap:
            if state is not None:
                previous = state.pop(0)
                head = torch.cat([head[..., :overlap] + previous, head[..., overlap:]], dim=-1)
            out.add(raw[..., raw.shape[-1] - overlap :])
        return module.convtr.norm(head + conv.bias.view(1, -1, 1))
    if isinstance(module, SLSTM):
        seq = x.permute(2, 0, 1)  # [n, B, D]
        if state is None:
            y, (hidden, cell) = module.lstm(seq)
        else:
            y, (hidden, cell) = module.lstm(seq, (state.pop(0), state.pop(0)))
        out.add(hidden, batch_axis=1)
        out.add(cell, batch_axis=1)
        return (y + seq if module.skip else y).permute(1, 2, 0)
    return module(x)


class _StreamEncoder(nn.Module):
    """``audio`` ``[B, C, n]`` (+ state) -> ``codes`` ``[B, n_q, ceil(n / hop)]`` + next state."""

    def __init__(self, model: EncodecModel, start: bool) -> None:
        super().__init__()
        self.model, self.start = model, start

    def forward(self, audio: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        out = _Next()
        latent = _step(self.model.encoder.model, audio, None if self.start else list(state), out)
        return (codes_of_latent(self.model, latent), *out)


class _StreamDecoder(nn.Module):
    """``codes`` ``[B, K, f]`` (+ state) -> ``audio`` ``[B, C, f * hop]`` + next state."""

    def __init__(self, model: EncodecModel, start: bool) -> None:
        super().__init__()
        self.model, self.start = model, start

    def forward(self, codes: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        out = _Next()
        latent = latent_of_codes(self.model, codes)
        audio = _step(self.model.decoder.model, latent, None if self.start else list(state), out)
        return (audio, *out)


def _start_state(model: EncodecModel, side: str, sample: Tensor) -> _Next:
    """The state one side leaves after its start graph's input ``sample``."""
    out = _Next()
    with torch.no_grad():
        x = sample if side == "encoder" else latent_of_codes(model, sample)
        _step(getattr(model, side).model, x, None, out)
    return out


def _state_dims(state: _Next) -> dict[str, list[str]]:
    """Names and shapes of state tensors, their batch axis named ``batch``."""
    dims = {}
    for i, (tensor, axis) in enumerate(zip(state, state.batch_axes, strict=True)):
        shape = [str(d) for d in tensor.shape]
        shape[axis] = "batch"
        dims[f"state.{i}"] = shape
    return dims


def export_streaming(
    model: EncodecModel,
    out_dir: Path,
    start_samples: int,
    start_frames: int,
    opset: int,
    export: Any,
) -> dict[str, Any]:
    """Writes the four streaming graphs of ``model`` (an exportable copy) into ``out_dir``.

    Args:
        model: The model, as :func:`~audiotok.codec.onnx_export._exportable` makes it.
        out_dir: The export folder.
        start_samples: The fewest samples (whole frames) ``encoder_start`` takes.
        start_frames: The fewest frames ``decoder_start`` takes.
        opset: ONNX opset.
        export: The exporter (:func:`~audiotok.codec.onnx_export._export`), which also
            returns the sidecar entry of the graph it writes.

    Returns:
        The sidecar's ``streaming`` entry: the graphs, their inputs and outputs, and the
        start sizes.
    """
    cfg = model.config
    hop = cfg.hop_length
    frames = max(8, start_frames, -(-start_samples // hop))
    audio = torch.zeros(2, cfg.channels, frames * hop)
    audio[:, :, ::5] = 0.1  # any non-silent signal: the trace doesn't depend on it
    codes = torch.zeros(2, cfg.n_q, frames, dtype=torch.int64)
    entry: dict[str, Any] = {"start_samples": start_samples, "start_frames": start_frames}
    sides = {
        "encoder": (_StreamEncoder, audio, {"audio": ["batch", str(cfg.channels), "samples"]},
                    {"codes": ["batch", str(cfg.n_q), "frames"]}),
        "decoder": (_StreamDecoder, codes, {"codes": ["batch", "codebooks", "frames"]},
                    {"audio": ["batch", str(cfg.channels), "frames*hop"]}),
    }  # fmt: skip
    for side, (cls, x, inputs, outputs) in sides.items():
        state = _start_state(model, side, x)  # traced as the step graph's state input
        dims = _state_dims(state)
        next_dims = {f"next_{name}": shape for name, shape in dims.items()}
        entry[f"{side}_start"] = export(
            cls(model, start=True), (x,), out_dir / f"{side}_start.onnx",
            inputs, {**outputs, **next_dims}, opset,
        )  # fmt: skip
        entry[f"{side}_step"] = export(
            cls(model, start=False), (x, *state), out_dir / f"{side}_step.onnx",
            {**inputs, **dims}, {**outputs, **next_dims}, opset,
        )  # fmt: skip
    return entry
