"""The ``audiotok`` command line.

Heavy modules (torch, the codec) are imported inside the commands, so that ``audiotok --help``
answers at once. Errors a user can cause are printed as one line, ``audiotok: error: ...``,
with exit status 1; usage errors exit with 2 (click's convention).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..errors import AudiotokError

DEFAULT_MODEL = "encodec_24khz"


def _fail(message: str) -> None:
    click.echo(f"audiotok: error: {message}", err=True)
    sys.exit(1)


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turns the errors a user can cause into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AudiotokError as exc:
            _fail(str(exc))
        except BrokenPipeError:  # the reader went away (`audiotok models | head`): not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except OSError as exc:  # permissions, full disk, a missing output folder
            _fail(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}")
        except KeyboardInterrupt:
            click.echo("audiotok: interrupted", err=True)
            sys.exit(130)

    return wrapper


model_option = click.option(
    "-m",
    "--model",
    metavar="NAME_OR_PATH",
    help="Registry name (see `audiotok models`) or checkpoint path.",
)
checkpoint_option = click.option(
    "--checkpoint",
    type=click.Path(dir_okay=True, path_type=Path),
    help="Weights for the architecture named by --model, instead of the cache.",
)
device_option = click.option(
    "--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda."
)
force_option = click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs.")


def _load(model: str, checkpoint: Path | None, device: str) -> Any:
    from ..codec.load import load_codec

    return load_codec(model, checkpoint=checkpoint, device=device)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="audiotok")
def cli() -> None:
    """Neural audio coding with EnCodec: audio to tokens and back."""


@cli.command()
@click.argument("input", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Tokens file (.npz or .safetensors); default: INPUT with suffix .npz.",
)
@model_option
@checkpoint_option
@click.option("-b", "--bandwidth", type=float, help="kbps; default: the model's default.")
@device_option
@force_option
@handle_errors
def encode(
    input: Path,
    output: Path | None,
    model: str | None,
    checkpoint: Path | None,
    bandwidth: float | None,
    device: str,
    force: bool,
) -> None:
    """Encode an audio file to a tokens file."""
    from ..audio import read_audio
    from ..codec.tokens import SUFFIXES, check_output_dir

    output = output or input.with_suffix(".npz")
    if output.suffix not in SUFFIXES:
        raise click.UsageError(f"the tokens file must end in {' or '.join(SUFFIXES)}")
    if output.exists() and not force:
        _fail(f"{output} exists; use --force to overwrite it")
    check_output_dir(output)
    wav, rate = read_audio(input)
    codec = _load(model or DEFAULT_MODEL, checkpoint, device)
    tokens = codec.encode(wav, sample_rate=rate, bandwidth=bandwidth)
    tokens.save(output, overwrite=force)
    click.echo(
        f"{output}: {tokens.num_codebooks} codebooks x {tokens.num_frames} frames, "
        f"{tokens.bandwidth:g} kbps, {tokens.duration:.2f} s, model {tokens.model_id}",
        err=True,
    )


@cli.command()
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
@force_option
@handle_errors
def decode(
    tokens_file: Path,
    output: Path | None,
    model: str | None,
    checkpoint: Path | None,
    strategy: str,
    device: str,
    force: bool,
) -> None:
    """Decode a tokens file to audio (with the model that made it, unless --model)."""
    from ..audio_output import write_audio
    from ..codec.tokens import Tokens

    output = output or tokens_file.with_suffix(".wav")
    if output.exists() and not force:
        _fail(f"{output} exists; use --force to overwrite it")
    tokens = Tokens.load(tokens_file)
    if tokens.batch_size != 1:
        _fail(f"{tokens_file} holds {tokens.batch_size} signals; decode it with the Python API")
    if model is None:
        from ..codec.registry import find_card

        if find_card(tokens.model_id) is None:
            _fail(
                f"{tokens_file} was made by model {tokens.model_id!r}, which is not in the "
                "registry; name it (or its checkpoint) with -m NAME_OR_PATH"
            )
        model = tokens.model_id
    codec = _load(model, checkpoint, device)
    wav = codec.decode(tokens)[0].cpu()
    write_audio(output, wav, codec.sample_rate, strategy=strategy, overwrite=force)
    click.echo(
        f"{output}: {tokens.duration:.2f} s, {codec.sample_rate} Hz, {codec.channels} ch",
        err=True,
    )


@cli.group(invoke_without_command=True)
@click.pass_context
@handle_errors
def models(ctx: click.Context) -> None:
    """List the known models and whether their weights are here."""
    if ctx.invoked_subcommand is not None:
        return
    from ..codec import hub
    from ..codec.registry import CARDS

    for card in CARDS:
        cfg = card.config
        try:
            found = hub.find_local(card)
            where = (
                str(found[1]) if found else f"not downloaded (audiotok models fetch {card.name})"
            )
        except AudiotokError as exc:  # one damaged file must not hide the other models
            where = f"unusable: {exc}"
        bandwidths = ", ".join(f"{b:g}" for b in cfg.target_bandwidths)
        click.echo(f"{card.name}  {card.description}")
        click.echo(
            f"    {cfg.sample_rate} Hz, {cfg.channels} ch, {cfg.frame_rate:g} frames/s, "
            f"{cfg.bins} codes, kbps: {bandwidths}; licence: {card.licence}"
        )
        click.echo(f"    weights: {where}")


@models.command("fetch")
@click.argument("name")
@handle_errors
def models_fetch(name: str) -> None:
    """Download a model's weights into the local cache and verify them."""
    from ..codec import hub
    from ..codec.registry import card_names, find_card

    card = find_card(name)
    if card is None:
        _fail(f"unknown model {name!r}; known: {', '.join(card_names())}")
    source, path = hub.fetch(card)
    click.echo(f"{card.name}: {path} ({source.describe()})")


def main() -> None:
    """Entry point of the ``audiotok`` script."""
    cli(prog_name="audiotok")
