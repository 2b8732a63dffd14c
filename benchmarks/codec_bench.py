"""Codec throughput on CPU: audiotok against Meta's ``encodec`` package and transformers.

All three sides run the same weights: a random-weight reference model of the official
architecture (the ``encodec`` package's own builder, every tensor perturbed, codebooks
calibrated on real audio), written once as an official ``.th`` file and loaded

- by audiotok with ``audiotok.load_codec(path)``;
- by the ``encodec`` package with ``EncodecModel.encodec_model_*(pretrained=False)`` and
  ``load_state_dict``;
- by transformers with ``EncodecModel.from_pretrained`` on a directory written once from the
  same tensors, renamed with audiotok's ``hf_key_to_ours`` used in reverse.

Before timing, the three are checked to give identical codes on a short clip. The audio is
the repository's real clips (speech and music), resampled to the model's rate and channels and
repeated to ``--seconds``. Each side runs in a fresh process (the sides alternating, repeated
``--repeats`` times); in it, one ``encode`` and one ``decode`` of the whole signal are timed
(model loading excluded; the references under ``torch.no_grad()``, as their own code and
documentation run them). Codes of every timed run are compared across the sides.

audiotok tunes glibc's allocator when a codec is loaded (``audiotok/runtime/``); the
references run with the default allocator, as their users would: separate processes keep
the setting to its side. Two controls tell how much of the difference that setting makes:
``--default-malloc`` adds a side ``audiotok-libc``, audiotok with ``AUDIOTOK_KEEP_MALLOC=1``;
``--tune-references`` gives the references the same setting.

The script prints x real time (audio seconds / wall seconds) of encode, decode and both, the
speed-up over the faster reference, whether the codes of all sides are identical (and the
largest difference of decoded audio), and whether the targets of the issue are met. With
``--profile N`` it times nothing and prints each side's N costliest operators instead.

Usage::

    pip install --no-deps encodec==0.1.1   # the reference; a stub stands in for torchaudio
    python benchmarks/codec_bench.py [--seconds 30] [--repeats 3] [--threads 2]
        [--models encodec_24khz encodec_48khz] [--default-malloc] [--tune-references]
    python benchmarks/codec_bench.py --profile 10 [--sides audiotok]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SIDES = ("audiotok", "encodec", "transformers")
REFERENCES = ("encodec", "transformers")
LIBC = "audiotok-libc"  # audiotok with glibc's default allocator settings (--default-malloc)
TARGETS = {"encodec_24khz": 1.5, "encodec_48khz": 2.0}  # encode + decode, vs the faster ref.


class OtherLoad:
    """CPU time that other processes used since creation, from ``/proc/stat`` (Linux).

    The machine's busy time minus this process's and its children's: other work on the
    machine skews timings, so the scripts report how much there was.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        import resource

        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            busy = float("nan")
        own = sum(
            r.ru_utime + r.ru_stime
            for r in (resource.getrusage(resource.RUSAGE_SELF),
                      resource.getrusage(resource.RUSAGE_CHILDREN))
        )  # fmt: skip
        return busy, own, time.perf_counter()

    def cores(self) -> float:
        """Average number of cores other processes kept busy since creation."""
        busy, own, now = self._sample()
        return max(0.0, (busy - self.start[0]) - (own - self.start[1])) / (now - self.start[2])


def real_audio(seconds: float, rate: int, channels: int):
    """``[1, C, T]``: the repository's speech and music clips at ``rate``, repeated.

    Mono: the average of the channels; stereo: the mono speech clip duplicated, the music clip
    as it is.
    """
    import numpy as np
    import soundfile as sf
    import soxr
    import torch

    clips = []
    for name in ("speech_24k.flac", "music_48k_stereo.flac"):
        wav, sr = sf.read(ROOT / "tests" / "data" / name, dtype="float32", always_2d=True)
        wav = soxr.resample(wav, sr, rate) if sr != rate else wav
        if channels == 1:
            wav = wav.mean(axis=1, keepdims=True)
        elif wav.shape[1] == 1:
            wav = np.repeat(wav, channels, axis=1)
        clips.append(wav[:, :channels].T.astype(np.float32))
    joined = np.concatenate(clips, axis=1)
    length = int(seconds * rate)
    reps = int(np.ceil(length / joined.shape[1]))
    wav = np.ascontiguousarray(np.tile(joined, (1, reps))[:, :length])
    return torch.from_numpy(wav).unsqueeze(0)


def transformers_from_encodec(arch: str, model):
    """transformers' ``EncodecModel`` for ``arch`` holding the tensors of ``model``.

    Each transformers key is mapped to its source with audiotok's own ``hf_key_to_ours``
    (the ``encodec`` package's names are ours); every key must be mapped, none left over.
    """
    from reference_models import hf_model

    from audiotok.zoo.codec_convert import hf_key_to_ours

    source = model.state_dict()
    hf = hf_model(arch)
    state, used = {}, set()
    for key, tensor in hf.state_dict().items():
        name = hf_key_to_ours(key, set(source))
        assert name is not None, f"no source for transformers key {key}"
        assert source[name].shape == tensor.shape, (key, name)
        state[key] = source[name].clone()
        used.add(name)
    assert used == set(source), f"tensors left unmapped: {sorted(set(source) - used)}"
    hf.load_state_dict(state, strict=True)
    return hf.eval()


def load_side(side: str, arch: str, directory: Path, bandwidth: float):
    """``(encode, decode)`` of one side: audio ``[1, C, T]`` -> encoded -> audio ``[1, C, T']``.

    ``encoded`` is the side's own output (:func:`codes_of` reads its codes).
    """
    import torch

    if side.startswith("audiotok"):
        import audiotok

        codec = audiotok.load_codec(directory / f"{arch}-00000000.th")
        return (
            lambda wav: codec.encode(wav, bandwidth=bandwidth),
            lambda tokens: codec.decode(tokens),
        )
    if side == "encodec":
        from reference_models import import_encodec

        encodec = import_encodec()
        build = getattr(encodec.EncodecModel, arch.replace("encodec_", "encodec_model_"))
        model = build(pretrained=False)
        model.load_state_dict(torch.load(directory / f"{arch}-00000000.th"))
        model.set_target_bandwidth(bandwidth)
        model.eval()

        def encode(wav):
            with torch.no_grad():
                return model.encode(wav)

        def decode(frames):
            with torch.no_grad():
                return model.decode(frames)

        return encode, decode
    from transformers import EncodecModel

    model = EncodecModel.from_pretrained(directory / f"{arch}-hf").eval()

    def encode(wav):
        with torch.no_grad():
            return model.encode(wav, bandwidth=bandwidth, return_dict=True)

    def decode(out):
        with torch.no_grad():
            return model.decode(
                out.audio_codes, out.audio_scales,
                last_frame_pad_length=out.last_frame_pad_length or 0, return_dict=True,
            ).audio_values  # fmt: skip

    return encode, decode


def codes_of(side: str, encoded):
    """Codes ``[B, K, F]`` of an encoded state, laid out as audiotok lays them."""
    import torch

    if side.startswith("audiotok"):
        return encoded.codes
    if side == "encodec":
        return torch.cat([codes for codes, _ in encoded], dim=-1)
    chunks = list(encoded.audio_codes)
    pad = encoded.last_frame_pad_length or 0
    if pad:
        chunks[-1] = chunks[-1][..., :-pad]
    return torch.cat(chunks, dim=-1)


def make_weights(arch: str, directory: Path, bandwidth: float) -> None:
    """Writes the shared weights of ``arch`` (``.th`` and a transformers directory) and checks
    that the three sides give identical codes on 3 s of real audio."""
    import torch
    from reference_models import ARCHS, calibrate_codebooks_, encodec_package_model
    from transformers.utils import logging

    logging.disable_progress_bar()
    a = ARCHS[arch]
    model = encodec_package_model(arch, seed=0)
    calibrate_codebooks_(model, "encodec", real_audio(4, a["sample_rate"], a["channels"]), arch)
    torch.save(model.state_dict(), directory / f"{arch}-00000000.th")
    transformers_from_encodec(arch, model).save_pretrained(directory / f"{arch}-hf")
    wav = real_audio(3, a["sample_rate"], a["channels"])
    codes = {}
    for side in SIDES:
        encode, _ = load_side(side, arch, directory, bandwidth)
        codes[side] = codes_of(side, encode(wav))
    assert codes["audiotok"][:, 0].unique().numel() > 8, "degenerate codes make a weak check"
    for side in REFERENCES:
        assert torch.equal(codes["audiotok"], codes[side]), f"{arch}: codes differ from {side}"


def run_side(side: str, arch: str, directory: Path, bandwidth: float, profile: int = 0) -> dict:
    """One timed encode and decode in this process; saves the codes next to the weights.

    With ``profile``, prints instead the ``profile`` operators that took the most time in
    each (``torch.profiler``, self CPU time).
    """
    import numpy as np
    import torch

    wav = torch.from_numpy(np.load(directory / f"{arch}-audio.npy"))
    encode, decode = load_side(side, arch, directory, bandwidth)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        state = wav
        for name, step in (("encode", encode), ("decode", decode)):
            with profiler(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                state = step(state)
                elapsed = time.perf_counter() - start
            print(f"### {arch} {side} {name}: {elapsed:.2f} s under the profiler")
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=profile)
            print(table, flush=True)
        return {}
    start = time.perf_counter()
    encoded = encode(wav)
    middle = time.perf_counter()
    audio = decode(encoded)
    end = time.perf_counter()
    np.save(directory / f"{arch}-{side}-codes.npy", codes_of(side, encoded).numpy())
    np.save(directory / f"{arch}-{side}-audio.npy", audio[..., : wav.shape[-1]].numpy())
    return {"encode": middle - start, "decode": end - middle}


def compare(arch, directory, sides, identical, differing, audio_err) -> None:
    """Updates the verdicts of ``arch`` with the codes and audio the last runs saved."""
    import numpy as np

    ours = np.load(directory / f"{arch}-audiotok-codes.npy")
    ours_audio = np.load(directory / f"{arch}-audiotok-audio.npy")
    for side in sides[1:]:
        theirs = np.load(directory / f"{arch}-{side}-codes.npy")
        same_shape = ours.shape == theirs.shape
        n = int((ours != theirs).sum()) if same_shape else -1
        identical[arch] &= n == 0
        differing[arch][side] = max(differing[arch].get(side, 0), n)
        err = float(np.abs(ours_audio - np.load(directory / f"{arch}-{side}-audio.npy")).max())
        audio_err[arch][side] = max(audio_err[arch].get(side, 0.0), err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="instead of timing, print each side's N costliest operators "
                        "(torch.profiler) in encode and decode")  # fmt: skip
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES,
                        help="sides to profile")  # fmt: skip
    parser.add_argument("--default-malloc", action="store_true",
                        help=f"also time audiotok with glibc's default allocator settings "
                        f"(AUDIOTOK_KEEP_MALLOC=1), as side {LIBC}")  # fmt: skip
    parser.add_argument("--tune-references", action="store_true",
                        help="give the references audiotok's allocator setting too "
                        "(audiotok.runtime.allocator.tune_allocator)")  # fmt: skip
    parser.add_argument("--side", choices=(*SIDES, LIBC), help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    if args.side:
        if args.tune_references and args.side in REFERENCES:
            from audiotok.runtime.allocator import tune_allocator

            assert tune_allocator(), "the allocator setting is not available here"
        result = run_side(args.side, args.models[0], args.dir, args.bandwidth, args.profile)
        if not args.profile:
            print(json.dumps(result))
        return

    from reference_models import ARCHS, import_encodec

    warnings.filterwarnings("ignore", category=FutureWarning)  # encodec's weight_norm
    import_encodec()
    times: dict[tuple[str, str], list[dict]] = {}
    identical: dict[str, bool] = {arch: True for arch in args.models}
    differing: dict[str, dict[str, int]] = {arch: {} for arch in args.models}
    audio_err: dict[str, dict[str, float]] = {arch: {} for arch in args.models}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for arch in args.models:
            a = ARCHS[arch]
            make_weights(arch, directory, args.bandwidth)
            wav = real_audio(args.seconds, a["sample_rate"], a["channels"])
            np.save(directory / f"{arch}-audio.npy", wav.numpy())
        if args.profile:
            for arch in args.models:
                for side in args.sides:
                    cmd = [sys.executable, __file__, "--side", side, "--models", arch,
                           "--dir", tmp, "--bandwidth", str(args.bandwidth), "--threads",
                           str(args.threads), "--profile", str(args.profile)]  # fmt: skip
                    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
            return
        sides = (*SIDES, LIBC) if args.default_malloc else SIDES
        others = OtherLoad()
        for _ in range(args.repeats):
            for arch in args.models:
                for side in sides:  # alternate the sides, each in a fresh process
                    cmd = [sys.executable, __file__, "--side", side, "--models", arch,
                           "--dir", tmp, "--seconds", str(args.seconds), "--bandwidth",
                           str(args.bandwidth), "--threads", str(args.threads)]  # fmt: skip
                    cmd += ["--tune-references"] if args.tune_references else []
                    env = {**os.environ, "AUDIOTOK_KEEP_MALLOC": "1"} if side == LIBC else None
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                         env=env).stdout  # fmt: skip
                    times.setdefault((arch, side), []).append(json.loads(out.splitlines()[-1]))
                compare(arch, directory, sides, identical, differing, audio_err)
        other_cores = others.cores()

    def runs_xrt(arch: str, side: str, part: str) -> list[float]:
        return [args.seconds / (r["encode"] + r["decode"] if part == "both" else r[part])
                for r in times[(arch, side)]]  # fmt: skip

    def xrt(arch: str, side: str, part: str) -> float:
        return statistics.median(runs_xrt(arch, side, part))

    parts = ("encode", "decode", "both")
    reference_malloc = "the same tuning" if args.tune_references else "the default allocator"
    print(f"{args.seconds:g} s of real audio per run, {args.bandwidth:g} kbps, {args.threads} "
          f"torch threads; x real time = audio s / wall s, median of {args.repeats} fresh "
          "processes per side; audiotok with its allocator tuning, the references with "
          f"{reference_malloc}; other processes used {other_cores:.2f} cores on average "
          "meanwhile")  # fmt: skip
    print("speed-up: this side's x real time over the faster reference's, per column")
    header = f"{'model':14} {'side':13} {'encode':>8} {'decode':>8} {'enc+dec':>8} "
    print(header + f"{'(min-max)':>11}   speed-up (encode / decode / enc+dec)")
    for arch in args.models:
        best = {p: max(xrt(arch, s, p) for s in REFERENCES) for p in parts}
        for side in sides:
            x = [xrt(arch, side, p) for p in parts]
            ratio = " / ".join(f"{v / best[p]:.2f}x" for v, p in zip(x, parts, strict=True))
            spread = runs_xrt(arch, side, "both")
            span = f"{min(spread):.1f}-{max(spread):.1f}"
            print(f"{arch:14} {side:13} {x[0]:8.1f} {x[1]:8.1f} {x[2]:8.1f} {span:>11}   {ratio}")
    for arch in args.models:
        target = TARGETS[arch]
        speedup = xrt(arch, "audiotok", "both") / max(xrt(arch, s, "both") for s in REFERENCES)
        met = "met" if speedup >= target else "NOT met"
        diffs = ", ".join(f"{s} {n}" for s, n in differing[arch].items())
        errs = ", ".join(f"{s} {e:.1e}" for s, e in audio_err[arch].items())
        print(f"{arch}: codes identical: {identical[arch]} (differing codes: {diffs}); "
              f"max |audio - reference|: {errs}; target {target:g}x on encode + decode: "
              f"{speedup:.2f}x, {met}")  # fmt: skip


if __name__ == "__main__":
    main()
