"""Tensors from checkpoint files, checked, and modules built around them: for codecs and LMs.

Nothing is unpickled beyond tensors and plain containers (``torch.load(weights_only=True)``),
and every failure is one line naming the file: a :class:`~audiotok.errors.CheckpointError`.
"""

from __future__ import annotations

import functools
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..errors import CheckpointError

M = TypeVar("M", bound=torch.nn.Module)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def explain_load_error(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words.

    torch's own message is several paragraphs that end by suggesting ``weights_only=False``,
    which would run arbitrary code from the file; we keep only the reason.
    """
    text = _ANSI.sub("", str(exc))
    if found := re.search(r"Unsupported global: GLOBAL ([\w.]+)", text):
        return f"it holds a pickled {found[1]} object; only tensors are loaded"
    if found := re.search(r"(?:WeightsUnpickler error|UnpicklingError):\s*([^\n]+)", text):
        return found[1].strip().rstrip(".")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
    return lines[0].rstrip(".") if lines else type(exc).__name__


def load_torch(path: Path, mmap: bool = False) -> Any:
    """``torch.load`` of tensors and plain containers only, or a one-line CheckpointError.

    ``mmap``: the tensors map the file, read only where used (a caller that keeps part of a
    checkpoint never reads the rest); files of the legacy, non-zip format load whole.
    """
    try:
        if mmap and zipfile.is_zipfile(path):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "not a checkpoint we read"
        reason = explain_load_error(exc)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None


def load_safetensors(
    path: Path, keep: Callable[[str], bool] | None = None
) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (those whose name ``keep`` accepts: the others are never
    read), or a one-line CheckpointError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if keep is None or keep(k)}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def float_state(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """``state`` checked to be a state dict, floating tensors as float32 (exports are fp16)."""
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: holds no state dict")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entry {bad[0]!r} is not a tensor")
    return {str(k): v.float() if v.is_floating_point() else v for k, v in state.items()}


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a one-line CheckpointError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


def card_version(card: dict[str, Any], newest: int, path: Path) -> int:
    """A card's ``version`` (0 if absent), checked: a whole number, not newer than ``newest``.

    Raises:
        CheckpointError: A version of another type (a hand-edited ``"1.0"``) or a newer one.
    """
    version = card.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: version must be a whole number, not {version!r}")
    if version > newest:
        raise CheckpointError(f"{path}: card version {version} is newer than this audiotok reads")
    return version


def card_file(card: dict[str, Any], key: str, default: str, path: Path) -> Path:
    """The file a card names under ``key`` (``default`` if absent), beside the card ``path``.

    Raises:
        CheckpointError: Not a bare file name (null, a number, a path into another folder).
    """
    name = card.get(key, default)
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise CheckpointError(f"{path}: {key!r} must be a file name beside the card, not {name!r}")
    return path.with_name(name)


@functools.lru_cache(maxsize=32)
def module_shapes(cls: Callable[[Any], torch.nn.Module], config: Any) -> dict[str, tuple]:
    """Key -> shape of the state dict of ``cls(config)`` (built on no device)."""
    with torch.device("meta"):
        model = cls(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def shape_mismatch(expected: dict[str, tuple], state: dict[str, torch.Tensor]) -> str | None:
    """Why ``state`` does not have the keys and shapes ``expected`` (one line), or None."""
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    wrong = [
        f"{k} {list(state[k].shape)} (expected {list(s)})"
        for k, s in expected.items()
        if k in state and tuple(state[k].shape) != s
    ]
    problems = []
    for what, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
        if items:
            more = f" and {len(items) - 2} more" if len(items) > 2 else ""
            problems.append(f"{len(items)} {what}: {', '.join(items[:2])}{more}")
    return "; ".join(problems) or None


def adopt_state(cls: Callable[[Any], M], config: Any, state: dict[str, torch.Tensor]) -> M:
    """``cls(config)`` holding the (already checked) weights ``state``, aligned, in eval mode.

    The module is built on the meta device and adopts the tensors (``assign``) instead of
    initialising weights only to overwrite them.
    """
    with torch.device("meta"):
        model = cls(config)
    model.load_state_dict(state, strict=True, assign=True)
    align_parameters_(model)
    return model.eval()


@torch.no_grad()
def align_parameters_(model: torch.nn.Module) -> None:
    """Moves parameters and buffers that start off a 64-byte boundary to aligned memory.

    Tensors read from a safetensors file lie in one buffer at 8-byte offsets; kernels that
    stream weights ran up to 20 % slower on them (MusicGen's decoding steps, measured). The
    values are unchanged.
    """
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.data_ptr() % 64:
            tensor.data = tensor.data.clone()
