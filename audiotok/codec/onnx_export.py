"""Writes an :class:`~audiotok.codec.encodec.EncodecCodec` as ONNX graphs and a JSON sidecar.

Files written to ``out_dir``:

* unsegmented models (24, 32, 16 kHz): ``encoder.onnx`` (``audio`` float32 ``[B, C, T]`` at the
  model's rate -> ``codes`` int64 ``[B, n_q, F]``, ``F = ceil(T / hop)``) and ``decoder.onnx``
  (``codes`` int64 ``[B, K, F]``, any ``1 <= K <= n_q`` -> ``audio`` float32
  ``[B, C, F * hop]``; the caller trims to ``T``);
* segmented models (48 kHz): ``encoder_segment.onnx`` (one segment ``audio`` ``[B, C, n]`` ->
  ``codes`` ``[B, n_q, ceil(n / hop)]`` and its loudness ``scale`` ``[B]``, the segment being
  normalised inside the graph) and ``decoder_segment.onnx`` (``codes`` ``[B, K, f]`` and
  ``scale`` ``[B]`` -> ``audio`` ``[B, C, f * hop]``). Cutting the signal into segments
  (:meth:`EncodecModel.segments`), stacking the scales and the overlap-add
  (:func:`~audiotok.codec.model.linear_overlap_add`) are the caller's;
* causal unsegmented models (the packaged default, 24 kHz) also get one-step streaming graphs
  with their state as inputs and outputs: ``encoder_start.onnx``, ``encoder_step.onnx``,
  ``decoder_start.onnx``, ``decoder_step.onnx`` (:mod:`~audiotok.codec.onnx_stream_export`);
  the sidecar's ``streaming`` entry lists them (null, with ``no_streaming`` saying why, for
  the others);
* ``entropy_priors.safetensors`` (``priors`` uint32/int ``[K_max, cardinality]``), when the
  codec has static entropy-coder priors (the packaged default): ``.atok`` files made with them
  need them to decode;
* ``model.json``: the model's id, rate, channels, frame rate, hop, ``n_q``, cardinality,
  bandwidths (with their ``K``), the graphs (file, inputs and outputs with shapes, sha256),
  the priors' file and sha256, the opset and the fingerprint of the torch weights (files
  compressed by either backend name the same weights, and decode with either).

:class:`~audiotok.codec.onnx_runtime.OnnxCodec` runs the folder as a codec.

Why one encoder for every bandwidth: residual VQ codes of the first ``K`` stages do not depend
on the later ones, so slicing the ``n_q`` codes to ``K`` is exactly what a ``K``-stage encoder
gives. Why one decoder: stages past ``K`` are selected away with ``Where`` (adding nothing),
so the sum of the first ``K`` entries is formed in the same order as torch's.

Dynamic length: the layers' padding depends on the input length (the extra right padding
that fills the last strided window). The graphs pad by its largest value, ``stride - 1``,
instead: the windows that make the ``ceil(T / stride)`` frames see the same samples, and no
more frames are made, so the result is the same for every length with one graph.

Short inputs (format 3): torch reflects an input shorter than its padding after extending it
with zeros (:func:`~audiotok.codec.conv.pad1d`), which ``Pad`` can't do; reflect-padded layers
gather their padding by index instead (:func:`_reflect_pad`, from the length in the graph), so
any length codes as torch's, 1 sample included, and nothing is padded before the graphs: a
48 kHz segment's scale is taken over its own samples, and time-group norms see its true
length. The sidecar's ``min_length`` and ``min_frames`` are 1. Formats 1 and 2 padded shorter
inputs with zeros (code 0) before the graph: inexact (:mod:`~audiotok.codec.onnx_runtime`).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import AudiotokError
from ..runtime.files import atomic_path, sha256_file
from .conv import SConv1d, SConvTranspose1d
from .encodec import EncodecCodec
from .model import EncodecModel
from .onnx_runtime import FORMAT_VERSION
from .onnx_stream_export import STREAM_GRAPHS, export_streaming, why_not
from .onnx_vq import codes_of_latent, latent_of_codes

OPSETS = (14, 20)
"""Opsets accepted (the TorchScript exporter's last is 20; 17 is the default and tested)."""
GRAPH_FILES = (
    "encoder.onnx",
    "decoder.onnx",
    "encoder_segment.onnx",
    "decoder_segment.onnx",
    *(f"{name}.onnx" for name in STREAM_GRAPHS),
)
PRIORS_FILE = "entropy_priors.safetensors"


class OnnxExportError(AudiotokError):
    """A codec that can't be exported, or an export that can't be written."""


def _reflect_pad(x: Tensor, left: int, right: int, stride: int) -> Tensor:
    """``pad1d(x, (left, right + extra), "reflect")`` for any length, in traceable ops.

    ``[B, C, T]`` -> ``[B, C, left + T + right + stride - 1]``: torch's padded input (``extra =
    ceil(T / stride) * stride - T``, the rest unread by the windows; see the module doc).

    Why by index: :func:`~audiotok.codec.conv.pad1d` reflects a ``T`` shorter than its widest
    side after extending it with zeros to ``widest + 1`` samples, and ``Pad`` needs the longer
    input. Here padded position ``p`` reads sample ``|p|`` of that extension, or its mirror
    past the extension's end; every read at or past ``T`` is a zero. For ``T > widest`` the
    extension is the input itself: plain reflection. Only the edges are gathered (a few
    samples), then joined to ``x``: gathering the whole signal was twice as slow as ``Pad``.
    """
    length = torch._shape_as_tensor(x)[-1]  # traced: the graph computes it per input
    extra = torch.remainder(-length, stride)
    reach = torch.maximum(length, torch.clamp(right + extra, min=left) + 1)  # extended length
    # Left of sample 0 the reads are samples left..1 (reach > left: never mirrored again).
    heads = torch.arange(left, 0, -1, device=x.device)
    tails = length + torch.arange(right + stride - 1, device=x.device)
    tails = torch.where(tails < reach, tails, 2 * (reach - 1) - tails)
    edges = []
    for index in (heads, tails):
        inside = (index >= 0) & (index < length)  # below 0: unread positions only
        edge = x.index_select(-1, torch.where(inside, index, 0))  # [B, C, len(index)]
        edges.append(torch.where(inside, edge, torch.zeros_like(edge)))
    return torch.cat([edges[0], x, edges[1]], dim=-1)


def _fixed_pad_forward(self: SConv1d, x: Tensor) -> Tensor:
    """:meth:`SConv1d.forward`, padded independently of the length.

    ``[B, C, T]`` -> ``[B, C', ceil(T / stride)]``.

    The right padding is its largest value (``extra = stride - 1``); see the module doc.
    """
    total, stride = self.padding_total, self.stride
    left, right = (total, 0) if self.causal else (total - total // 2, total // 2)
    if (left, right + stride - 1) == (0, 0):  # 1x1 convolutions: nothing to pad
        return self.conv(x)
    if self.pad_mode == "reflect":
        return self.conv(_reflect_pad(x, left, right, stride))
    # The other modes: pad1d is F.pad, and so is ONNX's Pad, at any length.
    return self.conv(nn.functional.pad(x, (left, right + stride - 1), self.pad_mode))


def _trim_forward(self: SConvTranspose1d, x: Tensor) -> Tensor:
    """:meth:`SConvTranspose1d.forward`, sliced by constants: ``[B, C, F]`` -> ``[B, C', s*F]``."""
    y = self.convtr(x)
    y = y[..., self.padding_left :]
    return y[..., : -self.padding_right] if self.padding_right else y


def _exportable(model: EncodecModel) -> EncodecModel:
    """A copy of ``model`` whose convolutions trace to length-independent graphs."""
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, SConv1d):
            module.forward = types.MethodType(_fixed_pad_forward, module)  # type: ignore[method-assign]
        elif isinstance(module, SConvTranspose1d):
            module.forward = types.MethodType(_trim_forward, module)  # type: ignore[method-assign]
    return model


def _encode_all(model: EncodecModel, audio: Tensor) -> Tensor:
    """Audio ``[B, C, T]`` -> codes ``[B, n_q, F]`` of every stage."""
    return codes_of_latent(model, model.encoder(audio))


def _decode_any(model: EncodecModel, codes: Tensor) -> Tensor:
    """Codes ``[B, K, F]`` (``K <= n_q``) -> audio ``[B, C, F * hop]``."""
    return model.decoder(latent_of_codes(model, codes))


class _Encoder(nn.Module):
    """``audio`` ``[B, C, T]`` -> ``codes`` ``[B, n_q, ceil(T / hop)]``."""

    def __init__(self, model: EncodecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, audio: Tensor) -> Tensor:
        return _encode_all(self.model, audio)


class _SegmentEncoder(_Encoder):
    """One segment ``[B, C, n]`` -> ``codes`` ``[B, n_q, ceil(n / hop)]``, ``scale`` ``[B]``."""

    def forward(self, audio: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        normalized, scale = self.model.normalize(audio)
        if scale is None:
            scale = torch.ones_like(audio[:, :1, :1])
        return _encode_all(self.model, normalized), scale.reshape(-1)


class _Decoder(nn.Module):
    """``codes`` ``[B, K, F]`` -> ``audio`` ``[B, C, F * hop]``."""

    def __init__(self, model: EncodecModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, codes: Tensor) -> Tensor:
        return _decode_any(self.model, codes)


class _SegmentDecoder(_Decoder):
    """``codes`` ``[B, K, f]``, ``scale`` ``[B]`` -> ``audio`` ``[B, C, f * hop]``."""

    def forward(self, codes: Tensor, scale: Tensor) -> Tensor:  # type: ignore[override]
        out = _decode_any(self.model, codes)
        return out * scale.reshape(-1, 1, 1) if self.model.config.normalize else out


def _largest_reflect(conv: SConv1d) -> int:
    """The largest reflect padding of ``conv`` in the graphs (0 for other modes)."""
    if conv.pad_mode != "reflect":
        return 0
    total, extra = conv.padding_total, conv.stride - 1
    return max((total, extra) if conv.causal else (total - total // 2, total // 2 + extra))


def _min_sizes(model: EncodecModel) -> tuple[int, int]:
    """The shortest encoder input (samples) and decoder input (frames) that ``Pad`` reflects.

    Every reflect padding must be shorter than its layer's input. The offline graphs take any
    length (:func:`_reflect_pad`); the streaming start graphs pad with ``Pad`` and need these.
    """
    samples, scale = 1, 1
    for module in model.encoder.modules():
        if isinstance(module, SConv1d):
            # The layer's input, ceil(T / scale) samples, must exceed the padding.
            samples = max(samples, _largest_reflect(module) * scale + 1)
            scale *= module.stride
    frames, upsampling = 1, 1
    for module in model.decoder.modules():
        if isinstance(module, SConvTranspose1d):
            upsampling *= module.convtr.layer.stride
        elif isinstance(module, SConv1d):
            frames = max(frames, _largest_reflect(module) // upsampling + 1)
    return samples, frames


def _export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    inputs: dict[str, list[str]],
    outputs: dict[str, list[str]],
    opset: int,
) -> dict[str, Any]:
    """Traces ``module`` on ``args`` into ``path`` with named (dynamic) axes.

    Returns:
        The graph's sidecar entry: file, inputs and outputs with their shapes, sha256.
    """
    axes: dict[str, dict[int, str]] = {
        name: {i: d for i, d in enumerate(dims) if not d.isdigit()}
        for name, dims in {**inputs, **outputs}.items()
    }
    # The tracer's warnings (LSTM batch size, constant folding of strided slices) don't
    # apply: the graphs are checked against torch at other batch sizes and lengths.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return {"file": path.name, "inputs": inputs, "outputs": outputs, "sha256": sha256_file(path)}


def export_onnx(
    codec: EncodecCodec,
    out_dir: Path,
    bandwidths: list[float] | None = None,
    opset: int = 17,
    overwrite: bool = False,
) -> Path:
    """Exports ``codec`` to ONNX graphs and a ``model.json`` sidecar (see the module doc).

    Args:
        codec: An EnCodec codec (its weights are copied; the codec is unchanged).
        out_dir: Folder to write; created if missing.
        bandwidths: kbps the sidecar lists (each checked against the codec); all if None.
            The graphs serve every bandwidth.
        opset: ONNX opset.
        overwrite: Replace the files of an earlier export in ``out_dir``.

    Returns:
        The sidecar's path.

    Raises:
        OnnxExportError: Not an EnCodec codec, an opset outside :data:`OPSETS`, or
            ``out_dir`` holds an export and not ``overwrite``.
        AudioError: A bandwidth the codec does not support.
    """
    if not isinstance(codec, EncodecCodec):
        raise OnnxExportError(f"only EnCodec models export to ONNX, not {type(codec).__name__}")
    if not OPSETS[0] <= opset <= OPSETS[1]:
        raise OnnxExportError(f"opset must be in [{OPSETS[0]}, {OPSETS[1]}], not {opset}")
    chosen = [codec.check_bandwidth(b) for b in (bandwidths or codec.bandwidths)]
    out_dir = Path(out_dir)
    sidecar = out_dir / "model.json"
    names = (*GRAPH_FILES, PRIORS_FILE)
    existing = [p for p in (sidecar, *(out_dir / n for n in names)) if p.exists()]
    if existing and not overwrite:
        raise OnnxExportError(f"{existing[0]} exists (overwrite to replace it)").for_cli(
            f"{existing[0]} exists (use -f to overwrite)"
        )
    # Made beside, then moved in: an interrupted export (Ctrl-C mid-trace, minutes for big
    # models) leaves the previous one whole, not new graphs under its old sidecar.
    # A random name, not the pid: container replicas sharing a cache are all pid 1.
    work = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(4)}.partial"
    work.mkdir(parents=True)
    try:
        meta = _export_into(codec, work, chosen, opset)
        out_dir.mkdir(parents=True, exist_ok=True)
        sidecar.unlink(missing_ok=True)  # graphs without a sidecar: an unfinished export
        for name in names:
            if (work / name).exists():
                os.replace(work / name, out_dir / name)
            else:  # an earlier export's (streaming graphs, priors), not this one's
                (out_dir / name).unlink(missing_ok=True)
        # Written last: a folder with graphs but no sidecar is an interrupted export.
        with atomic_path(sidecar, overwrite=True, error=OnnxExportError) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sidecar


def _export_into(
    codec: EncodecCodec, out_dir: Path, chosen: list[float], opset: int
) -> dict[str, Any]:
    """Writes the graphs (and priors) of ``codec`` into the empty folder ``out_dir``; returns
    the sidecar's content."""
    cfg = codec.config
    model = _exportable(codec.model).to("cpu")
    segmented = cfg.segment_length is not None
    c, hop = cfg.channels, cfg.hop_length
    min_samples, min_frames = _min_sizes(model)
    # The graphs don't depend on the traced length (checked at others in tests/test_onnx.py).
    short = max(cfg.sample_rate // 4, 2 * min_samples, 8 * hop)
    trace_length = cfg.segment_length if segmented else short
    audio = torch.zeros(2, c, trace_length)
    audio[:, :, ::7] = 0.1  # any non-silent signal: the trace doesn't depend on it
    codes = torch.zeros(2, cfg.n_q, -(-trace_length // hop), dtype=torch.int64)
    scale = torch.ones(2)
    enc_out = {"codes": ["batch", str(cfg.n_q), "frames"]}
    if segmented:
        graphs = {
            "encoder": ("encoder_segment.onnx", _SegmentEncoder(model), (audio,),
                        {"audio": ["batch", str(c), "samples"]},
                        {**enc_out, "scale": ["batch"]}),
            "decoder": ("decoder_segment.onnx", _SegmentDecoder(model), (codes, scale),
                        {"codes": ["batch", "codebooks", "frames"], "scale": ["batch"]},
                        {"audio": ["batch", str(c), "frames*hop"]}),
        }  # fmt: skip
    else:
        graphs = {
            "encoder": ("encoder.onnx", _Encoder(model), (audio,),
                        {"audio": ["batch", str(c), "samples"]}, enc_out),
            "decoder": ("decoder.onnx", _Decoder(model), (codes,),
                        {"codes": ["batch", "codebooks", "frames"]},
                        {"audio": ["batch", str(c), "frames*hop"]}),
        }  # fmt: skip
    entries = {
        role: _export(module, args, out_dir / name, inputs, outputs, opset)
        for role, (name, module, args, inputs, outputs) in graphs.items()
    }
    no_streaming = why_not(model)
    streaming = None
    if no_streaming is None:
        start_frames = max(min_frames, 1)
        start_samples = max(-(-min_samples // hop), 1) * hop
        streaming = export_streaming(model, out_dir, start_samples, start_frames, opset, _export)
    priors = None
    if codec.entropy_priors is not None:
        from safetensors.numpy import save

        # Bytes into a file of ours: it gets the umask's mode (save_file makes it 0600).
        priors_bytes = save({"priors": np.ascontiguousarray(codec.entropy_priors)})
        (out_dir / PRIORS_FILE).write_bytes(priors_bytes)
        priors = {"file": PRIORS_FILE, "sha256": sha256_file(out_dir / PRIORS_FILE)}
    return {
        "format": "audiotok-onnx",
        "format_version": FORMAT_VERSION,
        "model_id": codec.model_id,
        "sample_rate": codec.sample_rate,
        "channels": c,
        "frame_rate": codec.frame_rate,
        "hop_length": hop,
        "n_q": cfg.n_q,
        "cardinality": codec.cardinality,
        "bandwidths": {f"{b:g}": codec.num_codebooks(b) for b in chosen},
        "default_bandwidth": codec.default_bandwidth,
        "segmented": segmented,
        "segment_length": cfg.segment_length,
        "segment_stride": cfg.segment_stride,
        "normalize": cfg.normalize,
        # Any length is exact since format 3 (module doc): nothing to pad to.
        "min_length": 1,
        "min_frames": 1,
        "graphs": entries,
        "streaming": streaming,
        "no_streaming": no_streaming,
        "entropy_priors": priors,
        "opset": opset,
        "torch_fingerprint": codec.fingerprint().hex(),
        "notes": (
            "encoder outputs all n_q codebooks: keep the first K of the bandwidth (exact); "
            "decoder accepts any K <= n_q; trim decoded audio to the input length; "
            "inputs of any length (1 sample, 1 frame) code as torch's: pad nothing"
            + ("; segmentation, scales and overlap-add are the caller's" if segmented else "")
        ),
    }
