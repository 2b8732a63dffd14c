"""Start-up cost of the command line: ``audiotok compress`` / ``decompress`` of a short clip,
and, with ``--generate``, of ``audiotok generate`` with a tiny MusicGen.

A short clip's command should be dominated by work, not by starting up. The script makes a
clip of the repository's speech (``tests/data/speech_24k.flac``, looped to ``--seconds``,
written as a 16-bit WAV at 24 kHz to a temporary folder) and times whole processes, as a user
runs them, the kinds alternating within each round:

- ``python -c pass``: the interpreter alone;
- ``python -c "import torch"``: the reference, what any torch program pays;
- ``audiotok compress CLIP out.atok -f`` with the packaged default model (or ``--model``);
- ``audiotok decompress out.atok out.wav -f``.

It prints min / median / max of each and the median's ratio to the torch import, then an
in-process breakdown (fresh processes timing each step with ``time.perf_counter``: imports,
``load_codec``, the weights' fingerprint, encoding, writing, entropy decoding, decoding...),
medians over the same number of runs. Also printed: the machine (CPU model, cores, Python,
torch), and the CPU time other processes used during the timed runs (0 on an idle machine:
pause background jobs, e.g. ``training/cpu_slice.sh pause``, while this runs).

Target: compress and decompress of a 6 s clip each under 1.5 s wall.

With ``--generate``, generation instead of the codec: the script builds once, in the
temporary folder, the tests' tiny random-weight MusicGen (``tests/generate_reference.py``:
2 decoder layers of width 64, 4 codebooks of 64, a 2-layer T5 of width 32; this needs
transformers, which the dev install has) as an audiocraft export with its T5 directory, and
times, alternating as above:

- ``python -c pass`` and ``python -c "import torch"``, the reference;
- ``audiotok generate drums -m EXPORT --text-encoder T5DIR -d 0.5 -o out.wav -f``: the whole
  generator process (audiotok's own T5 encoder and tokenizer since commit ccd3066);
- ``transformers' T5 load``: a process that only imports transformers' ``T5EncoderModel``
  and ``AutoTokenizer``, loads T5DIR with them and encodes the prompt, as each generator
  process did before ccd3066; what a generator no longer pays, measured in the same run.

It prints the same table, and whether the generate process imported transformers (one
untimed run under ``python -X importtime``; it must not). No breakdown.

To measure another tree (the code before a change, say), put its root first on
``PYTHONPATH``: the commands and the breakdown then import ``audiotok`` from there.

Usage::

    python benchmarks/startup_bench.py [--runs 7] [--seconds 6] [--model NAME_OR_PATH]
        [--no-breakdown]
    python benchmarks/startup_bench.py --generate [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "tests" / "data" / "speech_24k.flac"
TARGET_S = 1.5
GENERATE_SECONDS = 0.5
PROMPT = "drums"
# What each generator process paid before commit ccd3066 (audiotok/generate/conditioners.py
# then): transformers' tokenizer and T5 encoder loaded from the directory, one prompt encoded.
T5_TRANSFORMERS = """\
import sys, torch
from transformers import AutoTokenizer, T5EncoderModel
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)
t5 = T5EncoderModel.from_pretrained(sys.argv[1], local_files_only=True).float().eval()
with torch.no_grad():
    t5(**tokenizer([sys.argv[2]], return_tensors="pt", padding=True))
"""


class BenchError(Exception):
    """A problem reported as one line."""


def machine() -> str:
    """CPU model and cores, Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    torch_version = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__)"],
        capture_output=True, text=True,
    ).stdout.strip() or "not installed"  # fmt: skip
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch_version}"
    )


def bytecode_note() -> str:
    """Whether audiotok's modules start from cached bytecode or are compiled at every start."""
    import importlib.util

    source = ROOT / "audiotok" / "__init__.py"
    if Path(importlib.util.cache_from_source(str(source))).is_file():
        return "audiotok's bytecode cached"
    why = " (PYTHONDONTWRITEBYTECODE is set)" if os.environ.get("PYTHONDONTWRITEBYTECODE") else ""
    return f"no cached bytecode for audiotok: its modules are compiled at every start{why}"


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has been busy, from ``/proc/stat`` (NaN elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def make_clip(path: Path, seconds: float) -> None:
    """``seconds`` of the repository's speech clip, looped, as a 24 kHz 16-bit WAV."""
    import numpy as np
    import soundfile as sf

    wav, rate = sf.read(SPEECH, dtype="float32", always_2d=True)
    n = round(seconds * rate)
    wav = np.tile(wav, (-(-n // len(wav)), 1))[:n]
    sf.write(path, wav, rate, subtype="PCM_16")


def audiotok_script() -> str:
    """The ``audiotok`` command beside this Python (a venv's), else the one on ``PATH``."""
    beside = Path(sys.executable).with_name("audiotok")
    found = str(beside) if beside.is_file() else shutil.which("audiotok")
    if not found:
        raise BenchError("no `audiotok` command beside this Python or on PATH: pip install -e .")
    return found


def time_process(cmd: list[str], cwd: Path) -> float:
    """Wall seconds of one run of ``cmd``; BenchError with its stderr if it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise BenchError(f"`{' '.join(cmd)}` failed ({done.returncode}): {last}")
    return elapsed


# -- the in-process breakdown, run in a fresh child process per kind --------------------------


def _import_torch() -> None:
    """torch imported as the commands import it (a plain import in older audiotok trees)."""
    from audiotok.cli import common

    if hasattr(common, "import_torch"):
        common.import_torch()
    else:
        import torch  # noqa: F401


def _lap_timer(steps: dict[str, float]) -> Callable[[str], None]:
    """``lap(name)`` records in ``steps`` the seconds since the previous lap (or creation)."""
    last = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        steps[name] = now - last[0]
        last[0] = now

    return lap


def _steps_compress(clip: Path, out: Path, model: str | None) -> dict[str, float]:
    steps: dict[str, float] = {}
    lap = _lap_timer(steps)

    import audiotok.cli.main  # noqa: F401  (what the `audiotok` script imports)

    lap("import the CLI (click, no torch)")
    _import_torch()
    lap("import torch (as the commands do)")
    from audiotok.audio.read import read_audio
    from audiotok.compression.channels import coded_channels
    from audiotok.compression.container.writer import AtokWriter
    from audiotok.runtime.files import atomic_output

    lap("import the compress modules")
    from audiotok.codec.load import load_codec
    from audiotok.zoo.codec_cards import DEFAULT_CODEC

    codec = load_codec(model or DEFAULT_CODEC)
    lap("load_codec")
    wav, rate = read_audio(clip)
    lap("read audio")
    channels = coded_channels(codec, wav.shape[0])
    tokens = codec.encode(wav, sample_rate=rate)
    lap("encode (model)")
    codec.fingerprint()
    lap("weights fingerprint")
    options = {"bandwidth": tokens.bandwidth, "entropy": "adaptive", "length": tokens.length,
               "original_sample_rate": rate, "original_channels": channels,
               "original_length": wav.shape[1]}  # fmt: skip
    with atomic_output(out, True) as file, AtokWriter.for_codec(file, codec, **options) as writer:
        writer.write_tokens(tokens)
    lap("entropy code + write .atok")
    return steps


def _steps_decompress(atok: Path, out: Path, model: str | None) -> dict[str, float]:
    steps: dict[str, float] = {}
    lap = _lap_timer(steps)

    import audiotok.cli.main  # noqa: F401

    lap("import the CLI (click, no torch)")
    _import_torch()
    lap("import torch (as the commands do)")
    import numpy as np
    import soundfile  # noqa: F401  (the decompress command imports it)
    import torch

    from audiotok.audio.write import write_audio
    from audiotok.codec.tokens import Tokens
    from audiotok.compression.container.reader import AtokReader
    from audiotok.compression.decode import decode_stream  # noqa: F401

    lap("import the decompress modules")
    from audiotok.codec.load import load_codec

    with AtokReader(atok) as reader:
        header = reader.header
    codec = load_codec(model or header.model_id)
    lap("load_codec")
    codec.fingerprint()
    lap("weights fingerprint")
    with AtokReader(atok, priors=codec.entropy_priors) as reader:
        packets = [(reader.decode(p, o), p.scales) for o, p in reader.packets()]
    codes = np.concatenate([c for c, _ in packets], axis=1)
    scales = [s for _, ss in packets for s in ss]
    lap("read + entropy decode")
    tokens = Tokens(
        torch.from_numpy(codes).unsqueeze(0),
        torch.tensor([scales], dtype=torch.float32) if header.scales_per_packet else None,
        header.length, header.sample_rate, header.bandwidth, codec.model_id,
    )  # fmt: skip
    audio = codec.decode(tokens)[0]
    lap("decode (model)")
    write_audio(out, audio, header.sample_rate, overwrite=True)
    lap("write audio")
    return steps


def breakdown(kind: str, clip: Path, work: Path, model: str | None, runs: int) -> dict:
    """Median seconds of each step of ``kind`` over ``runs`` fresh processes."""
    cmd = [sys.executable, __file__, "--child", kind, str(clip), str(work)]
    if model:
        cmd += ["--model", model]
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
            raise BenchError(f"breakdown of {kind} failed: {last}")
        for name, seconds in json.loads(done.stdout.strip().splitlines()[-1]).items():
            samples.setdefault(name, []).append(seconds)
    return {name: statistics.median(values) for name, values in samples.items()}


def child(kind: str, clip: Path, work: Path, model: str | None) -> None:
    if kind == "compress":
        steps = _steps_compress(clip, work / "breakdown.atok", model)
    else:
        steps = _steps_decompress(work / "out.atok", work / "breakdown.wav", model)
    print(json.dumps(steps))


# -- generation ----------------------------------------------------------------------------


def make_musicgen(directory: Path) -> tuple[Path, Path]:
    """The tests' tiny random MusicGen as an audiocraft export in ``directory``, and its T5.

    Returns:
        The export's directory and the T5 directory (for ``--text-encoder``).
    """
    import contextlib
    import io

    tests = str(ROOT / "tests")  # the helpers import their neighbours as they run
    sys.path.insert(0, tests)
    said = io.StringIO()  # the saves' progress bars, shown only on failure
    try:
        try:
            import transformers
            from generate_reference import save_audiocraft, tiny_musicgen
        except ImportError as exc:
            raise BenchError(f"the tests' tiny MusicGen needs transformers "
                             f"(pip install -e '.[dev]'): {exc}") from exc  # fmt: skip
        transformers.logging.set_verbosity_error()  # its handler writes to the stderr it found
        with contextlib.redirect_stderr(said):
            return save_audiocraft(tiny_musicgen(seed=0), directory / "export")
    except Exception:
        sys.stderr.write(said.getvalue())
        raise
    finally:
        sys.path.remove(tests)


def imported_packages(cmd: list[str], cwd: Path, names: tuple[str, ...]) -> list[str]:
    """Which of the top-level packages ``names`` one run of the Python script ``cmd`` imports
    (``python -X importtime``, whose report lists every import as it happens, lazy ones too).
    """
    done = subprocess.run([sys.executable, "-X", "importtime", *cmd], cwd=cwd,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        said = [ln for ln in done.stderr.splitlines() if ln.strip()]
        said = [ln for ln in said if not ln.startswith("import time:")] or ["(no message)"]
        raise BenchError(f"`{' '.join(cmd)}` under -X importtime failed: {said[-1]}")
    found = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            top = line.rsplit("|", 1)[1].strip().split(".")[0]
            if top in names:
                found.add(top)
    return sorted(found)


# -- the report ----------------------------------------------------------------------------


def time_alternating(kinds: dict[str, list[str]], work: Path, runs: int) -> tuple[dict, float]:
    """Wall seconds of ``runs`` runs of each command, alternating, and the CPU seconds other
    processes used meanwhile."""
    times: dict[str, list[float]] = {k: [] for k in kinds}
    busy, ours = busy_cpu_seconds(), children_cpu_seconds()
    for _ in range(runs):
        for kind, cmd in kinds.items():  # alternating, so drifts hit every kind alike
            times[kind].append(time_process(cmd, work))
    other = (busy_cpu_seconds() - busy) - (children_cpu_seconds() - ours)
    return times, other


def print_rows(times: dict[str, list[float]]) -> None:
    """min / median / max of each kind, and the median's ratio to the torch import."""
    torch_median = statistics.median(times['python -c "import torch"'])
    print(f"\n{'process':28} {'min s':>7} {'median s':>9} {'max s':>7} {'/ torch':>8}")
    for kind, values in times.items():
        median = statistics.median(values)
        print(f"{kind:28} {min(values):7.2f} {median:9.2f} {max(values):7.2f} "
              f"{median / torch_median:7.2f}x")  # fmt: skip


def run_generate(args: argparse.Namespace, script: str) -> None:
    """The ``--generate`` rows: ``audiotok generate`` against the torch import and against
    the T5 load with transformers that each generator process paid before."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export, t5_dir = make_musicgen(work)
        generate = [script, "generate", PROMPT, "-m", str(export), "--text-encoder",
                    str(t5_dir), "-d", f"{GENERATE_SECONDS:g}", "-o", "out.wav", "-f"]  # fmt: skip
        kinds = {
            "python -c pass": [sys.executable, "-c", "pass"],
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
            "audiotok generate": generate,
            "transformers' T5 load": [sys.executable, "-c", T5_TRANSFORMERS, str(t5_dir), PROMPT],
        }
        time_process(kinds["audiotok generate"], work)  # warm the file cache
        time_process(kinds["transformers' T5 load"], work)
        leaked = imported_packages(generate, work, ("transformers", "peft"))
        times, other = time_alternating(kinds, work, args.runs)

        print(f"tiny random MusicGen (audiocraft export + T5 directory), prompt {PROMPT!r}, "
              f"{GENERATE_SECONDS:g} s generated, {args.runs} runs of each, alternating; "
              f"other processes used {other:.1f} CPU-s meanwhile")  # fmt: skip
        print_rows(times)
        print("audiotok generate imported transformers (python -X importtime, one run): "
              + (f"YES ({', '.join(leaked)})" if leaked else "no"))  # fmt: skip
        ours = statistics.median(times["audiotok generate"])
        theirs = statistics.median(times["transformers' T5 load"])
        print(f"transformers' T5 load alone / the whole audiotok generate: {theirs / ours:.2f}x "
              f"({theirs:.2f} s against {ours:.2f} s, medians)")  # fmt: skip
    if leaked:
        raise BenchError(f"audiotok generate imported {', '.join(leaked)}")


def run(args: argparse.Namespace) -> None:
    if args.runs < 1 or args.seconds <= 0:
        raise BenchError("--runs and --seconds must be positive")
    if not SPEECH.is_file():
        raise BenchError(f"{SPEECH}: missing (run from a checkout of the repository)")
    if args.generate and args.model:
        raise BenchError("--model is for the codec rows; --generate uses the tests' tiny MusicGen")
    script = audiotok_script()
    model = ["-m", args.model] if args.model else []
    import audiotok

    print(f"Machine: {machine()}; {bytecode_note()}")
    print(f"audiotok from {Path(audiotok.__file__).parent}, command {script}")
    if args.generate:
        run_generate(args, script)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = work / "clip.wav"
        make_clip(clip, args.seconds)
        kinds = {
            "python -c pass": [sys.executable, "-c", "pass"],
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
            "audiotok compress": [script, "compress", str(clip), "out.atok", "-f", *model],
            "audiotok decompress": [script, "decompress", "out.atok", "out.wav", "-f", *model],
        }
        time_process(kinds["audiotok compress"], work)  # warm the file cache, make out.atok
        time_process(kinds["audiotok decompress"], work)
        times, other = time_alternating(kinds, work, args.runs)

        what = args.model or "the packaged default model"
        print(f"{args.seconds:g} s clip (24 kHz mono WAV), {what}, {args.runs} runs of each, "
              f"alternating; other processes used {other:.1f} CPU-s meanwhile")  # fmt: skip
        print_rows(times)
        verdicts = [
            f"{kind.split()[1]} {statistics.median(times[kind]):.2f} s"
            for kind in ("audiotok compress", "audiotok decompress")
        ]
        met = all(
            statistics.median(times[k]) < TARGET_S
            for k in ("audiotok compress", "audiotok decompress")
        )
        print(f"target: each under {TARGET_S:g} s (median): {', '.join(verdicts)}: "
              f"{'met' if met else 'NOT met'}")  # fmt: skip

        if args.no_breakdown:
            return
        for kind in ("compress", "decompress"):
            busy, ours = busy_cpu_seconds(), children_cpu_seconds()
            steps = breakdown(kind, clip, work, args.model, args.runs)
            other = (busy_cpu_seconds() - busy) - (children_cpu_seconds() - ours)
            wall = statistics.median(times[f"audiotok {kind}"])
            total = sum(steps.values())
            print(f"\nin-process breakdown of {kind} (median of {args.runs} fresh processes; "
                  f"other processes used {other:.1f} CPU-s meanwhile)")  # fmt: skip
            for name, seconds in steps.items():
                print(f"  {name:44} {seconds:6.3f} s")
            print(f"  {'sum of the steps':44} {total:6.3f} s")
            print(f"  {'rest of the process (interpreter, exit...)':44} {wall - total:6.3f} s"
                  f"  (of {wall:.2f} s wall)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each process")
    parser.add_argument("--seconds", type=float, default=6.0, help="the clip's duration")
    parser.add_argument("--model", help="-m for the commands; default: the packaged model")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the breakdown")
    parser.add_argument(
        "--generate", action="store_true", help="time `audiotok generate` instead of the codec"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, clip, work = args.child
        child(kind, Path(clip), Path(work), args.model)
        return
    try:
        run(args)
    except BenchError as exc:
        print(f"startup_bench.py: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
