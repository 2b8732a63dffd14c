"""``load_codec``: from a name or a path to a ready :class:`~audiotok.codec.base.Codec`.

The torch backend is :mod:`~audiotok.codec.torch_load`'s; the onnx backend runs the graphs of
an export, which :func:`onnx_export_folder` finds in the cache (keyed by the weights file's
SHA-256, so finding it needs neither torch nor the model) or makes there with torch the first
time. Nothing here imports torch unless the torch backend (or an export) is needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointError, DeviceError, ModelNotAvailableError
from ..runtime.files import atomic_path, sha256_file
from ..zoo import hub
from ..zoo.codec_cards import DEFAULT_CODEC, find_card
from .base import Codec

if TYPE_CHECKING:
    from .encodec import EncodecCodec

BACKENDS = ("torch", "onnx")


def load_codec(
    source: str | os.PathLike = DEFAULT_CODEC,
    *,
    checkpoint: str | os.PathLike | None = None,
    device: Any = "cpu",
    backend: str = "torch",
) -> Codec:
    """Loads a codec.

    Args:
        source: One of

            * a registry name (``audiotok_24khz``, the default that ships in the package;
              ``encodec_24khz``, ``encodec_48khz``, ``encodec_32khz``, ``encodec_16khz``, or
              an alias such as ``facebook/encodec_32khz``): the official models' weights
              come from the local cache, else are downloaded and verified;
            * a path to an ``encodec`` ``.th`` file (architecture recognised from the official
              file name or from the tensors' shapes);
            * a Hugging Face transformers model directory (``config.json`` + weights);
            * an audiocraft export (``compression_state_dict.bin``, or its directory);
            * an audiotok checkpoint (``NAME.json`` + ``NAME.safetensors``);
            * an ``audiotok export-onnx`` folder (run by ONNX Runtime whatever ``backend``).
        checkpoint: With a registry name, the weights file to use for that architecture
            instead of the cache (loaded as it is; no hash check on files the user names).
        device: Where to put the model.
        backend: ``torch`` (an :class:`EncodecCodec`), or ``onnx``: the model's ONNX graphs
            run by ONNX Runtime on the CPU (:class:`~audiotok.codec.onnx_runtime.OnnxCodec`,
            numpy arrays), exported once into ``$AUDIOTOK_CACHE/onnx/`` (with torch) and
            reused from there (without torch: a machine where torch is not installed runs a
            model exported there before, or an export folder given as ``source``).

    Loading a codec also tunes the process's allocator for fast inference (see
    :mod:`audiotok.runtime`; ``AUDIOTOK_KEEP_MALLOC=1`` turns that off).

    Returns:
        The codec, in eval mode, on ``device``.

    Raises:
        ModelNotAvailableError: Unknown name, or weights neither cached nor downloadable
            (``onnx`` without torch: no export in the cache).
        CheckpointError: An unreadable checkpoint, or one of another architecture.
        DeviceError: ``device`` does not exist or is not available (``onnx``: not the CPU).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    from .onnx_runtime import OnnxCodec, is_onnx_export

    if isinstance(source, (str, os.PathLike)) and is_onnx_export(source):
        _onnx_device(device)
        return OnnxCodec(source)
    if backend == "onnx":
        _onnx_device(device)
        return OnnxCodec(onnx_export_folder(source, checkpoint))
    _refuse_without_torch(source)
    from .torch_load import load_torch_codec

    return load_torch_codec(source, checkpoint, device)


def _refuse_without_torch(source: Any) -> None:
    """Where torch is not installed, a folder given as the model that is not an export says
    what it is, rather than that torch is missing (the user named the folder, as told)."""
    import importlib.util

    if not isinstance(source, (str, os.PathLike)):
        return
    try:
        if importlib.util.find_spec("torch") is not None:
            return
    except ImportError:  # a finder that refuses it: as good as not installed
        pass
    path = Path(source)
    if (path / "model.json").is_file():
        raise CheckpointError(
            f"{path / 'model.json'}: not an audiotok export-onnx sidecar (unreadable, or of "
            "another format)"
        )
    if path.is_dir():
        raise CheckpointError(
            f"{path}: not an audiotok export-onnx folder (no model.json); other checkpoints "
            "need torch (pip install torch)"
        )


def _onnx_device(device: Any) -> None:
    if str(device).split(":")[0] != "cpu":
        raise DeviceError(f"the onnx backend runs on the CPU, not {device}; use the torch backend")


def onnx_export_folder(
    source: str | os.PathLike, checkpoint: str | os.PathLike | None = None
) -> Path:
    """The cached ONNX export of ``source``'s weights (as :func:`load_codec` takes them).

    Found by the SHA-256 of the weights file(s) in ``$AUDIOTOK_CACHE/onnx/sources/``; else
    exported there with torch, under the name ``MODEL-FINGERPRINT-vFORMAT``.

    Raises:
        ModelNotAvailableError: Not in the cache, and torch (needed to export) not installed.
    """
    key = _weights_key(source, checkpoint)
    found = _cached_export(key) if key else None
    if found is not None:
        return found
    try:
        from .torch_load import load_torch_codec
    except ImportError as exc:
        if exc.name != "torch":
            raise
        raise ModelNotAvailableError(
            f"{source}: no ONNX export of it in {hub.cache_dir() / 'onnx'}, and torch (which "
            f"makes one) is not installed; export it where torch is (`audiotok export-onnx "
            f"{source} -o DIR`) and load the folder (-m DIR)"
        ) from None
    folder = _export_to_cache(load_torch_codec(source, checkpoint))
    if key:
        record = {"export": folder.name, "source": str(source)}
        _sources_dir().mkdir(parents=True, exist_ok=True)
        with atomic_path(_sources_dir() / f"{key}.json", True, ModelNotAvailableError) as tmp:
            Path(tmp).write_text(json.dumps(record))
    return folder


def _sources_dir() -> Path:
    return hub.cache_dir() / "onnx" / "sources"


def _weights_key(source: str | os.PathLike, checkpoint: str | os.PathLike | None) -> str | None:
    """SHA-256 of the files that hold ``source``'s weights; None where they aren't one file
    (a checkpoint directory) or aren't here yet (a registry model not downloaded)."""
    path: Path | None = Path(checkpoint) if checkpoint is not None else None
    name = hub.registry_lookup(source)
    card = find_card(name) if name is not None else None
    if path is None and card is not None:
        found = hub.find_local(card)
        path = found[1] if found else None
    elif path is None:
        path = Path(source)
    if path is None or not path.is_file():
        return None
    files = [path]
    if path.suffix == ".json" and path.with_suffix(".safetensors").is_file():
        files.append(path.with_suffix(".safetensors"))  # an audiotok checkpoint: card + weights
    digest = hashlib.sha256(str(card.name if card else "").encode())
    for file in files:
        digest.update(bytes.fromhex(sha256_file(file)))
    return digest.hexdigest()


def _cached_export(key: str) -> Path | None:
    from .onnx_runtime import FORMAT_VERSION

    record = _sources_dir() / f"{key}.json"
    try:
        name = str(json.loads(record.read_text())["export"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    folder = hub.cache_dir() / "onnx" / name
    # An export of an older format (no streaming graphs; short segments inexact) is made again.
    if not name.endswith(f"-v{FORMAT_VERSION}") or not (folder / "model.json").is_file():
        return None
    return folder


def _export_to_cache(codec: EncodecCodec) -> Path:
    """The cached ONNX export of ``codec``'s weights; exported there first if missing."""
    from .onnx_export import export_onnx
    from .onnx_runtime import FORMAT_VERSION

    # The format in the name: an export of an older audiotok (no streaming graphs before format
    # 2, short inputs padded inexactly before format 3) is made again.
    name = f"{codec.model_id}-{codec.fingerprint().hex()}-v{FORMAT_VERSION}"
    folder = hub.cache_dir() / "onnx" / name
    if not (folder / "model.json").is_file():
        # Exported beside, then renamed: a process that dies mid-export leaves no half folder
        # where another would take it for whole.
        # A random name, not the pid: container replicas sharing a cache are all pid 1.
        partial = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.partial")
        export_onnx(codec, partial, overwrite=True)
        try:
            os.replace(partial, folder)
        except OSError:  # another process put its export there first
            import shutil

            shutil.rmtree(partial, ignore_errors=True)
    return folder
