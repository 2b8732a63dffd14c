"""Throughput and size of the ``.atok`` entropy coders: raw bit packing vs adaptive rANS.

Usage::

    python benchmarks/entropy_bench.py                      # simulated tokens, K = 2, 8, 32
    python benchmarks/entropy_bench.py --tokens a.npz b.npz # real tokens (audiotok tokens files)

Every packet is coded on its own, as in the container (``--frames`` frames per packet,
default 75: one second of ``encodec_24khz``). For each ``K`` it prints, per coder, the size
in bits per token and the encode and decode throughput in thousands of tokens per second
(best of ``--repeat`` runs over all packets, one thread), next to the order-0 entropy of the
tokens per codebook (the simulated law's, or the real tokens' empirical one): what a static
coder knowing their exact distribution would need, without any per-packet overhead.

Simulated tokens are drawn independently per frame from a Zipf-like law per codebook,
``p(r) ~ 1 / (r + 1)^s`` over a random permutation of the codes, with ``s`` going from 1.2 in
the first codebook to 0.8 in the last (residual codebooks are flatter). Real codec tokens also
repeat over time (silence, steady notes), which the adaptive model exploits and this simulation
does not. ``adaptive+priors`` uses static priors estimated
(:meth:`~audiotok.compression.container.adaptive.AdaptiveCoder.estimate_priors`) from separate
training packets of the same law; with ``--tokens`` they are estimated from the files themselves
(in-sample, so optimistic), or, with ``--priors-from MODEL``, taken from that model's card
(counted on its training data: out-of-sample, what ``audiotok compress`` uses)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from audiotok.compression.container.adaptive import AdaptiveCoder
from audiotok.compression.container.entropy import EntropyCoder
from audiotok.compression.container.rawpack import RawCoder


def zipf_packets(
    rng: np.random.Generator, k: int, n: int, frames: int, count: int, perms: np.ndarray
) -> list[np.ndarray]:
    """``count`` packets ``[k, frames]`` of Zipf-like codes; ``perms`` ``[k, n]`` fixes the law.

    Returns:
        int64 arrays ``[k, frames]``.
    """
    draws = np.empty((k, count * frames), dtype=np.int64)
    for i, probs in enumerate(zipf_laws(k, n)):
        draws[i] = perms[i][rng.choice(n, size=count * frames, p=probs)]
    return [draws[:, j * frames : (j + 1) * frames] for j in range(count)]


def zipf_laws(k: int, n: int) -> np.ndarray:
    """float64 ``[k, n]``: each codebook's law over ranks, exponent 1.2 down to 0.8."""
    ranks = np.arange(1, n + 1, dtype=np.float64)
    laws = 1.0 / ranks[None, :] ** np.linspace(1.2, 0.8, k)[:, None]
    return laws / laws.sum(axis=1, keepdims=True)


def law_entropy(laws: np.ndarray) -> float:
    """Entropy in bits per token of ``laws`` ``[k, n]``, averaged over codebooks."""
    return float(-(laws * np.log2(laws)).sum(axis=1).mean())


def load_token_packets(paths: list[str], frames: int | None) -> tuple[list[np.ndarray], int]:
    """Packets ``[K, frames]`` from audiotok tokens files, and the least cardinality fitting."""
    from audiotok.codec.tokens import Tokens  # imports torch: only when asked for

    packets: list[np.ndarray] = []
    for path in paths:
        tokens = Tokens.load(path)
        codes = tokens.codes.numpy()  # [B, K, F]
        per_packet = frames or max(1, round(tokens.num_frames / max(tokens.duration, 1e-9)))
        for item in codes:
            for start in range(0, item.shape[1], per_packet):
                packets.append(np.ascontiguousarray(item[:, start : start + per_packet]))
    if not packets or len({p.shape[0] for p in packets}) != 1:
        raise SystemExit("the tokens files must hold codes with one number of codebooks")
    largest = max(int(p.max(initial=0)) for p in packets)
    return packets, 1 << max(1, largest).bit_length()  # the smallest power of two that fits


def entropy_bits(packets: list[np.ndarray], n: int) -> float:
    """Order-0 entropy per token, per codebook over all packets, averaged over codebooks."""
    codes = np.concatenate(packets, axis=1)
    total = 0.0
    for row in codes:
        counts = np.bincount(row, minlength=n).astype(np.float64)
        p = counts[counts > 0] / row.size
        total += float(-(p * np.log2(p)).sum())
    return total / codes.shape[0]


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Shortest wall time of ``repeat`` calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(coder: EntropyCoder, packets: list[np.ndarray], repeat: int) -> tuple[float, ...]:
    """(bits per token, encode tokens/s, decode tokens/s) of ``coder`` over ``packets``."""
    payloads = [coder.encode(p) for p in packets]
    for p, data in zip(packets, payloads, strict=True):  # a benchmark of a wrong coder is moot
        assert np.array_equal(coder.decode(data, p.shape[1]), p)
    tokens = sum(p.size for p in packets)
    enc = best_time(lambda: [coder.encode(p) for p in packets], repeat)
    dec = best_time(
        lambda: [coder.decode(d, p.shape[1]) for d, p in zip(payloads, packets, strict=True)],
        repeat,
    )
    return 8 * sum(map(len, payloads)) / tokens, tokens / enc, tokens / dec


def report(
    n: int, packets: list[np.ndarray], priors: np.ndarray, entropy: float, repeat: int
) -> None:
    """Prints the rows of one ``K``."""
    k = packets[0].shape[0]
    coders = {
        "raw": RawCoder(n, k),
        "adaptive": AdaptiveCoder(n, k),
        "adaptive+priors": AdaptiveCoder(n, k, priors=priors),
    }
    for name, coder in coders.items():
        bits, enc, dec = measure(coder, packets, repeat)
        print(
            f"{k:>3} {n:>5} {packets[0].shape[1]:>6} {name:<16} {bits:>9.3f} {entropy:>8.3f} "
            f"{enc / 1e3:>12.0f} {dec / 1e3:>12.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", nargs="+", metavar="FILE", help="audiotok tokens files")
    parser.add_argument("--codebooks", type=int, nargs="+", default=[2, 8, 32], metavar="K")
    parser.add_argument(
        "--cardinality", type=int, default=1024, help="codebook size (at least, with --tokens)"
    )
    parser.add_argument("--frames", type=int, default=None, help="frames per packet")
    parser.add_argument(
        "--priors-from", metavar="MODEL", help="with --tokens: use this model card's priors"
    )
    parser.add_argument("--packets", type=int, default=50, help="simulated test packets")
    parser.add_argument("--train-packets", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(
        f"{'K':>3} {'card':>5} {'frames':>6} {'coder':<16} {'bits/tok':>9} {'entropy':>8} "
        f"{'enc ktok/s':>12} {'dec ktok/s':>12}"
    )
    if args.tokens:
        packets, fits = load_token_packets(args.tokens, args.frames)
        n = max(args.cardinality, fits)
        if args.priors_from:
            import audiotok

            card_priors = audiotok.load_codec(args.priors_from).entropy_priors
            if card_priors is None or card_priors.shape[1] != n:
                raise SystemExit(f"{args.priors_from} has no priors for cardinality {n}")
            priors = card_priors[: packets[0].shape[0]]
        else:
            priors = AdaptiveCoder.estimate_priors(packets, n)
        report(n, packets, priors, entropy_bits(packets, n), args.repeat)
        return
    rng = np.random.default_rng(args.seed)
    n, frames = args.cardinality, args.frames or 75
    for k in args.codebooks:
        perms = np.stack([rng.permutation(n) for _ in range(k)])
        train = zipf_packets(rng, k, n, frames, args.train_packets, perms)
        priors = AdaptiveCoder.estimate_priors(train, n)
        test = zipf_packets(rng, k, n, frames, args.packets, perms)
        report(n, test, priors, law_entropy(zipf_laws(k, n)), args.repeat)


if __name__ == "__main__":
    main()
