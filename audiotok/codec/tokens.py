"""``Tokens``: what a codec's encoder produces and its decoder consumes.

A ``Tokens`` holds the codes ``[B, K, F]`` (``B`` items, ``K`` codebooks, ``F`` frames), the
per-segment loudness scales of models that normalise (``[B, S]``), and what is needed to
decode them unambiguously: the signal length in samples, the sample rate, the bandwidth and
the id of the model that made them. It saves to ``.npz`` or ``.safetensors``; neither format
runs code on load.

The arrays are torch tensors or numpy arrays (:mod:`~audiotok.codec.arrays`): each codec makes
its own kind (``Codec.framework``) and decodes either, and :meth:`Tokens.load` reads files
into the kind asked for, so tokens are saved, loaded and decoded where torch is not installed.

Example:
    >>> import numpy as np
    >>> codes = np.zeros((1, 8, 75), dtype=np.int64)
    >>> t = Tokens(codes, None, 24_000, 24_000, 6.0, "encodec_24khz")
    >>> t.batch_size, t.num_codebooks, t.num_frames, t.duration
    (1, 8, 75, 1.0)
"""

from __future__ import annotations

import json
import math
import numbers
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio.read import is_tensor, to_numpy
from ..errors import TokensError, TokensTooLargeError, first_line
from ..runtime.files import atomic_path
from .arrays import as_framework, framework_of

FORMAT_VERSION = 1
SUFFIXES = (".npz", ".safetensors")
MAX_FRAMES = 24 * 3600 * 200
"""Frames per item a tokens file may hold: a day at 200 frames/s, above every model of the zoo
(the 48 kHz model's 150/s, plus its segments' overlap). Checked against the arrays' declared
shapes before anything is read, so that a small file can't expand to gigabytes."""
MAX_TOKEN_BYTES = 2**31
"""Bytes an array of a tokens file may hold (2 GiB): a day of the zoo's largest codes, 24 kHz
at 24 kbps (32 codebooks x 75 frames/s x 8 bytes x 86 400 s = 1.66 GB), fits."""
MAX_METADATA_BYTES = 1 << 20  # the JSON of a handful of fields
PICKLED = "it holds pickled objects, which are never loaded"
ARRAYS = ("metadata", "codes", "scales")  # the members load reads; others are never expanded


@dataclass
class Tokens:
    """Discrete codes of a batch of signals, with what is needed to decode them.

    Attributes:
        codes: int64 ``[B, K, F]``, a torch tensor or a numpy array. For segmented models
            (48 kHz) the segments' frames are laid end to end along ``F``.
        scales: float32 ``[B, S]`` of the same kind, one loudness scale per segment, or None.
        length: Samples per channel of the signals at ``sample_rate``.
        sample_rate: Sample rate of the decoded audio (the model's).
        bandwidth: Bandwidth in kbps the codes were made at.
        model_id: Registry name (or other id) of the model that made them.
    """

    codes: Any
    scales: Any
    length: int
    sample_rate: int
    bandwidth: float
    model_id: str

    def __post_init__(self) -> None:
        if not (isinstance(self.codes, np.ndarray) or is_tensor(self.codes)):
            self.codes = np.asarray(self.codes)  # nested lists, as as_framework takes them
        framework = self.framework
        if self.codes.ndim != 3:
            raise TokensError(f"codes must be [B, K, F], got shape {list(self.codes.shape)}")
        if self.codes.shape[0] < 1:
            raise TokensError("tokens hold at least one item: codes [B, K, F] with B >= 1")
        kind = str(self.codes.dtype).removeprefix("torch.")
        if not (kind.startswith(("int", "uint")) and kind != "uint64"):
            # A cast would cut 3.9 to 3 (Tokens.load refuses such files too).
            raise TokensError(f"codes must be integers, not {kind}")
        for name in ("length", "sample_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise TokensError(f"{name} must be a whole number >= 0, not {value!r}")
            setattr(self, name, int(value))
        if self.sample_rate == 0:
            raise TokensError("sample_rate must be positive, not 0")
        self.codes = as_framework(self.codes, framework, dtype="int64")
        if self.scales is not None:
            if self.scales.ndim != 2 or self.scales.shape[0] != self.codes.shape[0]:
                raise TokensError(
                    f"scales must be [B, S] with B={self.codes.shape[0]}, "
                    f"got shape {list(self.scales.shape)}"
                )
            self.scales = as_framework(self.scales, framework, dtype="float32")

    @property
    def framework(self) -> str:
        """``"pt"`` (torch tensors) or ``"np"`` (numpy arrays)."""
        return framework_of(self.codes)

    @property
    def batch_size(self) -> int:
        """``B``."""
        return self.codes.shape[0]

    @property
    def num_codebooks(self) -> int:
        """``K``."""
        return self.codes.shape[1]

    @property
    def num_frames(self) -> int:
        """``F``."""
        return self.codes.shape[2]

    @property
    def duration(self) -> float:
        """Seconds of audio the tokens stand for."""
        return self.length / self.sample_rate

    def to(self, device: Any) -> Tokens:
        """A copy with the tensors on ``device`` (torch tensors; numpy arrays: only the CPU)."""
        if self.framework == "np":
            if str(device) != "cpu":
                raise ValueError(f"numpy tokens are on the CPU; convert them to move to {device}")
            return self.as_framework("np")
        return self.as_framework("pt", device=device)

    def as_framework(self, framework: str, device: Any = None) -> Tokens:
        """A copy with the arrays as ``framework``'s (``"pt"`` on ``device``, or ``"np"``)."""
        scales = self.scales
        return Tokens(
            as_framework(self.codes, framework, device=device),
            None if scales is None else as_framework(scales, framework, device=device),
            self.length,
            self.sample_rate,
            self.bandwidth,
            self.model_id,
        )

    def metadata(self) -> dict[str, str | int | float]:
        """The non-tensor fields, as saved in files."""
        return {
            "format": "audiotok.tokens",
            "version": FORMAT_VERSION,
            "length": self.length,
            "sample_rate": self.sample_rate,
            "bandwidth": self.bandwidth,
            "model_id": self.model_id,
        }

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Writes the tokens to ``.npz`` or ``.safetensors``, atomically.

        Args:
            path: Destination; its suffix picks the format.
            overwrite: Replace an existing file.

        Returns:
            The path written.
        """
        path = Path(path)
        if path.suffix.lower() not in SUFFIXES:  # T.NPZ as t.npz, as audio suffixes go
            raise TokensError(f"{path}: tokens files end in {' or '.join(SUFFIXES)}")
        arrays = {"codes": np.ascontiguousarray(to_numpy(self.codes))}
        if self.scales is not None:
            arrays["scales"] = np.ascontiguousarray(to_numpy(self.scales))
        with atomic_path(path, overwrite, TokensError) as tmp:
            if path.suffix.lower() == ".npz":
                with open(tmp, "wb") as f:
                    np.savez(f, metadata=np.array(json.dumps(self.metadata())), **arrays)
            else:
                from safetensors.numpy import save

                meta = {k: str(v) for k, v in self.metadata().items()}
                # Bytes into the prepared file: it keeps the umask's mode (save_file: 0600).
                tmp.write_bytes(save(arrays, metadata=meta))
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        framework: str = "pt",
        *,
        max_shape: tuple[int, int, int] | None = None,
    ) -> Tokens:
        """Reads tokens written by :meth:`save`.

        Args:
            path: The file.
            framework: ``"pt"`` for torch tensors (on the CPU), ``"np"`` for numpy arrays
                (``codec.framework`` gives what a codec makes).
            max_shape: The largest codes ``[B, K, F]`` to read (a service's limits), checked
                on the file's array header before the codes are read or inflated.

        Raises:
            TokensError: The file is missing, not a tokens file, or inconsistent.
            TokensTooLargeError: Codes beyond ``max_shape``.
        """
        path = Path(path)
        if not path.is_file():
            raise TokensError(f"{path}: no such tokens file")
        kind = _container(path)
        if kind is None:  # numpy would try it as a pickle, and blame pickling
            raise TokensError(f"{path}: not a tokens file (neither .npz nor .safetensors data)")
        try:
            if kind == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="np") as f:
                    meta = dict(f.metadata() or {})
                    wanted = [k for k in f.keys() if k in ARRAYS]  # noqa: SIM118
                    for k in wanted:
                        _check_size(path, k, f.get_slice(k).get_shape(), max_shape)
                    arrays = {k: f.get_tensor(k) for k in wanted}
            else:
                with np.load(path, allow_pickle=False) as npz:
                    wanted = [k for k in ARRAYS if k in npz.files]
                    for k in wanted:  # before numpy expands a member, whatever its size
                        _check_npy_member(path, npz.zip, k + ".npy", max_shape)
                    meta = json.loads(str(npz["metadata"]))
                    arrays = {k: npz[k] for k in wanted if k != "metadata"}
        except TokensError:
            raise
        except Exception as exc:  # numpy, zipfile and safetensors raise many types
            reason = first_line(exc)
            if "allow_pickle" in reason:  # numpy's advice would be to load it unsafely
                reason = PICKLED
            raise TokensError(f"{path}: not a readable tokens file ({reason})") from None
        tokens = cls._from_parts(path, meta, arrays)
        return tokens if framework == "np" else tokens.as_framework(framework)

    @classmethod
    def _from_parts(cls, path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> Tokens:
        if (
            not isinstance(meta, dict)
            or meta.get("format") != "audiotok.tokens"
            or ("codes" not in arrays)
        ):
            raise TokensError(f"{path}: not an audiotok tokens file")
        try:
            version = int(meta.get("version", 0))
        except (TypeError, ValueError):
            raise TokensError(
                f"{path}: bad tokens metadata (version {meta['version']!r})"
            ) from None
        if version > FORMAT_VERSION:
            raise TokensError(
                f"{path}: tokens format version {meta['version']} is newer than this "
                f"audiotok reads ({FORMAT_VERSION}); upgrade audiotok"
            )
        try:
            return cls(
                codes=arrays["codes"],
                scales=arrays.get("scales"),
                length=int(meta["length"]),
                sample_rate=int(meta["sample_rate"]),
                bandwidth=float(meta["bandwidth"]),
                model_id=str(meta["model_id"]),
            )
        except TokensError as exc:  # what the constructor refuses (float codes...), named
            raise TokensError(f"{path}: {exc}") from None
        except (KeyError, ValueError, TypeError) as exc:  # missing, or null / a list / text
            raise TokensError(f"{path}: bad tokens metadata ({exc})") from None


def _check_npy_member(
    path: Path, archive: zipfile.ZipFile, name: str, max_shape: tuple[int, ...] | None
) -> None:
    """Refuses an ``.npz`` member whose npy header declares more than the member holds or more
    than :data:`MAX_FRAMES` / :data:`MAX_TOKEN_BYTES` (or codes beyond ``max_shape``) allow,
    reading only the header.

    A deflated member of zeros expands about a thousandfold: numpy would read it whole (and
    allocate the declared shape up front) before anything else could look at it.
    """
    info = archive.getinfo(name)
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(f)
        held = info.file_size - f.tell()
    if dtype.hasobject:  # numpy refuses these too, but only after reading them
        raise TokensError(f"{path}: not a readable tokens file ({PICKLED})")
    if name == "metadata.npy":
        if held > MAX_METADATA_BYTES:
            raise TokensError(f"{path}: its metadata is {held} bytes, not a tokens file's")
        return
    _check_size(path, name.removesuffix(".npy"), shape, max_shape)
    declared = math.prod(shape) * dtype.itemsize
    if declared > held:
        raise TokensError(
            f"{path}: not a readable tokens file ({name} declares shape {list(shape)}, "
            f"{declared} bytes, but holds {held})"
        )


def _check_size(path: Path, name: str, shape: Any, max_shape: tuple[int, ...] | None) -> None:
    """TokensError for an array of ``shape`` beyond the limits of a tokens file (counted as
    int64, which codes become, so that int8 codes are no way around them); codes beyond
    ``max_shape``: TokensTooLargeError."""
    shape = [int(n) for n in shape]
    over = name == "codes" and max_shape is not None and len(shape) == len(max_shape)
    if over and any(n > most for n, most in zip(shape, max_shape, strict=True)):
        raise TokensTooLargeError(
            f"{path}: codes of shape {shape} are beyond the largest taken here "
            f"{list(max_shape)} ([B, K, F])"
        )
    frames = shape[-1] if shape else 0
    if (name == "codes" and frames > MAX_FRAMES) or math.prod(shape) * 8 > MAX_TOKEN_BYTES:
        raise TokensError(
            f"{path}: {name} of shape {shape} is beyond what a tokens file holds "
            f"(at most {MAX_FRAMES} frames, a day at 200 frames/s, and {MAX_TOKEN_BYTES} bytes)"
        )


def _container(path: Path) -> str | None:
    """``.npz`` or ``.safetensors``, by the file's first bytes (not its name); None if neither."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):  # a zip archive, as npz files are
        return ".npz"
    # safetensors: the JSON header's size (8 bytes, little-endian), then the JSON object.
    size = path.stat().st_size
    if len(head) == 9 and head[8:] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return ".safetensors"
    return None
