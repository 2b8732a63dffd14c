"""How often block-by-block (streamed) coding differs from one-pass coding, per model.

Files longer than ``STREAM_SECONDS`` are coded as streams, in blocks of
``audio.blocks.BLOCK_SECONDS``, each layer carrying its state from block to block. The
arithmetic is the same as one pass over the whole signal, but matrix kernels run on other
shapes and may round differently (about 1e-7); where a latent vector lies almost halfway
between two codebook entries, that can pick the other entry. This script counts such flips on
real audio: for each model it codes the same signal in one pass (``codec.encode``, the
reference) and as a stream, and prints, per bandwidth, the share of frames whose codes differ
in any of that bandwidth's codebooks, and the largest difference between the streamed and the
one-pass decoder's output for the same codes.

Models: the packaged default, and random-weight models of the four official architectures in
the official ``.th`` format (codebooks calibrated on real audio; needs the ``encodec`` package,
as ``codec_bench.py``). Audio: the repository's speech and music clips, tiled to ``--seconds``
(block edges fall at other places in each repetition), or your own files with ``--audio``.

Usage::

    python benchmarks/exactness_bench.py [--seconds 120] [--models audiotok_24khz encodec_24khz]
        [--audio FILE ...] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODELS = ("audiotok_24khz", "encodec_24khz", "encodec_32khz", "encodec_16khz", "encodec_48khz")


def load_audio(files: list[Path], seconds: float, rate: int, channels: int):
    """``[C, T]`` at ``rate``: the files joined (converted to the model's layout), or the
    repository's clips tiled to ``seconds``."""
    import torch
    from codec_bench import real_audio

    from audiotok.audio.read import convert_audio, read_audio

    if not files:
        return real_audio(seconds, rate, channels)[0]
    pieces = []
    for path in files:
        wav, sr = read_audio(path)
        pieces.append(torch.as_tensor(convert_audio(wav, sr, rate, channels)))
    return torch.cat(pieces, dim=-1)


def streamed(codec, wav, block: int, bandwidth: float):
    """Codes ``[1, K, F]`` of ``wav`` ``[C, T]`` coded block by block (and, for segmented
    codecs, the scale of each segment)."""
    import torch

    codes, scales = [], []
    with codec.streaming(1, bandwidth) as stream:
        outs = []
        for i in range(0, wav.shape[-1], block):
            outs.append(stream.encode(wav[None, :, i : i + block]))
        outs.append(stream.encode_end())
    for out in outs:
        if isinstance(out, torch.Tensor):
            codes.append(out)
        else:  # segmented: (codes, scale) per segment
            for c, s in out:
                codes.append(c)
                scales.append(s)
    return torch.cat(codes, dim=-1), scales


def streamed_decode(codec, tokens, block_frames: int):
    """The stream decoder's output for ``tokens`` (unsegmented codecs), ``[1, C, T]``."""
    import torch

    pieces = []
    with codec.streaming(1, tokens.bandwidth) as stream:
        for i in range(0, tokens.codes.shape[-1], block_frames):
            pieces.append(stream.decode(tokens.codes[..., i : i + block_frames]))
        pieces.append(stream.decode_end())
    return torch.cat(pieces, dim=-1)[..., : tokens.length]


def random_official(arch: str, directory: Path) -> Path:
    """Writes a random-weight model of an official architecture in its official format (the
    ``encodec`` package's ``.th`` for 24 and 48 kHz, an audiocraft export for 32 and 16 kHz),
    codebooks calibrated on real audio so that codes are not degenerate; returns its path."""
    from codec_bench import real_audio
    from reference_models import (
        ARCHS,
        calibrate_codebooks_,
        encodec_package_model,
        save_audiocraft,
        save_encodec_th,
    )

    a = ARCHS[arch]
    model = encodec_package_model(arch, seed=0)
    calibrate_codebooks_(model, "encodec", real_audio(4, a["sample_rate"], a["channels"]), arch)
    if arch in ("encodec_24khz", "encodec_48khz"):
        return save_encodec_th(model, directory, f"{arch}-00000000.th")
    (directory / arch).mkdir()
    return save_audiocraft(model, directory / arch, arch)


def measure(name: str, codec, wav, block_seconds: float) -> list[tuple]:
    top = max(codec.bandwidths)
    reference = codec.encode(wav, sample_rate=codec.sample_rate, bandwidth=top)
    codes, _ = streamed(codec, wav, int(block_seconds * codec.sample_rate), top)
    assert codes.shape == reference.codes.shape, (codes.shape, reference.codes.shape)
    decoded = float("nan")  # segmented decoders: tests/test_segment_streaming.py (within 1e-6)
    if codec.segments is None:
        one_pass = codec.decode(reference)
        decoded = (streamed_decode(codec, reference, int(block_seconds * codec.frame_rate))
                   - one_pass).abs().max()  # fmt: skip
    rows = []
    for bandwidth in codec.bandwidths:
        k = codec.num_codebooks(bandwidth)
        differ = (codes[0, :k] != reference.codes[0, :k]).any(dim=0)
        rows.append((name, bandwidth, k, int(differ.sum()), differ.numel(), float(decoded)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--audio", nargs="*", type=Path, default=[])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    import audiotok
    from audiotok.audio.blocks import BLOCK_SECONDS

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            if name.startswith("encodec_"):
                codec = audiotok.load_codec(random_official(name, Path(tmp)))
            else:
                codec = audiotok.load_codec(name)
            wav = load_audio(args.audio, args.seconds, codec.sample_rate, codec.channels)
            rows += measure(name, codec, wav, BLOCK_SECONDS)
    seconds = wav.shape[-1] / codec.sample_rate
    source = "your files" if args.audio else "the repository's clips, tiled"
    print(f"streamed ({BLOCK_SECONDS:g} s blocks) against one pass, {seconds:.0f} s of {source}")
    print("| model | kbps | codebooks | frames that differ | share | decoder max abs diff |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, kbps, k, differ, frames, decoded in rows:
        diff = "-" if decoded != decoded else f"{decoded:.1e}"
        print(f"| {name} | {kbps:g} | {k} | {differ} of {frames} | {differ / frames:.4%} "
              f"| {diff} |")  # fmt: skip


if __name__ == "__main__":
    main()
