"""End-to-end compression benchmark: audiotok against Meta's ``encodec`` package.

Both sides run the same weights (a random-weight ``encodec_24khz`` written once in the official
``.th`` format and loaded by each) on the same real audio (the repository's speech and music
clips, repeated to the length asked), each in a fresh process as its users would run it, the
sides alternating. Timed: ``compress`` + ``decompress`` (model loading excluded):

- ``encodec``: ``encodec.compress.compress(use_lm=False)`` then ``decompress`` (bit packing);
- ``atok``: ``audiotok.compress`` to ``.atok`` (adaptive rANS) then ``audiotok.decompress``;
- ``ecdc``: ``audiotok`` writing and reading ``.ecdc`` (the same bytes as ``encodec``);
- with ``--lm``: ``encodec`` with ``use_lm=True`` against audiotok's ``.ecdc`` LM coder, both
  on one random-weight LM of the official architecture.

The script prints the median time of each side, the ratios, the file sizes, and whether the
decoded audio is identical.

Usage::

    pip install --no-deps encodec==0.1.1   # the reference; it pins torchaudio, which it
                                          # needs only for file I/O: a stub stands in
    python benchmarks/compress_bench.py [--seconds 60] [--repeats 3] [--threads 2] [--lm]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def real_audio(seconds: float, rate: int = 24_000):
    """``[1, T]``: the repository's speech and music clips, mono, repeated to ``seconds``."""
    import numpy as np
    import soundfile as sf
    import soxr
    import torch

    clips = []
    for name in ("speech_24k.flac", "music_48k_stereo.flac"):
        wav, sr = sf.read(ROOT / "tests" / "data" / name, dtype="float32", always_2d=True)
        clips.append(soxr.resample(wav.mean(axis=1), sr, rate).astype(np.float32))
    joined = np.concatenate(clips)
    reps = int(np.ceil(seconds * rate / len(joined)))
    return torch.from_numpy(np.tile(joined, reps)[: int(seconds * rate)]).unsqueeze(0)


def make_weights(directory: Path) -> tuple[Path, Path]:
    """The shared codec and LM weights, as official-format files."""
    import torch
    from reference_models import calibrate_codebooks_, encodec_package_model, save_encodec_th

    encodec = sys.modules["encodec"]
    model = encodec_package_model("encodec_24khz", seed=0)
    calibrate_codebooks_(model, "encodec", real_audio(4).unsqueeze(0), "encodec_24khz")
    codec_path = save_encodec_th(model, directory, "encodec_24khz-00000000.th")
    torch.manual_seed(1234)
    lm = encodec.model.LMModel(32, 1024, num_layers=5, dim=200, past_context=int(3.5 * 75))
    lm_path = directory / "encodec_lm_24khz-00000000.th"
    torch.save(lm.state_dict(), lm_path)
    return codec_path, lm_path


def run_side(side: str, codec_path: Path, lm_path: Path, seconds: float, bandwidth: float) -> dict:
    """One timed compress + decompress in this process."""
    import torch

    wav = real_audio(seconds)
    if side.startswith("encodec"):
        encodec = sys.modules["encodec"]
        ref_compress = sys.modules["encodec.compress"]  # the package's name is its function
        model = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
        model.load_state_dict(torch.load(codec_path))
        model.set_target_bandwidth(bandwidth)
        model.name = "encodec_24khz"
        lm = encodec.model.LMModel(32, 1024, num_layers=5, dim=200, past_context=int(3.5 * 75))
        lm.load_state_dict(torch.load(lm_path))
        lm.eval()
        model.get_lm_model = lambda: lm
        ref_compress.MODELS["encodec_24khz"] = lambda: model
        start = time.perf_counter()
        data = ref_compress.compress(model, wav, use_lm=side == "encodec-lm")
        audio, _ = ref_compress.decompress(data)
    else:
        import audiotok
        from audiotok.compression.container.ecdc import read_ecdc, write_ecdc
        from audiotok.compression.container.ecdc_lm import load_ecdc_lm

        codec = audiotok.load_codec(codec_path)
        lm = load_ecdc_lm("encodec_24khz", lm_path) if side == "ecdc-lm" else None
        start = time.perf_counter()
        if side == "atok":
            data = audiotok.compress(codec, wav, 24_000, bandwidth)
            audio, _ = audiotok.decompress(data, codec)
        else:
            data = write_ecdc(codec.encode(wav, bandwidth=bandwidth), "encodec_24khz", lm=lm)
            audio = codec.decode(read_ecdc(data, lm_loader=lambda _: lm))[0]
    elapsed = time.perf_counter() - start
    digest = hashlib.sha256(audio.reshape(-1).contiguous().numpy().tobytes()).hexdigest()
    return {"seconds": elapsed, "bytes": len(data), "audio": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bandwidth", type=float, default=6.0)
    parser.add_argument("--lm", action="store_true", help="also compare LM entropy coding")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--weights", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch
    from reference_models import import_encodec

    torch.set_num_threads(args.threads)
    import_encodec()
    if args.side:
        result = run_side(args.side, *args.weights, args.seconds, args.bandwidth)
        print(json.dumps(result))
        return

    pairs = [("atok", "encodec"), ("ecdc", "encodec")]
    if args.lm:
        pairs.append(("ecdc-lm", "encodec-lm"))
    with tempfile.TemporaryDirectory() as tmp:
        weights = make_weights(Path(tmp))
        results: dict[str, list[dict]] = {}
        sides = sorted({s for pair in pairs for s in pair})
        for _ in range(args.repeats):
            for side in sides:  # alternate the sides, each in a fresh process
                cmd = [sys.executable, __file__, "--side", side, "--weights", *map(str, weights),
                       "--seconds", str(args.seconds), "--bandwidth", str(args.bandwidth),
                       "--threads", str(args.threads)]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                results.setdefault(side, []).append(json.loads(out.strip().splitlines()[-1]))

    def median(side: str) -> float:
        return statistics.median(r["seconds"] for r in results[side])

    print(f"{args.seconds:g} s of audio at 24 kHz, {args.bandwidth:g} kbps, "
          f"{args.threads} threads, median of {args.repeats} fresh processes per side")  # fmt: skip
    print(f"{'audiotok':10} {'s':>7} {'encodec':11} {'s':>7} {'speed-up':>9} {'bytes':>8} "
          f"{'theirs':>8}  identical audio")  # fmt: skip
    for ours, theirs in pairs:
        o, t = results[ours][0], results[theirs][0]
        print(f"{ours:10} {median(ours):7.2f} {theirs:11} {median(theirs):7.2f} "
              f"{median(theirs) / median(ours):8.2f}x {o['bytes']:8d} {t['bytes']:8d}  "
              f"{o['audio'] == t['audio']}")  # fmt: skip


if __name__ == "__main__":
    main()
