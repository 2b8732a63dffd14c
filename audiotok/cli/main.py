"""The ``audiotok`` command line.

Heavy modules (torch, the codec) are imported inside the commands, so that ``audiotok --help``
answers at once.
"""

from __future__ import annotations

import click

from .. import __version__
from .codec_commands import decode, encode, models
from .compress_commands import compress, decompress, info
from .finetune_commands import finetune
from .generate_commands import generate
from .onnx_commands import export_onnx_command
from .serve_commands import serve
from .train_commands import export_model, make_subset, train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="audiotok")
def cli() -> None:
    """Neural audio coding with EnCodec: compress audio, or turn it into tokens and back."""


COMMANDS = (compress, decompress, info, encode, decode, models, generate, serve)
for command in (*COMMANDS, train, make_subset, export_model, export_onnx_command, finetune):
    cli.add_command(command)


def main() -> None:
    """Entry point of the ``audiotok`` script."""
    cli(prog_name="audiotok")
