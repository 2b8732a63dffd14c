"""Deployment formats on CPU: the ONNX Runtime backend against torch, the LM in int8 and int4.

**Codecs** (default): for the packaged ``audiotok_24khz`` and a random-weight model of each
official architecture (written in its official format, as ``exactness_bench.py`` does), one
process loads the torch codec and the ONNX one (``load_codec(..., backend="onnx")``, exported
into a temporary cache first), then times ``encode`` and ``decode`` of the same real audio
(the repository's clips repeated to ``--seconds``) at the model's default bandwidth, the two
backends alternating, ``--repeats`` times after a warm-up; medians are printed as x real time
(audio seconds per wall second) with ONNX Runtime's ratio to torch, and the share of codes
equal between the two (torch decodes torch's codes, ONNX Runtime the same codes: the largest
difference of their audio is printed too). A control says how many of torch's own fp32
codes survive computing the model in float64: where that is below 100 %, the audio's latents
sit on near ties that float rounding decides, and ONNX Runtime can't be expected to agree
more. Both use ``--threads`` threads.

**LM** (``--lm``): audiotok's MusicGen on musicgen-small's shape (a random-weight model built
as ``generate_bench.py`` builds it), greedy with CFG, in fp32, bf16, int8 and int4: LM weight MiB,
steps/s (median of ``--repeats``) and the share of tokens equal to fp32's.

Usage::

    pip install --no-deps encodec==0.1.1   # writes the official-format random models
    python benchmarks/onnx_bench.py [--seconds 20] [--repeats 3] [--threads 2]
        [--models audiotok_24khz encodec_24khz ...] [--lm [--steps 100]]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

MODELS = ("audiotok_24khz", "encodec_24khz", "encodec_48khz", "encodec_32khz", "encodec_16khz")


def median_time(fn, repeats: int = 1) -> tuple[float, object]:
    """The median wall seconds of ``repeats`` calls of ``fn``, and its last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench_codec(name: str, folder: Path, args: argparse.Namespace) -> str:
    from codec_bench import real_audio

    from audiotok.codec.load import load_codec

    source = name
    if name != "audiotok_24khz":
        from exactness_bench import random_official

        (folder / name).mkdir()
        source = random_official(name, folder / name)
    torch_codec = load_codec(source)
    onnx_codec = load_codec(source, backend="onnx")
    rate, channels = torch_codec.sample_rate, torch_codec.channels
    wav = real_audio(args.seconds, rate, channels)
    bandwidth = torch_codec.default_bandwidth
    # Warm-up: both backends' first call allocates and plans.
    short = wav[..., : rate * 2]
    for codec in (torch_codec, onnx_codec):
        codec.decode(codec.encode(short, rate, bandwidth))
    codecs = {"torch": torch_codec, "onnx": onnx_codec}
    enc, dec = {"torch": [], "onnx": []}, {"torch": [], "onnx": []}
    tokens = torch_codec.encode(wav, rate, bandwidth)  # both sides decode these codes
    encoded, decoded = {}, {}
    for _ in range(args.repeats):  # alternating, so drifts of the machine hit both sides
        for side, codec in codecs.items():
            seconds, encoded[side] = median_time(lambda c=codec: c.encode(wav, rate, bandwidth))
            enc[side].append(seconds)
            seconds, decoded[side] = median_time(lambda c=codec: c.decode(tokens))
            dec[side].append(seconds)
    # The onnx backend's arrays are numpy's.
    equal = float((encoded["onnx"].codes == encoded["torch"].codes.numpy()).mean())
    control = float((float64_codes(torch_codec, wav, bandwidth) == tokens.codes).float().mean())
    diff = float(abs(decoded["onnx"] - decoded["torch"].numpy()).max())
    xrt = {f"{s}_{w}": args.seconds / statistics.median(t[s])
           for w, t in (("enc", enc), ("dec", dec)) for s in t}  # fmt: skip
    return (
        f"| {name} | {bandwidth:g} | {xrt['torch_enc']:.1f} | {xrt['onnx_enc']:.1f} | "
        f"{xrt['onnx_enc'] / xrt['torch_enc']:.2f}x | {xrt['torch_dec']:.1f} | "
        f"{xrt['onnx_dec']:.1f} | {xrt['onnx_dec'] / xrt['torch_dec']:.2f}x | "
        f"{equal:.2%} | {control:.2%} | {diff:.1e} |"
    )


def float64_codes(codec, wav, bandwidth: float):
    """The torch model's codes computed in float64: how often float32 rounding alone tips a
    code (the random models' codebooks are calibrated on these very clips, so their latents
    lie within float32's resolution of several entries; a trained model's don't)."""
    import copy

    import torch

    model = copy.deepcopy(codec.model).double()
    layers = model.quantizer.vq.layers[: codec.num_codebooks(bandwidth)]
    codes = []
    with torch.inference_mode():
        for seg in model.segments(wav.shape[-1]):
            x, _ = model.normalize(wav[..., seg.start : seg.start + seg.length].double())
            residual = model.encoder(x).transpose(1, 2)  # [B, F, D]
            stages = []
            for layer in layers:  # the quantizer's distance, term by term, in float64
                embed = layer._codebook.embed.double()
                dist = -(residual.pow(2).sum(-1, keepdim=True) - 2 * residual @ embed.t()
                         + embed.t().pow(2).sum(0, keepdim=True))  # fmt: skip
                indices = dist.argmax(-1)
                residual = residual - embed[indices]
                stages.append(indices)
            codes.append(torch.stack(stages, dim=1))
    return torch.cat(codes, dim=-1)


def bench_lm(args: argparse.Namespace) -> None:
    import torch
    from generate_bench import PROMPT, build_reference, lm_weight_bytes
    from transformers.utils import logging

    from audiotok.generate import MusicGen

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    print(f"\nLM: musicgen-small's shape, random weights, greedy, cfg 3, {args.steps} steps")
    print("| precision | LM weights MiB | steps/s | x fp32 | tokens equal to fp32's |")
    print("| --- | --: | --: | --: | --: |")
    reference_codes, fp32_rate = None, None
    with tempfile.TemporaryDirectory() as tmp:
        build_reference(Path(tmp))
        for precision in ("fp32", "bf16", "int8", "int4"):
            model = MusicGen.get_pretrained(tmp)
            if precision != "fp32":
                model.set_precision(precision)
            model.set_generation_params(use_sampling=False, duration=4 / model.frame_rate)
            model.generate([PROMPT])  # warm-up
            model.set_generation_params(use_sampling=False,
                                        duration=args.steps / model.frame_rate)  # fmt: skip
            # Text encoding and LM only: the codec's decode is not part of the LM's speed.
            model.generate_audio = lambda codes: torch.zeros(codes.shape[0], 1, 1)
            seconds, (_, codes) = median_time(
                lambda m=model: m.generate([PROMPT], return_tokens=True), args.repeats
            )
            rate = args.steps / seconds
            if reference_codes is None:
                reference_codes, fp32_rate = codes, rate
            same = float((codes == reference_codes).float().mean())
            print(f"| {precision} | {lm_weight_bytes(model.lm) / 2**20:.0f} | {rate:.1f} | "
                  f"{rate / fp32_rate:.2f}x | {same:.1%} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--lm", action="store_true", help="Also the LM in fp32, bf16, int8, int4.")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()

    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} threads; torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}; {args.seconds:g} s of real audio, median of "
          f"{args.repeats}")  # fmt: skip
    print("| model | kbps | torch enc xRT | ORT enc xRT | ORT/torch | torch dec xRT | "
          "ORT dec xRT | ORT/torch | codes equal ORT/torch | control: torch fp64/fp32 | "
          "audio max diff |")  # fmt: skip
    print("| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AUDIOTOK_CACHE"] = str(Path(tmp) / "cache")  # exports land here
        for name in args.models:
            print(bench_codec(name, Path(tmp), args), flush=True)
    if args.lm:
        bench_lm(args)


if __name__ == "__main__":
    main()
