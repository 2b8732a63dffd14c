"""``audiotok compress``, ``decompress`` and ``info``: the compression job.

``compress IN [OUT]`` and ``decompress IN [OUT]`` take one file (``-`` for stdin/stdout), or
several files or directories, whose outputs go beside each input or into ``-o DIR``. Every
output is written atomically, and none is overwritten without ``-f``. With several inputs a
line per file goes to stderr, under a progress bar when stderr is a terminal; a failing file is
reported and the others still processed (exit status 1 at the end). A damaged or truncated
file is an error unless ``decompress --recover`` conceals what is missing.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ..errors import AudiotokError
from ..runtime.console import stderr_is_terminal
from .common import (
    AUDIO_SUFFIXES,
    DEFAULT_MODEL,
    STDIN_NAME,
    backend_option,
    checkpoint_option,
    device_option,
    expand_inputs,
    fail,
    force_option,
    handle_errors,
    import_torch,
    load,
    message,
    model_option,
    stdin_file,
)
from .ecdc_files import compress_ecdc, read_ecdc_file, write_ecdc_file
from .summaries import streamed_summary, summary, written_summary

COMPRESSED_SUFFIXES = (".atok", ".ecdc")


def _split_output(
    paths: tuple[str, ...], out_suffixes: tuple[str, ...], output_dir: Path | None
) -> tuple[tuple[str, ...], str | None]:
    """``IN OUT`` when there are two paths and the second is ``-`` or has an output suffix.

    A file then something that is not one (a directory, a typo'd output name) is refused
    rather than read as two inputs: ``compress a.wav out/`` would otherwise compress the
    audio inside ``out/`` beside itself, and ``a.wav out.atk`` write ``a.atok`` first.
    """
    if len(paths) == 2 and (paths[1] == "-" or Path(paths[1]).suffix.lower() in out_suffixes):
        if output_dir is not None:
            fail(f"-o DIR is for several inputs; {paths[1]} already names the output")
        return paths[:1], paths[1]
    if len(paths) == 2 and Path(paths[0]).is_file() and not Path(paths[1]).is_file():
        what = "a directory" if Path(paths[1]).is_dir() else "not a file"
        fail(
            f"{paths[1]}: {what}; name an output file ({', '.join(out_suffixes)}) or "
            f"write into a directory with -o {paths[1]}"
        )
    return paths, None


def _single(inputs: tuple[str, ...], output: str | None, output_dir: Path | None) -> bool:
    """One input (or stdin) to one output: errors are then one line, without a batch summary."""
    if output is not None or inputs == ("-",):
        return True
    return len(inputs) == 1 and output_dir is None and not Path(inputs[0]).is_dir()


def _targets(
    inputs: list[tuple[Path, Path]], out_dir: Path | None, suffix: str
) -> Iterator[tuple[Path, Path]]:
    for path, root in inputs:
        relative = path.relative_to(root) if out_dir is not None else Path(path.name)
        target = (out_dir / relative if out_dir else path.parent / relative).with_suffix(suffix)
        yield path, target


def _run_batch(items: list[tuple[Path, Path]], job: Callable[[Path, Path], str | None]) -> None:
    """Runs ``job`` on every ``(input, output)``, a line for each; exit 1 if any failed.

    Refused before any work: nothing to do, or two inputs with one output (``a.wav`` and
    ``a.flac`` both to ``a.atok``, where the second would fail or, with ``-f``, replace the
    first). The progress bar is drawn only on a terminal: in a log its redraws would be noise.
    """
    if not items:
        fail("no files to process: the directories given hold none of the input kind")
    sources: dict[Path, Path] = {}
    for source, target in items:
        if target in sources:
            fail(
                f"{target} would be written from both {sources[target]} and {source}; "
                "process them apart (or into different -o folders)"
            )
        sources[target] = source
    from tqdm import tqdm

    failures = 0
    bar_off = len(items) < 2 or not stderr_is_terminal()
    with tqdm(items, unit="file", disable=bar_off, file=sys.stderr) as bar:
        for source, target in bar:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                note = job(source, target)
                if note:
                    bar.write(note, file=sys.stderr)
            except AudiotokError as exc:
                failures += 1
                bar.write(f"audiotok: error: {message(exc)}", file=sys.stderr)
    if failures:
        fail(f"{failures} of {len(items)} files failed")


paths_argument = click.argument("paths", nargs=-1, required=True, metavar="IN [OUT]")
output_dir_option = click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write outputs here (mirroring input directories).",
)


def _parse_meta(values: tuple[str, ...]) -> dict[str, str]:
    meta = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--meta")
        meta[key] = value
    return meta


exact_option = click.option(
    "--exact", is_flag=True,
    help="One pass in memory, as the reference model (memory grows with the length).",
)  # fmt: skip


@click.command()
@paths_argument
@output_dir_option
@model_option
@checkpoint_option
@click.option("-b", "--bandwidth", type=float, help="kbps; default: the model's default.")
@click.option("--entropy", type=click.Choice(["adaptive", "raw", "lm"]), default="adaptive",
              show_default=True, help="Entropy coding (lm: .ecdc outputs only).")  # fmt: skip
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Metadata to store (repeatable).")
@click.option("--downmix", is_flag=True,
              help="Code audio of more channels than the model's as the model's (mono: their "
                   "average; stereo: the first two), decompressed as such.")  # fmt: skip
@exact_option
@device_option
@backend_option
@force_option
@handle_errors
def compress(
    paths: tuple[str, ...],
    output_dir: Path | None,
    model: str | None,
    checkpoint: Path | None,
    bandwidth: float | None,
    entropy: str,
    meta: tuple[str, ...],
    downmix: bool,
    exact: bool,
    device: str,
    backend: str,
    force: bool,
) -> None:
    """Compress audio files to .atok (or .ecdc, the encodec package's format).

    Files longer than 20 s are coded as streams, in blocks, in bounded memory (the codes
    equal one-pass coding's but where rounding tips a near-tie); --exact codes in one pass.
    Audio of 3 or more channels, which a mono or stereo model can't give back, is refused
    unless --downmix.
    """
    import_torch(backend, model)
    from ..audio.read import read_audio
    from ..compression.channels import coded_channels
    from ..compression.encode import compress_to
    from ..compression.files import compress_file, encode_file
    from ..runtime.files import atomic_output

    metadata = _parse_meta(meta)
    inputs, output = _split_output(paths, COMPRESSED_SUFFIXES, output_dir)
    codec = load(model or DEFAULT_MODEL, checkpoint, device, backend)

    def job(source: Path | str, target: Path | str) -> str:
        if source == "-":  # as a file: bounded memory, and long input streams
            with stdin_file(target) as path:
                return job(path, target).replace(str(path), STDIN_NAME)
        if _streamed_to_atok(source, target, codec, entropy, exact):
            compress_file(source, target, codec, bandwidth=bandwidth, overwrite=force,
                          entropy=entropy, metadata=metadata, downmix=downmix)  # fmt: skip
            return streamed_summary(Path(target))
        if source != "-" and target != "-" and Path(target).suffix.lower() == ".ecdc":
            tokens = encode_file(source, codec, bandwidth=bandwidth, downmix=downmix, exact=exact)
            return write_ecdc_file(codec, tokens, entropy, target, force)
        wav, rate = read_audio(source)
        sink = io.BytesIO() if target == "-" else None
        suffix = ".atok" if target == "-" else Path(target).suffix.lower()
        # Refused before anything is written, .ecdc (which decodes as coded) included.
        coded_channels(codec, wav.shape[0], downmix, str(source))
        if suffix == ".ecdc" or entropy == "lm":
            return compress_ecdc(codec, wav, rate, bandwidth, entropy, target, force, suffix)
        if sink is not None:
            tokens = compress_to(sink, codec, wav, rate, bandwidth, entropy=entropy,
                                 metadata=metadata, downmix=downmix)  # fmt: skip
            sys.stdout.buffer.write(sink.getvalue())
        else:
            with atomic_output(target, force) as file:
                tokens = compress_to(file, codec, wav, rate, bandwidth, entropy=entropy,
                                     metadata=metadata, downmix=downmix)  # fmt: skip
        return summary(target, tokens)

    if _single(inputs, output, output_dir):
        target = output or ("-" if inputs[0] == "-" else Path(inputs[0]).with_suffix(".atok"))
        click.echo(job(inputs[0], target), err=True)
        return
    _run_batch(list(_targets(expand_inputs(inputs, AUDIO_SUFFIXES), output_dir, ".atok")), job)


def _streamed_to_atok(
    source: Path | str, target: Path | str, codec: Any, entropy: str, exact: bool
) -> bool:
    """Whether to compress as a stream: a long file, to an .atok file, with a codec that streams."""
    from ..audio.blocks import audio_info
    from ..compression.files import streams

    if "-" in (source, target) or Path(target).suffix.lower() != ".atok" or entropy == "lm":
        return False
    info = audio_info(source)
    return streams(codec, info.frames / info.samplerate, exact)


@click.command()
@paths_argument
@output_dir_option
@model_option
@checkpoint_option
@click.option("--recover", is_flag=True,
              help="Decode damaged or truncated files, with what is lost as silence.")  # fmt: skip
@click.option("--native", is_flag=True, help="Keep the model's rate and channels.")
@click.option("--strategy", type=click.Choice(["clip", "peak", "rms", "loudness"]), default="clip",
              show_default=True, help="How to bring the audio into [-1, 1].")  # fmt: skip
@exact_option
@device_option
@backend_option
@force_option
@handle_errors
def decompress(
    paths: tuple[str, ...],
    output_dir: Path | None,
    model: str | None,
    checkpoint: Path | None,
    recover: bool,
    native: bool,
    strategy: str,
    exact: bool,
    device: str,
    backend: str,
    force: bool,
) -> None:
    """Decompress .atok (or .ecdc) files to audio (wav, flac, ogg, mp3, opus by the suffix).

    Files longer than 20 s are decoded as streams, packet by packet, in bounded memory;
    --exact (and --recover) decode in one pass. A damaged or truncated file is an error, and
    nothing is written, unless --recover.
    """
    import_torch(backend, model)

    from ..audio.write import write_audio
    from ..compression.decode import decode_stream
    from ..compression.files import decode_tokens_file, decompress_file

    inputs, output = _split_output(paths, AUDIO_SUFFIXES, output_dir)
    codec = load(model, checkpoint, device, backend) if model else None

    def job(source: Path | str, target: Path | str) -> str:
        if source == "-":  # as a file: bounded memory, and long input streams
            with stdin_file(target) as path:
                return job(path, target).replace(str(path), STDIN_NAME)
        if target != "-" and _magic(source) != b"ECDC":
            # Long files decode as a stream there; others as below.
            result = decompress_file(source, target, codec, recover=recover, native=native,
                                     overwrite=force, strategy=strategy, device=device,
                                     exact=exact, backend=backend)  # fmt: skip
            if result is None:
                return written_summary(target)
            audio, rate = result.audio, result.sample_rate
            lines = (
                [written_summary(target)]  # streamed: the audio is in the file only
                if audio is None
                else [f"{target}: {audio.shape[-1] / rate:.2f} s, {rate} Hz, {audio.shape[0]} ch"]
            )
            return "\n".join(
                lines + [f"audiotok: warning: {source}: {n}" for n in result.problems()]
            )
        if _magic(source) == b"ECDC":
            data = Path(source).read_bytes()
            tokens, ecdc_codec = read_ecdc_file(data, codec, device, backend, source)
            if target != "-":  # long ones as a stream
                decode_tokens_file(tokens, target, ecdc_codec, overwrite=force,
                                   strategy=strategy, exact=exact)  # fmt: skip
                return written_summary(target)
            audio, rate, notes = ecdc_codec.decode(tokens)[0], ecdc_codec.sample_rate, []
        else:
            result = decode_stream(source, codec, recover=recover, native=native,
                                   device=device, backend=backend)  # fmt: skip
            audio, rate, notes = result.audio, result.sample_rate, result.problems()
        if target == "-":
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                path = write_audio(Path(tmp) / "out.wav", audio, rate, strategy=strategy)
                sys.stdout.buffer.write(path.read_bytes())
        else:
            write_audio(target, audio, rate, strategy=strategy, overwrite=force)
        lines = [f"{target}: {audio.shape[-1] / rate:.2f} s, {rate} Hz, {audio.shape[0]} ch"]
        return "\n".join(lines + [f"audiotok: warning: {source}: {n}" for n in notes])

    if _single(inputs, output, output_dir):
        target = output or ("-" if inputs[0] == "-" else Path(inputs[0]).with_suffix(".wav"))
        click.echo(job(inputs[0], target), err=True)
        return
    _run_batch(list(_targets(expand_inputs(inputs, COMPRESSED_SUFFIXES), output_dir, ".wav")), job)


def _magic(path: Path | str) -> bytes:
    """The first 4 bytes of a file (b"" if it is missing or unreadable: reported later)."""
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError:
        return b""


@click.command()
@click.argument("file", type=click.Path(path_type=Path))  # missing: one line, as elsewhere
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def info(file: Path, as_json: bool) -> None:
    """Describe a compressed file and check its integrity."""
    import json

    from ..compression.container.inspect import describe
    from ..zoo.hub import packaged_priors

    report = describe(file, priors_for=packaged_priors)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        sys.exit(1 if report.get("problems") else 0)
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = "; ".join(map(str, value)) or "none"
        click.echo(f"{key.replace('_', ' ')}: {value}")
    if report.get("problems"):
        sys.exit(1)
