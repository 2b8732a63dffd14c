"""``audiotok export-onnx``: a codec as ONNX graphs and a JSON sidecar."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from .common import fail, force_option, handle_errors, import_torch


@click.command("export-onnx")
@click.argument("model", metavar="MODEL")
@click.option(
    "-o",
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for the graphs and model.json.",
)
@click.option(
    "--bandwidth",
    "bandwidths",
    type=float,
    multiple=True,
    metavar="KBPS",
    help="Bandwidths the sidecar lists (repeatable); all the model's by default.",
)
@click.option("--opset", default=17, show_default=True, help="ONNX opset.")
@force_option
@handle_errors
def export_onnx_command(
    model: str, out_dir: Path, bandwidths: tuple[float, ...], opset: int, force: bool
) -> None:
    """Export MODEL (registry name or checkpoint path) as ONNX encoder and decoder graphs.

    Writes encoder.onnx and decoder.onnx (encoder_segment.onnx and decoder_segment.onnx for
    segmented models) and model.json into the output folder; prints the sidecar's path.
    """
    missing = [m for m in ("onnx",) if importlib.util.find_spec(m) is None]
    if missing:
        fail(f"ONNX export needs the {missing[0]} package: pip install 'audiotok[onnx]'")
    import_torch()
    from ..codec.encodec import EncodecCodec
    from ..codec.load import load_codec
    from ..codec.onnx_export import export_onnx

    codec = load_codec(model, device="cpu")
    if not isinstance(codec, EncodecCodec):
        fail(f"{model}: only EnCodec models export to ONNX")
    path = export_onnx(codec, out_dir, list(bandwidths) or None, opset=opset, overwrite=force)
    click.echo(str(path))
