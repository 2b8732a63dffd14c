"""What the ``audiotok`` commands share: error handling, options, model loading.

Errors a user can cause are printed as one line, ``audiotok: error: ...``, with exit status 1;
usage errors exit with 2 (click's convention). Ctrl-C, SIGTERM and SIGHUP stop a command the
same way: every output being written is removed, and the exit status is 128 + the signal's
number (130, 143, 129), as a shell reports a process killed by it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ..errors import AudiotokError
from ..zoo.codec_cards import DEFAULT_CODEC

DEFAULT_MODEL = DEFAULT_CODEC
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")


class FiniteFloat(click.FloatRange):
    """A :class:`click.FloatRange` that also refuses ``nan`` and ``inf``, which pass its
    bounds (``nan`` compares false with any) and would fail or run forever later."""

    name = "finite float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def fail(message: str) -> None:
    """Prints one error line and exits with status 1."""
    click.echo(f"audiotok: error: {message}", err=True)
    sys.exit(1)


def message(exc: AudiotokError) -> str:
    """An error's message in the command line's words (``--force``, not ``overwrite=True``)."""
    return exc.cli_message or str(exc)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt.

    Being a KeyboardInterrupt, it unwinds through the same cleanup: ``atomic_path`` removes
    its temporary file, the dataset writer keeps what is complete.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# Windows has no SIGHUP.
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Makes SIGTERM and SIGHUP raise :class:`Terminated` while the block runs."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; signals are delivered to it anyway
        return

    def stop(signum: int, _frame: Any) -> None:
        for other in STOP_SIGNALS:  # a second signal must not cut the cleanup short
            signal.signal(other, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings as ``audiotok: warning: ...``, one line each, not Python's two-line form
    (file, line number and source line mean nothing to someone at the command line)."""
    import warnings

    def show(message: Warning | str, *args: Any, **kwargs: Any) -> None:
        text = " ".join(str(message).split())
        click.echo(f"audiotok: warning: {text}", err=True)

    shown = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def handle_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turns the errors a user can cause into one line on stderr and exit status 1.

    Ctrl-C, SIGTERM and SIGHUP unwind the command (removing partial outputs), then exit with
    128 + the signal's number.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _signals_interrupt(), _one_line_warnings():
                return command(*args, **kwargs)
        except AudiotokError as exc:
            fail(message(exc))
        except ModuleNotFoundError as exc:  # an optional part of audiotok, not installed
            how = _INSTALL.get(exc.name or "", "")
            fail(f"{exc.name or exc} is not installed, and this needs it{how}")
        except BrokenPipeError:  # the reader went away (`audiotok models | head`): not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except MemoryError:  # a signal or file too long for one pass: never a traceback
            fail("out of memory; long files are processed as streams when given as files")
        except FileNotFoundError as exc:  # said as AudioError says it for a missing input
            fail(f"{exc.filename}: no such file" if exc.filename else str(exc.strerror or exc))
        except OSError as exc:  # permissions, full disk, a missing output folder
            fail(f"{exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}")
        except Terminated as exc:
            click.echo(f"audiotok: stopped by {signal.Signals(exc.signum).name}", err=True)
            sys.exit(128 + exc.signum)
        except KeyboardInterrupt:
            click.echo("audiotok: interrupted", err=True)
            sys.exit(130)

    return wrapper


STDIN_NAME = "<stdin>"
STDIN_CHUNK = 1 << 20


@contextlib.contextmanager
def stdin_file(output: Path | str) -> Iterator[Path]:
    """Standard input copied, 1 MiB at a time, to a temporary file (in ``output``'s folder,
    else the temporary directory), removed afterwards.

    Read whole into memory, ``< /dev/zero`` ended in a MemoryError; as a file, long input
    streams as files do. Errors that name the file name ``<stdin>`` instead.
    """
    folder = Path(output).parent if output != "-" else None
    if folder is not None and not folder.is_dir():
        folder = None  # the output's own error comes later, where it is written
    fd, name = tempfile.mkstemp(prefix=".audiotok-stdin.", suffix=".tmp", dir=folder)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            shutil.copyfileobj(sys.stdin.buffer, file, STDIN_CHUNK)
        yield path
    except AudiotokError as exc:
        _rename(exc, str(path), STDIN_NAME)
        raise
    finally:
        path.unlink(missing_ok=True)


def _rename(exc: AudiotokError, old: str, new: str) -> None:
    """Replaces ``old`` by ``new`` in an error's messages (Python's and the CLI's)."""
    from ..errors import FormatError

    if isinstance(exc, FormatError):
        exc.message = exc.message.replace(old, new)
        exc._update()
    else:
        exc.args = tuple(a.replace(old, new) if isinstance(a, str) else a for a in exc.args)
    if exc.cli_message:
        exc.cli_message = exc.cli_message.replace(old, new)


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
backend_option = click.option(
    "--backend",
    type=click.Choice(["torch", "onnx"]),
    default="torch",
    show_default=True,
    help="Run the codec with torch, or as ONNX graphs with onnxruntime (CPU; exported once "
    "into the cache; pip install 'audiotok[onnx]').",
)
force_option = click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs.")


_INSTALL = {
    "torch": " (pip install torch; the onnx backend runs exported codecs without it: --backend "
    "onnx, or -m EXPORT_DIR)",
    "onnxruntime": " (pip install 'audiotok[onnx]')",
}


def import_torch(backend: str = "torch", model: str | os.PathLike | None = None) -> None:
    """Imports torch, for the commands that use it, with the cyclic garbage collector paused.

    Not for the onnx backend (``backend``, or ``model`` an export folder), which runs without
    torch (and imports it only if a model must first be exported).

    The import makes some 160 000 long-lived objects the collector tracks, and no garbage,
    yet the collections it triggers walk them again and again (about 0.1 s of a 0.8 s
    import). Once imported they go to the permanent generation (``gc.freeze``), which later
    collections skip, the interpreter's at exit included (about 0.35 s otherwise): together
    a third of a short command's wall time (``benchmarks/startup_bench.py``). Objects made
    later are collected as usual.
    """
    if "torch" in sys.modules:  # in-process callers (tests, scripts) keep their collector
        return
    if backend == "onnx" or (model is not None and _is_onnx_export(model)):
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError:
        if model is not None and Path(model).is_dir():
            return  # a folder named as the model: the loader says what it is, torch or not
        raise
    finally:
        if enabled:
            gc.enable()
    gc.freeze()


def _is_onnx_export(model: str | os.PathLike) -> bool:
    from ..codec.onnx_runtime import is_onnx_export

    return is_onnx_export(model)


def load(model: str, checkpoint: Path | None, device: str, backend: str = "torch") -> Any:
    """The codec named by ``-m`` (and ``--checkpoint``), on ``device``, run by ``backend``."""
    from ..codec.load import load_codec

    return load_codec(model, checkpoint=checkpoint, device=device, backend=backend)


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
