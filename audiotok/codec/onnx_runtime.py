"""A codec run by ONNX Runtime: the graphs of ``audiotok export-onnx`` behind :class:`Codec`.

    >>> codec = load_codec("audiotok_24khz", backend="onnx")       # doctest: +SKIP
    >>> codec = OnnxCodec("exported/")                              # doctest: +SKIP
    >>> tokens = codec.encode(wav, sample_rate=44_100, bandwidth=6.0)   # Tokens [B, K, F]
    >>> audio = codec.decode(tokens)                                # [B, C, length]

Everything a :class:`~audiotok.codec.encodec.EncodecCodec` does around the network is done
here the same way, so compression, datasets and the service take either backend. Its arrays
are numpy's (``framework = "np"``: tokens and audio are numpy arrays), and nothing here
imports torch: with an export at hand, a machine without torch installed codes audio.

* the encoder graph gives all ``n_q`` codebooks; a bandwidth keeps the first ``K`` (exact:
  residual stages don't depend on later ones), and the decoder graph takes any ``K``;
* segmented models (48 kHz) are cut into segments (:func:`~.segments.split_segments`), each
  encoded with its loudness scale, and decoded segments are joined by
  :func:`~.segments.linear_overlap_add`, as the torch model does;
* the fingerprint is the torch weights' (recorded in ``model.json``): an ``.atok`` file
  written by one backend decodes with the other, and the entropy-coder priors come along.

Where it is not exact: ONNX Runtime's float rounding flips a few near ties between codebook
entries (tests/test_onnx.py measures this: at least 99.9 % of the codes of real audio equal).
Inputs of any length code as torch's since export format 3, 48 kHz segments of a few samples
included (the graphs reflect short inputs as torch does: :mod:`~.onnx_export`). Exports of
formats 1 and 2 are still read, with their old behaviour: a signal (or a 48 kHz segment)
shorter than the sidecar's ``min_length`` samples, or codes shorter than ``min_frames``, are
padded with zeros (code 0) before the graph, which is not torch's result. That is not close
for the 48 kHz model, where it happens to ~2 % of lengths (the last segment, exactly 1 s or
2 s of audio among them): the segment's scale is computed over the padding too (torch's times
``sqrt(n / 961)``: 0.108 for 0.153 at 48 000 samples), and the decoded end is off by 0.3 to
0.6 on a peak of 1, from torch's own tokens too (the code-0 frames the decoder looks ahead
into). Such an export warns when it pads: export it again (``audiotok export-onnx -f``;
``load_codec(..., backend="onnx")`` re-exports its cached ones by itself).
Causal models (the packaged default, the 24 kHz EnCodec) stream through their one-step graphs
(:meth:`OnnxCodec.streaming`, :class:`~audiotok.codec.onnx_stream.OnnxStream`); the others
don't stream on this backend (:attr:`can_stream` is False: files are coded in one pass).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import AudiotokError, CheckpointError, TokensError
from ..runtime.files import sha256_file
from .base import Codec
from .segments import Segment, linear_overlap_add, split_segments

if TYPE_CHECKING:
    from .onnx_stream import OnnxStream

FORMAT = "audiotok-onnx"
FORMAT_VERSION = 3
"""Export format written (2 added the streaming graphs; 3 codes inputs of any length exactly)."""
FORMAT_VERSIONS = (1, 2, FORMAT_VERSION)
"""Export formats read."""
# What every export's model.json holds (all versions); "streaming" and "entropy_priors" may
# be null.
REQUIRED_FIELDS = (
    "model_id", "sample_rate", "channels", "frame_rate", "hop_length", "n_q", "cardinality",
    "bandwidths", "segmented", "segment_length", "segment_stride",
    "normalize", "min_length", "min_frames", "torch_fingerprint",
)  # fmt: skip


class OnnxRuntimeMissing(AudiotokError):
    """onnxruntime is not installed."""


def is_onnx_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ``audiotok export-onnx`` folder (or its ``model.json``)."""
    path = Path(path)
    sidecar = path / "model.json" if path.is_dir() else path
    if sidecar.name != "model.json" or not sidecar.is_file():
        return False
    try:
        return json.loads(sidecar.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class OnnxCodec(Codec):
    """The exported graphs in ``folder``, run by ONNX Runtime on the CPU (or ``providers``).

    Args:
        folder: An ``audiotok export-onnx`` folder (or its ``model.json``).
        threads: ONNX Runtime's intra-op threads (None: torch's thread count where torch is
            loaded, so both backends use the same cores; else ONNX Runtime's default).
        providers: ONNX Runtime execution providers (default: CPU).
        verify: Check the graphs' SHA-256 against the sidecar.

    Raises:
        OnnxRuntimeMissing: onnxruntime is not installed.
        CheckpointError: Not an export, an export of another format version, a missing or
            altered graph.
    """

    framework = "np"

    def __init__(
        self,
        folder: str | os.PathLike,
        threads: int | None = None,
        providers: list[str] | None = None,
        verify: bool = True,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise OnnxRuntimeMissing(
                "the onnx backend needs onnxruntime: pip install 'audiotok[onnx]'"
            ) from None
        self._args = (str(folder), threads, providers)
        folder = Path(folder)
        if folder.name == "model.json":
            folder = folder.parent
        if not is_onnx_export(folder):
            raise CheckpointError(f"{folder}: not an audiotok ONNX export (no model.json)")
        meta = json.loads((folder / "model.json").read_text())
        if meta.get("format_version") not in FORMAT_VERSIONS:
            raise CheckpointError(
                f"{folder}: ONNX export format {meta.get('format_version')}, "
                f"this audiotok reads {', '.join(map(str, FORMAT_VERSIONS))}"
            )
        missing = [key for key in REQUIRED_FIELDS if key not in meta]
        graphs = meta.get("graphs")
        if not isinstance(graphs, dict) or not {"encoder", "decoder"} <= set(graphs):
            missing.append("graphs.encoder/decoder")
        if missing:  # a hand-edited or truncated sidecar: a KeyError at first use otherwise
            raise CheckpointError(f"{folder}/model.json: missing {', '.join(missing)}")
        self.folder, self.meta, self._verify = folder, meta, verify
        self._warned_short = False
        self.model_id = meta["model_id"]
        self._options = ort.SessionOptions()
        torch = sys.modules.get("torch")  # not imported for this: it may not be installed
        self._options.intra_op_num_threads = threads or (torch.get_num_threads() if torch else 0)
        self._providers = providers or ["CPUExecutionProvider"]
        self._sessions: dict[str, Any] = {}
        for role in ("encoder", "decoder"):
            self._open(role, meta["graphs"][role])
        self._priors = None
        if meta.get("entropy_priors"):
            from safetensors.numpy import load_file

            entry = meta["entropy_priors"]
            path = self._checked(entry["file"], entry["sha256"] if verify else None)
            self._priors = load_file(path)["priors"]
        self._bandwidths = {float(b): int(k) for b, k in meta["bandwidths"].items()}

    def __reduce__(self) -> tuple:
        """Sent to other processes (Ray actors) as its folder, which they open again: the
        folder must be at the same path there (shared storage, or the same cache)."""
        return (OnnxCodec, (*self._args, False))

    def to(self, device: Any) -> OnnxCodec:
        """Only the CPU; returns self."""
        if str(device).split(":")[0] != "cpu":
            raise ValueError(f"the onnx backend runs on the CPU, not {device}")
        return self

    def _open(self, role: str, graph: dict[str, Any]) -> None:
        import onnxruntime as ort

        path = self._checked(graph["file"], graph["sha256"] if self._verify else None)
        self._sessions[role] = ort.InferenceSession(
            str(path), self._options, providers=self._providers
        )

    def _checked(self, name: str, sha256: str | None) -> Path:
        path = self.folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the ONNX export")
        if sha256 is not None and sha256_file(path) != sha256:
            raise CheckpointError(f"{path}: its SHA-256 differs from model.json's (altered?)")
        return path

    @property
    def sample_rate(self) -> int:
        return int(self.meta["sample_rate"])

    @property
    def channels(self) -> int:
        return int(self.meta["channels"])

    @property
    def frame_rate(self) -> float:
        return float(self.meta["frame_rate"])

    @property
    def cardinality(self) -> int:
        return int(self.meta["cardinality"])

    @property
    def bandwidths(self) -> tuple[float, ...]:
        return tuple(sorted(self._bandwidths))

    @property
    def default_bandwidth(self) -> float:
        default = self.meta.get("default_bandwidth")
        return float(default) if default in self._bandwidths else self.bandwidths[0]

    @property
    def hop_length(self) -> int:
        return int(self.meta["hop_length"])

    @property
    def segments(self) -> tuple[int, int] | None:
        if not self.meta["segmented"]:
            return None
        return int(self.meta["segment_length"]), int(self.meta["segment_stride"])

    @property
    def has_scales(self) -> bool:
        return bool(self.meta["segmented"] and self.meta["normalize"])

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def can_stream(self) -> bool:
        """Whether the export has streaming graphs (causal models; see :meth:`streaming`)."""
        return bool(self.meta.get("streaming"))

    def streaming(self, batch_size: int = 1, bandwidth: float | None = None) -> OnnxStream:
        """A stream for chunk-by-chunk encoding and decoding, as the torch backend's.

        Raises:
            ValueError: The export has no streaming graphs (the sidecar's ``no_streaming``
                says why: non-causal or segmented models).
        """
        from .onnx_stream import OnnxStream

        streaming = self.meta.get("streaming")
        if not streaming:
            why = self.meta.get("no_streaming") or "exported before streaming graphs existed"
            raise ValueError(f"{self.model_id} can't stream on the onnx backend: {why}")
        for role in ("encoder_start", "encoder_step", "decoder_start", "decoder_step"):
            if role not in self._sessions:
                self._open(role, streaming[role])
        return OnnxStream(self, batch_size, self.num_codebooks(bandwidth))

    @property
    def entropy_priors(self) -> np.ndarray | None:
        return self._priors

    def fingerprint(self) -> bytes:
        return bytes.fromhex(self.meta["torch_fingerprint"])

    def num_codebooks(self, bandwidth: float | None = None) -> int:
        return self._bandwidths[self.check_bandwidth(bandwidth)]

    @property
    def max_codebooks(self) -> int:
        """All ``n_q``: the decoder graph takes any ``K``, whatever bandwidths the export lists
        (an export for 3 kbps decodes a 24 kbps file of the same weights)."""
        return int(self.meta["n_q"])

    def _split(self, length: int) -> list[Segment]:
        seg = self.segments
        return split_segments(length, self.hop_length, *(seg if seg else (None, None)))

    def num_frames(self, length: int) -> int:
        return sum(s.frames for s in self._split(length))

    def _padded(self, x: np.ndarray, minimum: str) -> np.ndarray:
        """Audio ``[B, C, n]`` or codes ``[B, K, f]`` zero-padded (code 0) to the sidecar's
        ``minimum`` (exports of formats 1 and 2 only: it is 1 since format 3), with a warning
        the first time."""
        short = int(self.meta[minimum]) - x.shape[-1]
        if short <= 0:
            return x
        if not self._warned_short:  # once per codec: a long file has one short segment a time
            self._warned_short = True
            warnings.warn(
                f"{self.folder}: this ONNX export (format {self.meta['format_version']}) codes "
                f"inputs shorter than its {minimum} ({self.meta[minimum]}) inexactly, 48 kHz "
                "segments with a wrong scale; export it again with this audiotok "
                "(audiotok export-onnx -f)",
                stacklevel=4,
            )
        return np.pad(x, ((0, 0), (0, 0), (0, short)))

    def _run_encoder(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``[B, C, n]`` -> all codes ``[B, n_q, ceil(n / hop)]`` (and scales ``[B]``)."""
        n = audio.shape[-1]
        outputs = self._sessions["encoder"].run(None, {"audio": self._padded(audio, "min_length")})
        frames = -(-n // self.hop_length)
        return outputs[0][..., :frames], (outputs[1] if len(outputs) > 1 else None)

    def _run_decoder(self, codes: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
        """Codes ``[B, K, f]`` (and scales ``[B]``) -> audio ``[B, C, f * hop]``."""
        f = codes.shape[-1]
        codes = self._padded(np.ascontiguousarray(codes, dtype=np.int64), "min_frames")
        feeds: dict[str, Any] = {"codes": codes}
        if self.meta["segmented"]:
            ones = np.ones(codes.shape[0], np.float32)
            feeds["scale"] = ones if scale is None else np.ascontiguousarray(scale, np.float32)
        (audio,) = self._sessions["decoder"].run(None, feeds)
        return audio[..., : f * self.hop_length]

    def _encode(self, wav: np.ndarray, bandwidth: float) -> tuple[np.ndarray, np.ndarray | None]:
        k = self.num_codebooks(bandwidth)
        audio = np.asarray(wav, np.float32)
        codes, scales = [], []
        for seg in self._split(audio.shape[-1]):
            chunk = np.ascontiguousarray(audio[..., seg.start : seg.start + seg.length])
            seg_codes, scale = self._run_encoder(chunk)
            codes.append(seg_codes[:, :k])
            scales.append(scale)
        joined = np.concatenate(codes, axis=-1)
        if not self.has_scales:
            return joined, None
        return joined, np.stack(scales, axis=1)

    def _decode(self, codes: np.ndarray, scales: np.ndarray | None, length: int) -> np.ndarray:
        segments = self._split(length)
        if self.has_scales:
            if scales is None or scales.shape[1] != len(segments):
                got = "none" if scales is None else scales.shape[1]
                raise TokensError(
                    f"{self.model_id} needs one scale per segment ({len(segments)}), got {got}"
                )
        elif scales is not None:
            raise TokensError(f"{self.model_id} does not normalise, but the tokens carry scales")
        pieces = []
        for i, seg in enumerate(segments):
            frames = codes[..., seg.first_frame : seg.first_frame + seg.frames]
            scale = None if scales is None else scales[:, i]
            pieces.append(self._run_decoder(frames, scale))
        if not self.meta["segmented"]:
            return pieces[0][..., :length]
        return linear_overlap_add(pieces, int(self.meta["segment_stride"]))[..., :length]

    def __repr__(self) -> str:
        return f"OnnxCodec({self.model_id!r}, folder={str(self.folder)!r})"
