"""What Snake (DAC's activation) costs against ELU in the default codec's architecture, on CPU.

Two models of ``configs/audiotok_24khz.json``'s architecture, one per activation
(``model.activation``), random weights with codebooks initialised on the same latents (speed
doesn't depend on the weights). Timed in this process, the sides alternating, best of
``--repeats``:

- inference: encode + decode of ``--seconds`` of the repository's speech clip at 6 kbps
  through the tokenizer interface (``Codec.encode`` / ``Codec.decode``), ``--threads`` threads;
  the issue's floor is 30x real time on 2 CPU cores;
- training: one step of the recipe (forward at 8 codebooks, L1 + mel loss, backward) on a
  batch of ``--batch`` 1 s crops, 1 thread (the CPU slice's setting).

Prints x real time of each side and Snake's cost as a ratio to ELU's time.

Usage::

    python benchmarks/activation_bench.py [--seconds 10] [--repeats 5] [--threads 2] [--batch 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import load_clip  # noqa: E402

from audiotok.codec.encodec import EncodecCodec  # noqa: E402
from audiotok.train.config import load_config  # noqa: E402
from audiotok.train.losses import MultiScaleMelLoss  # noqa: E402
from audiotok.train.trainable import TrainableCodec  # noqa: E402

ACTIVATIONS = ("ELU", "Snake")


def build(activation: str, crops: torch.Tensor) -> TrainableCodec:
    """A trainable codec of the default architecture with ``activation``, codebooks inited."""
    config = load_config(
        ROOT / "configs" / "audiotok_24khz.json", (f"model.activation={activation}",)
    )
    torch.manual_seed(0)
    codec = TrainableCodec(config.model, config.codebooks).train()
    codec(crops, config.model.n_q, torch.Generator().manual_seed(0))  # k-means on every codebook
    return codec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per inference run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="threads for inference")
    parser.add_argument("--batch", type=int, default=16, help="1 s crops per training step")
    args = parser.parse_args()

    rate = 24_000
    clip = load_clip("speech_24k.flac", rate, 1, seconds=None)
    repeats = int(args.seconds * rate) // clip.shape[-1] + 1
    audio = clip.repeat(1, 1, repeats)[..., : int(args.seconds * rate)]
    gen = torch.Generator().manual_seed(0)
    # From the looped clip: the audio of --seconds 1 or less has no room for a 1 s crop.
    looped = clip.repeat(1, 1, rate // clip.shape[-1] + 2)
    starts = torch.randint(0, looped.shape[-1] - rate, (args.batch,), generator=gen).tolist()
    crops = torch.stack([looped[0, :, s : s + rate] for s in starts])  # [batch, 1, rate]
    models = {a: build(a, crops) for a in ACTIVATIONS}
    mel = MultiScaleMelLoss(rate)

    infer: dict[str, list[float]] = {a: [] for a in ACTIVATIONS}
    train: dict[str, list[float]] = {a: [] for a in ACTIVATIONS}
    for repeat in range(args.repeats + 1):  # the first round warms up, untimed
        for name, trainable in models.items():
            torch.set_num_threads(args.threads)
            codec = EncodecCodec(trainable.model.eval(), f"bench-{name}")
            with torch.inference_mode():
                start = time.perf_counter()
                codec.decode(codec.encode(audio, sample_rate=rate, bandwidth=6.0))
                inference_seconds = time.perf_counter() - start
            torch.set_num_threads(1)
            trainable.train()
            start = time.perf_counter()
            out = trainable(crops, 8, gen)
            (F.l1_loss(out.audio, crops) + mel(out.audio, crops) + out.commitment).backward()
            step_seconds = time.perf_counter() - start
            trainable.zero_grad(set_to_none=True)
            if repeat:
                infer[name].append(inference_seconds)
                train[name].append(step_seconds)

    print(f"torch {torch.__version__}; best of {args.repeats}, sides alternating")
    print("| activation | encode + decode x real time | training step s | vs ELU (time) |")
    print("| --- | --: | --: | --: |")
    for name in ACTIVATIONS:
        ratio_i = min(infer[name]) / min(infer["ELU"])
        ratio_t = min(train[name]) / min(train["ELU"])
        print(
            f"| {name} | {args.seconds / min(infer[name]):.1f} | {min(train[name]):.2f} | "
            f"inference {ratio_i:.2f}x, training {ratio_t:.2f}x |"
        )
    floor = args.seconds / min(infer["Snake"]) >= 30
    print(f"Snake encode + decode at least 30x real time on {args.threads} threads: {floor}")


if __name__ == "__main__":
    main()
