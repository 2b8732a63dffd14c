"""``audiotok encode``, ``decode`` and ``models``: tokens files and the model zoo."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import AudiotokError
from .common import (
    DEFAULT_MODEL,
    checkpoint_option,
    device_option,
    fail,
    force_option,
    handle_errors,
    load,
    model_option,
)


@click.command()
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
    from ..codec.tokens import SUFFIXES
    from ..errors import TokensError
    from ..fileio import check_target

    output = output or input.with_suffix(".npz")
    if output.suffix not in SUFFIXES:
        raise click.UsageError(f"the tokens file must end in {' or '.join(SUFFIXES)}")
    if output.exists() and not force:
        fail(f"{output} exists; use --force to overwrite it")
    check_target(output, force, TokensError)
    wav, rate = read_audio(input)
    codec = load(model or DEFAULT_MODEL, checkpoint, device)
    tokens = codec.encode(wav, sample_rate=rate, bandwidth=bandwidth)
    tokens.save(output, overwrite=force)
    click.echo(
        f"{output}: {tokens.num_codebooks} codebooks x {tokens.num_frames} frames, "
        f"{tokens.bandwidth:g} kbps, {tokens.duration:.2f} s, model {tokens.model_id}",
        err=True,
    )


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
        fail(f"{output} exists; use --force to overwrite it")
    tokens = Tokens.load(tokens_file)
    if tokens.batch_size != 1:
        fail(f"{tokens_file} holds {tokens.batch_size} signals; decode it with the Python API")
    if model is None:
        from ..codec.registry import find_card

        if find_card(tokens.model_id) is None:
            fail(
                f"{tokens_file} was made by model {tokens.model_id!r}, which is not in the "
                "registry; name it (or its checkpoint) with -m NAME_OR_PATH"
            )
        model = tokens.model_id
    codec = load(model, checkpoint, device)
    wav = codec.decode(tokens)[0].cpu()
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
        fail(f"unknown model {name!r}; known: {', '.join(card_names())}")
    source, path = hub.fetch(card)
    click.echo(f"{card.name}: {path} ({source.describe()})")
