"""``audiotok encode``, ``decode`` and ``models``: tokens files, token datasets, the model zoo."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import click

from ..errors import AudiotokError
from .common import (
    AUDIO_SUFFIXES,
    DEFAULT_MODEL,
    FiniteFloat,
    backend_option,
    checkpoint_option,
    device_option,
    expand_inputs,
    fail,
    force_option,
    handle_errors,
    import_torch,
    load,
    model_option,
)

# audiotok.dataset's defaults, restated so that --help imports no torch (a test checks them).
SHARD_MB = 256.0
BATCH_SECONDS = 60.0
# audiotok.codec.precision.PRECISIONS, restated for the same reason.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


@dataclass(frozen=True)
class _ModelSettings:
    """What ``encode`` loads and how it runs it."""

    model: str | None
    checkpoint: Path | None
    bandwidth: float | None
    device: str
    precision: str
    compile: bool
    backend: str = "torch"

    def load(self) -> Any:
        from ..codec.onnx_runtime import OnnxCodec

        tuned = self.precision != "fp32" or self.compile
        no_tuning = "the onnx backend runs fp32 graphs: no --precision, --compile"
        if self.backend == "onnx" and tuned:  # before loading (which may export): fail fast
            raise click.UsageError(no_tuning)
        codec = load(self.model or DEFAULT_MODEL, self.checkpoint, self.device, self.backend)
        if isinstance(codec, OnnxCodec):  # --backend onnx, or -m an export folder
            if tuned:
                raise click.UsageError(no_tuning)
            return codec
        codec.set_precision(self.precision)
        return codec.compile() if self.compile else codec


@click.command()
@click.argument("inputs", nargs=-1, metavar="INPUT...", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="For one INPUT: the tokens file (.npz or .safetensors; default: INPUT with suffix "
    ".npz). For a directory, several files or --manifest: the dataset directory.",
)
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.tsv",
    help="TSV whose header has a 'path' column (relative to its folder): more files to encode.",
)
@click.option(
    "--shard-size",
    type=FiniteFloat(min=0, min_open=True),
    metavar="MB",
    help=f"Dataset shards are closed at this many MB of tokens. [default: {SHARD_MB:g}]",
)
@click.option(
    "--batch-seconds",
    type=FiniteFloat(min=0),
    metavar="S",
    help="Seconds of audio read ahead of the model, in background threads. "
    f"[default: {BATCH_SECONDS:g}]",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    metavar="N",
    help="Dataset files per forward pass, each coded as if alone; pays off on a GPU. [default: 1]",
)
@model_option
@checkpoint_option
@click.option("-b", "--bandwidth", type=float, help="kbps; default: the model's default.")
@device_option
@backend_option
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="fp32",
    show_default=True,
    help="fp32 gives the official model's codes; the others are faster on GPUs and change "
    "some codes (benchmarks/RESULTS.md).",
)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model first.")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where a dataset's files are encoded: here, or by actors on Ray (pip install "
    "'audiotok[ray]'; docs/SCALING.md). The dataset is the same.",
)
@click.option(
    "--address",
    metavar="ADDR",
    help="With --engine ray: the cluster (HOST:6379, ray://HOST:10001 or auto); default: a "
    "local Ray started for the run.",
)
@click.option(
    "--num-workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="With --engine ray: encoding actors (each holds the model; one GPU each with "
    "--device cuda).",
)
@force_option
@handle_errors
def encode(
    inputs: tuple[Path, ...],
    output: Path | None,
    manifest: Path | None,
    shard_size: float | None,
    batch_seconds: float | None,
    batch_size: int | None,
    model: str | None,
    checkpoint: Path | None,
    bandwidth: float | None,
    device: str,
    backend: str,
    precision: str,
    compile_: bool,
    engine: str,
    address: str | None,
    num_workers: int,
    force: bool,
) -> None:
    """Encode audio to tokens: one file to a tokens file, or many to a dataset.

    A directory, several files or --manifest make (or resume) a dataset in -o OUT_DIR:
    safetensors shards of codes and an index.jsonl of file -> shard and offset. Files already
    in the index are skipped, so rerunning an interrupted command finishes it.
    """
    if not inputs and manifest is None:
        raise click.UsageError(
            "Missing argument 'INPUT'. Name audio files, directories or a manifest."
        )
    settings = _ModelSettings(model, checkpoint, bandwidth, device, precision, compile_, backend)
    if _makes_dataset(inputs, output, manifest):
        if force:
            raise click.UsageError(
                "--force does not apply to a dataset, which resumes; remove OUT_DIR to start over"
            )
        ray = _RayOptions(address, num_workers) if engine == "ray" else None
        _encode_dataset(
            inputs, output, manifest, settings, shard_size, batch_seconds, batch_size, ray
        )
        return
    if shard_size is not None or batch_seconds is not None or batch_size is not None:
        raise click.UsageError(
            "--shard-size, --batch-seconds and --batch-size apply to datasets (-o OUT_DIR)"
        )
    if engine != "local" or address is not None:
        raise click.UsageError("--engine and --address apply to datasets (-o OUT_DIR)")
    _encode_file(inputs[0], output, settings, force)


class _RayOptions(NamedTuple):
    address: str | None
    num_workers: int

    def engine(self, device: str) -> Any:
        try:
            import ray.data  # noqa: F401  (checked here: one line, not a traceback mid-run)
        except ImportError:
            fail("--engine ray needs Ray: pip install 'audiotok[ray]'")
        from ..dataset.ray_engine import RayEngine

        return RayEngine(self.address, self.num_workers, device)


def _makes_dataset(inputs: tuple[Path, ...], output: Path | None, manifest: Path | None) -> bool:
    """Whether ``encode`` writes a dataset: anything but one file to one tokens file."""
    if manifest is not None or len(inputs) != 1 or inputs[0].is_dir():
        return True
    return output is not None and (output.is_dir() or not output.suffix)


def _encode_file(input: Path, output: Path | None, settings: _ModelSettings, force: bool) -> None:
    import_torch(settings.backend, settings.model)
    from ..audio.read import read_audio
    from ..codec.tokens import SUFFIXES
    from ..errors import TokensError
    from ..runtime.files import check_target

    output = output or input.with_suffix(".npz")
    if output.suffix not in SUFFIXES:
        raise click.UsageError(f"the tokens file must end in {' or '.join(SUFFIXES)}")
    check_target(output, force, TokensError)  # before the model loads: fail fast
    wav, rate = read_audio(input)
    codec = settings.load()
    tokens = codec.encode(wav, sample_rate=rate, bandwidth=settings.bandwidth)
    tokens.save(output, overwrite=force)
    click.echo(
        f"{output}: {tokens.num_codebooks} codebooks x {tokens.num_frames} frames, "
        f"{tokens.bandwidth:g} kbps, {tokens.duration:.2f} s, model {tokens.model_id}",
        err=True,
    )


def _encode_dataset(
    inputs: tuple[Path, ...],
    out_dir: Path | None,
    manifest: Path | None,
    settings: _ModelSettings,
    shard_size: float | None,
    batch_seconds: float | None,
    batch_size: int | None,
    ray: _RayOptions | None = None,
) -> None:
    """Encodes the files (and the manifest's) into ``out_dir``; exit status 1 if any failed."""
    import_torch(settings.backend, settings.model)
    from ..codec.tokens import SUFFIXES
    from ..dataset.tokenize import tokenize_dataset

    if out_dir is None:
        raise click.UsageError("a dataset needs an output directory: -o OUT_DIR")
    if out_dir.suffix in SUFFIXES:
        raise click.UsageError(f"{out_dir}: a dataset is a directory, not a tokens file")
    files = [path for path, _ in expand_inputs(tuple(map(str, inputs)), AUDIO_SUFFIXES)]
    if not files and manifest is None:
        fail(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    # With Ray, the actors hold the model on --device; here it only describes the dataset.
    report = tokenize_dataset(
        (replace(settings, device="cpu") if ray else settings).load(),
        files,
        out_dir,
        bandwidth=settings.bandwidth,
        shard_bytes=max(1, round((SHARD_MB if shard_size is None else shard_size) * 1e6)),
        manifest=manifest,
        batch_seconds=BATCH_SECONDS if batch_seconds is None else batch_seconds,
        batch_size=batch_size or 1,
        engine=ray.engine(settings.device) if ray else None,
    )
    done = f"; {report.skipped} already there" if report.skipped else ""
    n, shards = report.encoded, len(report.shards)
    click.echo(
        f"{out_dir}: {n} file{'s' * (n != 1)} encoded ({report.audio_seconds / 3600:.3f} h of "
        f"audio) into {shards} shard{'s' * (shards != 1)} in {report.elapsed:.1f} s{done}",
        err=True,
    )
    if report.failures:
        attempted = report.encoded + len(report.failures)
        fail(f"{len(report.failures)} of {attempted} files failed")


@click.command()
@click.argument("tokens_file", metavar="TOKENS", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Audio file (.wav, .flac, .ogg, .mp3); default: TOKENS with suffix .wav.",
)
@model_option
@checkpoint_option
@click.option(
    "--strategy",
    type=click.Choice(["clip", "peak", "rms", "loudness"]),
    default="clip",
    show_default=True,
    help="How to bring the decoded audio into [-1, 1].",
)
@device_option
@backend_option
@force_option
@handle_errors
def decode(
    tokens_file: Path,
    output: Path | None,
    model: str | None,
    checkpoint: Path | None,
    strategy: str,
    device: str,
    backend: str,
    force: bool,
) -> None:
    """Decode a tokens file to audio (with the model that made it, unless --model)."""
    import_torch(backend, model)
    from ..audio.write import write_audio
    from ..codec.tokens import Tokens
    from ..errors import AudioError
    from ..runtime.files import check_target

    output = output or tokens_file.with_suffix(".wav")
    check_target(output, force, AudioError)  # before the model loads: fail fast
    tokens = Tokens.load(tokens_file, framework="np")  # the codec takes either kind
    if tokens.batch_size != 1:
        fail(f"{tokens_file} holds {tokens.batch_size} signals; decode it with the Python API")
    if model is None:
        from ..zoo.codec_cards import find_card

        if find_card(tokens.model_id) is None:
            fail(
                f"{tokens_file} was made by model {tokens.model_id!r}, which is not in the "
                "registry; name it (or its checkpoint) with -m NAME_OR_PATH"
            )
        model = tokens.model_id
    codec = load(model, checkpoint, device, backend)
    wav = codec.decode(tokens)[0]
    write_audio(output, wav, codec.sample_rate, strategy=strategy, overwrite=force)
    click.echo(
        f"{output}: {tokens.duration:.2f} s, {codec.sample_rate} Hz, {codec.channels} ch",
        err=True,
    )


@click.group(invoke_without_command=True)
@click.pass_context
@handle_errors
def models(ctx: click.Context) -> None:
    """List the known models and whether their weights are here."""
    if ctx.invoked_subcommand is not None:
        return
    from ..zoo.codec_cards import CARDS
    from ..zoo.lm_cards import GENERATION_CARDS

    for card in CARDS:
        cfg = card.config
        where = _where(card, _find(card))
        bandwidths = ", ".join(f"{b:g}" for b in cfg.target_bandwidths)
        click.echo(f"{card.name}  {card.description}")
        click.echo(
            f"    {cfg.sample_rate} Hz, {cfg.channels} ch, {cfg.frame_rate:g} frames/s, "
            f"{cfg.bins} codes, kbps: {bandwidths}; licence: {card.licence}"
        )
        click.echo(f"    weights: {where}")
    for gen in GENERATION_CARDS:
        click.echo(f"{gen.name}  {gen.description}")
        click.echo(
            f"    {gen.task}, codec {gen.codec}, text encoder {gen.text_encoder}; "
            f"licence: {gen.licence}"
        )
        found = _find(gen)
        click.echo(f"    weights: {_where(gen, found)}")
        encoder = _text_encoder_where(gen, found)
        if encoder:
            click.echo(f"    text encoder {gen.text_encoder}: {encoder}")


def _text_encoder_where(card: Any, found: Any) -> str | None:
    """Where the T5 that a generator's cached audiocraft export names is, or how to get it;
    None when the export is not cached (``found``, from :func:`_find`; fetching it brings
    both) or bundles its T5."""
    from ..zoo.text_encoders import t5_hub_files

    if not isinstance(found, tuple) or found[0].format != "audiocraft":
        return None
    try:
        return str(t5_hub_files(card.text_encoder, offline=True)["config.json"].parent)
    except AudiotokError:
        return f"not downloaded (audiotok models fetch {card.name})"


def _find(card: Any) -> tuple[Any, Any] | str | None:
    """``hub.find_local(card)``: the source and path found, or None; the error's text when a
    cached file is damaged (one damaged file must not hide the other models)."""
    from ..zoo import hub

    try:
        return hub.find_local(card)
    except AudiotokError as exc:
        return str(exc)


def _where(card: Any, found: Any) -> str:
    """Where a card's weights are (``found``, from :func:`_find`), or how to get them."""
    if isinstance(found, str):
        return f"unusable: {found}"
    return str(found[1]) if found else f"not downloaded (audiotok models fetch {card.name})"


@models.command("fetch")
@click.argument("name")
@handle_errors
def models_fetch(name: str) -> None:
    """Download a model's weights into the local cache and verify them (for a generator in
    audiocraft's format, its T5 text encoder too: what it needs to run offline)."""
    from ..zoo import hub
    from ..zoo.codec_cards import card_names, find_card
    from ..zoo.lm_cards import find_generation_card, generation_card_names
    from ..zoo.text_encoders import t5_hub_files

    card = find_card(name) or find_generation_card(name)
    if card is None:
        known = card_names() + generation_card_names()
        fail(f"unknown model {name!r}; known: {', '.join(known)}")
    source, path = hub.fetch(card)
    click.echo(f"{card.name}: {path} ({source.describe()})")
    # transformers' directories bundle T5; audiocraft's exports name it, fetched at load.
    if getattr(card, "text_encoder", None) and source.format == "audiocraft":
        files = t5_hub_files(card.text_encoder, offline=hub.is_offline())
        click.echo(f"{card.name}'s text encoder {card.text_encoder}: {files['config.json'].parent}")
