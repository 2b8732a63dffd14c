"""What a training step of the default codec's recipe costs in float32 and under bf16 autocast.

Two :class:`~audiotok.train.trainer.Trainer` of ``configs/audiotok_24khz.json`` (the shipped
recipe: balancer, L1 + mel + log-mel, averaged weights), one with ``precision`` fp32, one
with bf16 (the encoder and decoder under bfloat16 autocast), the same initial weights and the
same batches of ``--batch`` 1 s crops of the repository's speech and music clips. Timed in
this process, ``--threads`` threads (1: the CPU slice's setting), the sides alternating, best
of ``--repeats`` steps after two warm-up steps each.

Prints seconds per step of each side (best and mean), bf16's time as a ratio to fp32's, the
processor and whether it has AMX (oneDNN's bf16 matrix unit, where bf16 convolutions pay).
``--set`` overrides the recipe on both sides, e.g. ``--set losses.adversarial=4 --set
losses.feature_matching=4`` for the cost of EnCodec's adversarial losses.

Usage::

    python benchmarks/train_step_bench.py [--batch 16] [--repeats 5] [--threads 1] [--set K=V]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import load_clip  # noqa: E402

from audiotok.train.config import load_config  # noqa: E402
from audiotok.train.trainer import Trainer  # noqa: E402


class RepositoryCrops:
    """Batches of 1 s crops of the repository's clips, a function of the step (as the
    trainer's samplers are), the same for both sides."""

    def __init__(self, batch: int, rate: int) -> None:
        names = ("speech_24k.flac", "music_48k_stereo.flac")
        clips = [load_clip(name, rate, 1).flatten() for name in names]
        self.audio = torch.cat(clips)  # [T]
        self.batch_size, self.rate = batch, rate

    def batch(self, step: int) -> torch.Tensor:
        """``[batch, 1, rate]`` crops at positions drawn from ``step``."""
        gen = torch.Generator().manual_seed(step)
        starts = torch.randint(0, self.audio.numel() - self.rate, (self.batch_size,), generator=gen)
        return torch.stack([self.audio[s : s + self.rate] for s in starts.tolist()])[:, None]


def trainer(precision: str, batch: int, folder: Path, sets: tuple[str, ...] = ()) -> Trainer:
    """A trainer of the shipped recipe (with the ``sets`` overrides) at ``precision`` that
    draws :class:`RepositoryCrops`."""
    config = load_config(
        ROOT / "configs" / "audiotok_24khz.json",
        (*sets, f"precision={precision}", f"data.batch_size={batch}", "data.subset="),
    )
    crops = RepositoryCrops(batch, config.model.sample_rate)

    class CropTrainer(Trainer):
        def _samplers(self):
            return crops, None

    return CropTrainer(config, folder / precision)


def processor() -> str:
    """The CPU's model name and whether it has AMX, from /proc/cpuinfo where there is one."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown processor"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), "unknown processor")  # fmt: skip
    return f"{name}, AMX {'yes' if 'amx_bf16' in info else 'no'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="1 s crops per step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="a recipe override for both sides, e.g. losses.adversarial=4",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        sides = {p: trainer(p, args.batch, Path(tmp), tuple(args.sets)) for p in ("fp32", "bf16")}
        times: dict[str, list[float]] = {name: [] for name in sides}
        for side in sides.values():
            for _ in range(2):
                side.train_step()
        for _ in range(args.repeats):
            for name, side in sides.items():
                start = time.perf_counter()
                side.train_step()
                times[name].append(time.perf_counter() - start)
    overrides = f", overrides {' '.join(args.sets)}" if args.sets else ""
    print(f"{processor()}; torch {torch.__version__}, {args.threads} thread(s), "
          f"batch {args.batch} x 1 s, {args.repeats} steps each{overrides}")  # fmt: skip
    # The best step is the cost of the codec's step; the mean also counts the discriminator's
    # updates, which come with a probability per step (losses.disc_update_prob) when the
    # adversarial losses are on.
    best = {name: min(t) for name, t in times.items()}
    mean = {name: sum(t) / len(t) for name, t in times.items()}
    for name in sides:
        print(f"{name}: best {best[name]:.3f} s/step, mean {mean[name]:.3f}")
    print(
        f"bf16 / fp32 time: best {best['bf16'] / best['fp32']:.2f}, "
        f"mean {mean['bf16'] / mean['fp32']:.2f}"
    )


if __name__ == "__main__":
    main()
