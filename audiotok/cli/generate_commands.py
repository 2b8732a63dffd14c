"""``audiotok generate``: text (and optionally a melody or an audio prompt) to music or sound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import AudiotokError
from .common import FiniteFloat, device_option, force_option, handle_errors, import_torch

DEFAULT_GENERATOR = "musicgen-small"


@click.command()
@click.argument("prompt", required=False, default=None)
@click.option(
    "-m",
    "--model",
    default=DEFAULT_GENERATOR,
    show_default=True,
    help="Registry name (musicgen-small, musicgen-melody, audiogen-medium, ...), "
    "a 'facebook/...' id, or a local audiocraft export or transformers directory.",
)
@click.option(
    # max: generate.inputs.MAX_GENERATION_SECONDS (not imported: --help imports no torch).
    "-d", "--duration", type=FiniteFloat(min=0, max=3600, min_open=True), default=10.0,
    show_default=True, help="Seconds to generate (longer than the model's window: extended "
    "by windowed continuation).",
)  # fmt: skip
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("generated.wav"),
    show_default=True,
    help="Audio file (.wav, .flac, .ogg, .mp3).",
)
@click.option(
    "--tokens",
    "tokens_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the generated tokens: .atok (compressed) or .npz / .safetensors.",
)
@click.option(
    "--extend-stride",
    type=FiniteFloat(min=0, min_open=True),
    help="Seconds between windows when -d exceeds the model's window [default: 18 for "
    "MusicGen, 2 for AudioGen, as audiocraft].",
)
@click.option("--seed", type=click.IntRange(-(2**63), 2**64 - 1),
              help="Random seed: the same seed gives the same output.")  # fmt: skip
@click.option("--cfg", "cfg_coef", type=FiniteFloat(0, 1e6), default=3.0, show_default=True,
              help="Classifier-free guidance coefficient.")  # fmt: skip
@click.option("--top-k", type=click.IntRange(min=0), default=250, show_default=True)
@click.option("--top-p", type=FiniteFloat(0, 1), default=0.0, show_default=True,
              help="Nucleus sampling (0: off; overrides --top-k).")  # fmt: skip
@click.option("--temperature", type=FiniteFloat(min=0), default=1.0, show_default=True)
@click.option("--greedy", is_flag=True, help="Take the most likely token (no sampling).")
@click.option(
    "--continue",
    "continue_from",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Audio to continue: the output starts with it.",
)
@click.option(
    "--melody",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Audio whose melody (chroma) conditions a musicgen-melody model.",
)
@click.option(
    "--text-encoder",
    help="T5 encoder for audiocraft exports: a local directory or a Hugging Face name.",
)
@click.option(
    "--strategy",
    type=click.Choice(["clip", "peak", "rms", "loudness"]),
    default="loudness",
    show_default=True,
    help="How to bring the audio into [-1, 1] (audiocraft's audio_write).",
)
@device_option
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16", "int8", "int4"]),
    default="fp32",
    show_default=True,
    help="The LM's precision: bf16 is faster where the processor supports it (3.2x on the "
    "CPU of benchmarks/RESULTS.md), fp16 needs CUDA, int8 (a quarter of the weights' memory) "
    "and int4 (an eighth) a CPU; all change some tokens.",
)
@force_option
@handle_errors
def generate(
    prompt: str | None,
    model: str,
    duration: float,
    output: Path,
    tokens_out: Path | None,
    extend_stride: float | None,
    seed: int | None,
    cfg_coef: float,
    top_k: int,
    top_p: float,
    temperature: float,
    greedy: bool,
    continue_from: Path | None,
    melody: Path | None,
    text_encoder: str | None,
    strategy: str,
    device: str,
    precision: str,
    force: bool,
) -> None:
    """Generate music or sound from a text PROMPT (none: unconditional).

    Needs the optional dependencies: pip install 'audiotok[generate]'.
    """
    from ..audio.write import audio_format
    from ..runtime.files import check_target

    if continue_from is not None and melody is not None:
        raise click.UsageError("--continue and --melody can't be combined")
    for target in (output, tokens_out):
        if target is not None:
            check_target(target, force, AudiotokError)
    audio_format(output)  # an unknown suffix refused now, not after minutes of generation
    if tokens_out is not None and tokens_out.suffix.lower() not in (
        ".atok",
        ".npz",
        ".safetensors",
    ):
        raise click.UsageError("--tokens must end in .atok, .npz or .safetensors")
    generator = _load(model, device, text_encoder)
    generator.set_precision(precision)
    stereo = generator.audio_channels > 1
    if tokens_out is not None and tokens_out.suffix.lower() == ".atok" and stereo:
        # Stereo models code each channel with the mono codec: two streams, one per channel.
        raise click.UsageError(
            "an .atok file holds one mono codec stream; write a stereo model's tokens "
            "(two streams) to .npz or .safetensors"
        )
    generator.set_generation_params(
        use_sampling=not greedy,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        duration=duration,
        cfg_coef=cfg_coef,
        seed=seed,
        **({} if extend_stride is None else {"extend_stride": extend_stride}),
    )
    bar = _show_progress(generator)
    try:
        wav, codes = _run(generator, prompt, continue_from, melody)
    finally:
        bar.close()
    _write(generator, wav, codes, output, tokens_out, strategy, force)


def _load(model: str, device: str, text_encoder: str | None) -> Any:
    import_torch()
    from ..generate import AudioGen, MusicGen, load_lm

    loaded = load_lm(model, device=device, text_encoder=text_encoder)
    # AudioGen is the 16 kHz model (its defaults differ), whatever its files are called.
    cls = AudioGen if loaded.config.sample_rate == 16_000 else MusicGen
    return cls(model, loaded)


def _show_progress(generator: Any) -> Any:
    import sys

    from tqdm import tqdm

    bar = tqdm(unit="step", file=sys.stderr, leave=False, disable=not sys.stderr.isatty())

    def update(generated: int, total: int) -> None:
        bar.total = total
        bar.n = generated
        bar.refresh()

    generator.set_custom_progress_callback(update)
    return bar


def _run(generator: Any, prompt: str | None, continue_from: Path | None, melody: Path | None):
    from ..audio.read import read_audio

    descriptions = [prompt] if prompt else [None]
    if continue_from is not None:
        audio, rate = read_audio(continue_from)
        return generator.generate_continuation(audio, rate, descriptions, return_tokens=True)
    if melody is not None:
        audio, rate = read_audio(melody)
        return generator.generate_with_chroma(descriptions, audio, rate, return_tokens=True)
    if prompt:
        return generator.generate(descriptions, return_tokens=True)
    return generator.generate_unconditional(1, return_tokens=True)


def _write(generator: Any, wav: Any, codes: Any, output: Path, tokens_out: Path | None,
           strategy: str, force: bool) -> None:  # fmt: skip
    from ..audio.write import write_audio

    # audiocraft's example writes with strategy="loudness", loudness_compressor=True: past full
    # scale after the -14 LUFS gain, a tanh soft clip instead of a hard one.
    write_audio(output, wav[0].cpu(), generator.sample_rate, strategy=strategy,
                loudness_compressor=strategy == "loudness", overwrite=force)  # fmt: skip
    click.echo(
        f"{output}: {wav.shape[-1] / generator.sample_rate:.2f} s, {wav.shape[1]} ch, "
        f"{generator.sample_rate} Hz, {codes.shape[-1]} frames of {codes.shape[1]} codebooks",
        err=True,
    )
    if tokens_out is None:
        return
    tokens = generator.to_tokens(codes, wav.shape[-1])
    if tokens_out.suffix.lower() == ".atok":
        from ..compression.container.atok import write_tokens
        from ..runtime.files import atomic_output

        with atomic_output(tokens_out, force) as file:
            write_tokens(file, tokens, generator.codec)
    else:
        tokens.save(tokens_out, overwrite=force)
    click.echo(f"{tokens_out}: tokens of {tokens.model_id}", err=True)
