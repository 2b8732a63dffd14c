"""What the ``audiotok`` commands share: error handling, options, model loading.

Errors a user can cause are printed as one line, ``audiotok: error: ...``, with exit status 1;
usage errors exit with 2 (click's convention).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..codec.registry import DEFAULT_CODEC
from ..errors import AudiotokError

DEFAULT_MODEL = DEFAULT_CODEC
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")


def fail(message: str) -> None:
    """Prints one error line and exits with status 1."""
    click.echo(f"audiotok: error: {message}", err=True)
    sys.exit(1)


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turns the errors a user can cause into one line on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AudiotokError as exc:
            fail(str(exc))
        except BrokenPipeError:  # the reader went away (`audiotok models | head`): not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except OSError as exc:  # permissions, full disk, a missing output folder
            fail(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}")
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


def load(model: str, checkpoint: Path | None, device: str) -> Any:
    """The codec named by ``-m`` (and ``--checkpoint``), on ``device``."""
    from ..codec.load import load_codec

    return load_codec(model, checkpoint=checkpoint, device=device)


def expand_inputs(inputs: tuple[str, ...], suffixes: tuple[str, ...]) -> list[tuple[Path, Path]]:
    """``(file, root)`` pairs: files as given, directories searched for ``suffixes``."""
    out = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
            out += [(p, path) for p in found if p.is_file()]
        else:
            out.append((path, path.parent))
    return out
