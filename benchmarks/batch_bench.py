"""Batched encode throughput and reduced-precision code agreement, on CPU or a GPU.

Throughput: ``encodec_24khz`` with random weights of the official architecture (written once
as an official ``.th`` file and a transformers directory, see ``codec_bench.py``), a batch of
``--batch`` clips of ``--seconds`` s of real audio, encoded with
``codec.encode_batch(max_batch=--batch)`` in each ``--precisions`` mode and one clip at a
time (``max_batch=1``), against transformers' ``EncodecModel.encode`` on the same batch and
device (the reference that batches). x real
time = audio seconds in the batch x repeats / wall seconds (CUDA synchronised), after one
untimed warm-up pass. "codes = fp32": share of codes equal to audiotok's fp32 codes;
transformers' fp32 codes are checked equal to ours.

Agreement on trained weights: the same measure on the packaged default ``audiotok_24khz``,
whose latents are spread as a trained model's are; a random-weight model maps all audio near
one point, so any rounding flips its codes (benchmarks/RESULTS.md) and its agreement figures
say little.

Usage::

    python benchmarks/batch_bench.py                      # CPU: fp32 and bf16, batch 4 x 10 s
    python benchmarks/batch_bench.py --device cuda --batch 64 --seconds 10 \\
        --precisions fp32 tf32 bf16 fp16 [--compile]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from codec_bench import make_weights, real_audio

TARGET_GPU_XRT = 20_000  # issue 4: encode, H100, 24 kHz


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> tuple[float, object]:
    """Seconds for ``repeats`` calls of ``fn`` after a warm-up call; the last result."""
    out = fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    sync(device)
    return time.perf_counter() - start, out


def batch_of(n: int, seconds: float):
    """``n`` different clips ``[1, T]`` of real audio at 24 kHz (offsets of 1.7 s)."""
    wav = real_audio(seconds + 1.7 * n, 24_000, 1)[0]
    length = int(seconds * 24_000)
    return [wav[:, int(1.7 * i * 24_000) :][:, :length].contiguous() for i in range(n)]


def agreement(codes, reference) -> float:
    return (codes == reference).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile audiotok first")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    args = parser.parse_args()

    import torch
    from transformers import EncodecModel

    import audiotok

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    precisions = args.precisions or (["fp32", "tf32", "bf16", "fp16"] if cuda else ["fp32", "bf16"])
    clips = batch_of(args.batch, args.seconds)
    audio_seconds = args.batch * args.seconds * args.repeats
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch} x {args.seconds:g} s")

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        make_weights("encodec_24khz", directory, 6.0)
        codec = audiotok.load_codec(directory / "encodec_24khz-00000000.th", device=args.device)
        if args.compile:
            codec.compile()
        reference = EncodecModel.from_pretrained(directory / "encodec_24khz-hf")
        reference = reference.to(args.device).eval()

        print("\n| side | precision | encode x real time | codes = audiotok fp32 |")
        print("| --- | --- | --: | --: |")
        exact = None
        rows = {}
        for precision in precisions:
            codec.set_precision(precision)
            seconds, tokens = timed(
                lambda: codec.encode_batch(clips, bandwidth=6.0, max_batch=args.batch),
                args.device,
                args.repeats,
            )
            codes = torch.cat([t.codes for t in tokens]).cpu()
            exact = codes if precision == "fp32" else exact
            rows[precision] = audio_seconds / seconds
            same = "-" if exact is None else f"{agreement(codes, exact):.4f}"
            print(f"| audiotok | {precision} | {rows[precision]:,.0f} | {same} |")
        codec.set_precision("fp32")
        seconds, _ = timed(
            lambda: codec.encode_batch(clips, bandwidth=6.0, max_batch=1), args.device, args.repeats
        )
        print(f"| audiotok, one clip at a time | fp32 | {audio_seconds / seconds:,.0f} | |")

        stacked = torch.stack(clips).to(args.device)

        def reference_encode():
            with torch.no_grad():
                return reference.encode(stacked, bandwidth=6.0, return_dict=True)

        if cuda:  # the reference runs with PyTorch's defaults (TF32 convolutions on)
            torch.backends.cudnn.allow_tf32 = True
        seconds, out = timed(reference_encode, args.device, args.repeats)
        ref_codes = out.audio_codes[0].cpu()
        ref_xrt = audio_seconds / seconds
        same = f"{agreement(ref_codes, exact):.4f}" if exact is not None else "-"
        print(f"| transformers | fp32 (torch defaults) | {ref_xrt:,.0f} | {same} |")

        best = max(rows.values())
        print(f"\naudiotok fastest / transformers: {best / ref_xrt:.2f}x")
        if "fp32" in rows:
            print(f"audiotok fp32 / transformers: {rows['fp32'] / ref_xrt:.2f}x")
        if cuda:
            met = "met" if best >= TARGET_GPU_XRT else "NOT met"
            print(f"target {TARGET_GPU_XRT:,}x real time on GPU encode: {met} ({best:,.0f}x)")

    print("\nCode agreement with fp32 on the trained default audiotok_24khz:")
    default = audiotok.load_codec(device=args.device)
    exact = torch.cat([t.codes for t in default.encode_batch(clips, bandwidth=6.0)]).cpu()
    for precision in precisions[1:]:
        default.set_precision(precision)
        codes = torch.cat([t.codes for t in default.encode_batch(clips, bandwidth=6.0)]).cpu()
        first = agreement(codes[:, 0], exact[:, 0])
        print(f"  {precision}: all codebooks {agreement(codes, exact):.4f}, first {first:.4f}")


if __name__ == "__main__":
    main()
