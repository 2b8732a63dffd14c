"""Checks of exported ONNX graphs against the torch codec, shared by tests/test_onnx.py and
tests/test_onnx_backend.py.

Acceptance for the codes: equal, except where a near tie between two codebook entries tips
the other way (ONNX Runtime's convolutions and LSTM round differently from torch's in the
last bits): every mismatch must start at such a tie. Decoded audio (from the same codes) must
be within ``AUDIO_TOL`` of torch's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf
import torch
from conftest import DATA
from torch.nn import functional as F

from audiotok.audio.read import convert_audio
from audiotok.codec.quantization import FactorisedVectorQuantization

AUDIO_TOL = 1e-4


def real_audio(name: str, codec, seconds: float) -> torch.Tensor:
    """Two different excerpts of a test clip, ``[2, C, seconds * rate]`` at the codec's rate."""
    wav, rate = sf.read(DATA / name, dtype="float32", always_2d=True)
    wav = convert_audio(torch.from_numpy(wav.T.copy()), rate, codec.sample_rate, codec.channels)
    n = int(seconds * codec.sample_rate)
    starts = (0, (wav.shape[-1] - n) // 2)
    assert wav.shape[-1] >= starts[1] + n
    return torch.stack([wav[:, s : s + n] for s in starts]).contiguous()


def sessions(sidecar: Path) -> tuple[dict, ort.InferenceSession, ort.InferenceSession]:
    meta = json.loads(sidecar.read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2

    def open_(role: str) -> ort.InferenceSession:
        path = str(sidecar.parent / meta["graphs"][role]["file"])
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    return meta, open_("encoder"), open_("decoder")


def check_codes(model, wav: torch.Tensor, ref: torch.Tensor, got: np.ndarray) -> float:
    """Fraction of equal codes; asserts that each frame's first mismatch is a near tie.

    ``wav`` is what the encoder saw (normalised segment for segmented models).
    """
    got = torch.from_numpy(got)
    assert got.shape == ref.shape and got.dtype == torch.int64
    mismatch = got != ref  # [B, K, F]
    if mismatch.any():
        first = torch.where(mismatch.any(1), mismatch.int().argmax(1), -1)  # [B, F]
        with torch.no_grad():
            residual = model.encoder(wav).transpose(1, 2)  # [B, F, D]
            for k, layer in enumerate(model.quantizer.vq.layers[: ref.shape[1]]):
                embed = layer._codebook.embed
                point = residual
                if isinstance(layer, FactorisedVectorQuantization):  # angles in its projection
                    point = layer.in_proj(residual.transpose(1, 2)).transpose(1, 2)
                    point = F.normalize(point, dim=-1)
                    embed = F.normalize(embed, dim=-1)
                dist = (
                    point.pow(2).sum(-1, keepdim=True)
                    - 2 * point @ embed.t()
                    + embed.t().pow(2).sum(0, keepdim=True)
                )
                b, f = torch.where(first == k)
                d_ref, d_got = dist[b, f, ref[b, k, f]], dist[b, f, got[b, k, f]]
                gap = (d_ref - d_got).abs()
                assert (gap <= 1e-4 * d_ref.abs().clamp(min=1.0)).all(), (k, gap.max())
                residual = residual - layer.decode(ref[:, k]).transpose(1, 2)
    return float((~mismatch).float().mean())


def check_graphs(codec, sidecar: Path, cases: list[tuple[str, float, float]]) -> None:
    """Compares the graphs of an unsegmented export of ``codec`` with torch on ``(clip,
    seconds, min_equal)``: codes, then decoded audio from the same codes."""
    meta, enc, dec = sessions(sidecar)
    assert meta["segmented"] is False and meta["n_q"] == codec.config.n_q
    assert meta["torch_fingerprint"] == codec.fingerprint().hex()
    fractions = {}
    for i, (clip, seconds, min_equal) in enumerate(cases):
        wav = real_audio(clip, codec, seconds)
        with torch.no_grad():
            ref, _ = codec._encode(wav, codec.bandwidths[-1])
        (got,) = enc.run(None, {"audio": wav.numpy()})
        assert got.shape[:2] == (2, codec.config.n_q)
        assert got.shape[-1] == codec.num_frames(wav.shape[-1])
        fraction = check_codes(codec.model, wav, ref, got[:, : ref.shape[1]])
        fractions[clip, seconds] = fraction
        assert fraction >= min_equal, fraction
        # Small models: every bandwidth; big ones (slow in torch): lowest and highest by turns.
        small = codec.config.n_q <= 4
        bandwidths = codec.bandwidths if small else [codec.bandwidths[-(i % 2 == 0)]]
        for bandwidth in bandwidths:
            codes = ref[:, : codec.num_codebooks(bandwidth)]
            with torch.no_grad():
                expected = codec._decode(codes, None, wav.shape[-1])
            (audio,) = dec.run(None, {"codes": codes.numpy()})
            assert audio.shape[-1] == codes.shape[-1] * codec.hop_length
            audio = audio[..., : wav.shape[-1]]
            assert audio.shape == tuple(expected.shape)
            assert np.abs(audio - expected.numpy()).max() <= AUDIO_TOL
    print(codec.model_id, "equal codes:", fractions)
