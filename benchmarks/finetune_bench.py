"""Fine-tuning speed and memory: full fine-tuning against LoRA, one training step at a time.

An LM of the chosen size with random weights (no download) trains with audiocraft's
objective (``audiotok.finetune.loss.lm_loss``: the delay pattern, cross-entropy over every
codebook) on random codes ``[batch, 4, seconds * 50]`` and a random text condition of 16
positions (T5 is frozen in fine-tuning and runs once per batch; it is left out here), with
AdamW over the trainable parameters: all of them (``full``), or rank-``--rank`` adapters on
``out_proj``, ``linear1`` and ``linear2`` (``lora``, through peft, as ``lora.rank`` in a
recipe). Each mode runs in a process of its own, so that its peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated``, on a CPU the process's peak resident set (which also
counts torch itself, about 0.3 GB). Steps/s: optimiser steps per second after ``--warmup``
untimed ones.

Sizes: ``tiny`` (64 wide, 2 layers, 64 entries: a smoke test), ``small`` (512 wide, 8
layers, 2048 entries) and ``musicgen-small`` (1024 wide, 24 layers, 16 heads, 2048 entries:
the published model's LM).

Usage::

    python benchmarks/finetune_bench.py [--size tiny|small|musicgen-small] [--batch 2]
        [--seconds 10] [--steps 5] [--warmup 1] [--rank 16] [--device cpu|cuda]
        [--precision fp32|bf16] [--modes full,lora]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {
    "tiny": {"dim": 64, "num_heads": 4, "num_layers": 2, "card": 64},
    "small": {"dim": 512, "num_heads": 8, "num_layers": 8, "card": 2048},
    "musicgen-small": {"dim": 1024, "num_heads": 16, "num_layers": 24, "card": 2048},
}
FRAME_RATE = 50  # the 32 kHz EnCodec of MusicGen
TEXT_POSITIONS = 16


def measure(args: argparse.Namespace, mode: str) -> dict:
    """Runs ``mode`` here and returns steps/s and peak memory."""
    import resource

    import torch

    from audiotok.finetune.config import LoraConfig
    from audiotok.finetune.lora import add_lora
    from audiotok.finetune.loss import lm_loss
    from audiotok.generate.conditioners import ConditionTensors
    from audiotok.generate.generation import pattern_provider
    from audiotok.generate.lm import LMModel
    from audiotok.generate.lm_config import ConditionerConfig, LMConfig

    torch.manual_seed(0)
    device = torch.device(args.device)
    size = SIZES[args.size]
    config = LMConfig(
        n_q=4, conditioners=(ConditionerConfig("description", "t5", 768, t5_name="t5-base"),),
        **size,
    )  # fmt: skip
    lm = LMModel(config).to(device)
    if mode == "lora":
        add_lora(lm, LoraConfig(rank=args.rank, alpha=2 * args.rank), seed=0)
    params = [p for p in lm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), weight_decay=0.1)
    patterns = pattern_provider(config)
    frames = int(args.seconds * FRAME_RATE)
    codes = torch.randint(0, config.card, (args.batch, 4, frames), device=device)
    padding = torch.ones(codes.shape, dtype=torch.bool, device=device)
    embeds = torch.randn(args.batch, TEXT_POSITIONS, config.dim, device=device)
    mask = torch.ones(args.batch, TEXT_POSITIONS, dtype=torch.long, device=device)
    condition = ConditionTensors({"description": (embeds, mask)})
    bf16 = args.precision == "bf16"

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = lm_loss(lm, patterns, codes, padding, condition)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return float(loss)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    elapsed = time.perf_counter() - start
    return {
        "mode": mode,
        "steps_per_s": args.steps / elapsed,
        "peak_gb": peak / 1e9,
        "trainable": sum(p.numel() for p in params),
        "parameters": sum(p.numel() for p in lm.parameters()),
    }


def device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {torch.get_num_threads()} threads"
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--modes", default="full,lora")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args, args.child)))
        return
    rows = []
    argv, skip = [], False
    for a in sys.argv[1:]:  # without --modes and its value (`--modes lora`, `--modes=lora`)
        if skip or a.startswith("--modes"):
            skip = a == "--modes"
            continue
        argv.append(a)
    for mode in args.modes.split(","):
        out = subprocess.run(
            [sys.executable, __file__, *argv, "--child", mode], capture_output=True, text=True
        )
        if out.returncode:
            sys.exit(f"finetune_bench: the {mode} run failed:\n{out.stderr.strip()}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"{args.size}, batch {args.batch} x {args.seconds:g} s ({int(args.seconds * FRAME_RATE)} "
        f"frames), {args.precision}, {device_name(args.device)}"
    )
    print(f"{'mode':<6} {'trainable':>14} {'steps/s':>9} {'peak GB':>9}")
    for row in rows:
        print(
            f"{row['mode']:<6} {row['trainable']:>14,} {row['steps_per_s']:>9.3f} "
            f"{row['peak_gb']:>9.2f}"
        )


if __name__ == "__main__":
    main()
