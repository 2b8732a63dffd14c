"""The architecture of an EnCodec-family codec, as one JSON-serialisable dataclass.

One ``CodecConfig`` describes every model we load: the ``encodec`` package's 24 kHz and
48 kHz models, MusicGen's 32 kHz codec, AudioGen's 16 kHz codec and our own. Field names
follow the ``encodec`` / audiocraft constructor arguments (``n_filters``, ``ratios``,
``true_skip``, ``n_q``, ``bins``...) so that a config reads like the official one.

Example:
    >>> cfg = CodecConfig(sample_rate=24_000, channels=1, causal=True)
    >>> cfg.hop_length, cfg.frame_rate, cfg.max_codebooks(), cfg.num_codebooks(6.0)
    (320, 75.0, 32, 8)
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

NORMS = ("none", "weight_norm", "time_group_norm")
PAD_MODES = ("reflect", "constant", "replicate", "circular")
ACTIVATIONS = ("ELU", "Snake")
# Bounds on a config's numbers, each far beyond any published model (the zoo's widest
# convolution has 1024 channels, its most codebooks are 32, its largest ratio 8), so that a
# typo or a hostile card is a one-line error instead of an allocation of terabytes inside
# torch, a SystemError, or one segment per sample.
MIN_SAMPLE_RATE = 1000  # = audiotok.audio.read.MIN_SAMPLE_RATE (not imported: no soxr here)
MAX_SAMPLE_RATE = 768_000  # the highest rate audio interfaces and formats offer
MAX_WIDTH = 4096  # channels of the widest convolution (n_filters x 2 ** len(ratios)) and dimension
MAX_N_Q = 1024
MAX_CODEBOOK_VALUES = 2**28  # n_q x bins x (codebook_dim or dimension): 1 GiB of float32
MAX_RATIO = 64
MAX_KERNEL = 64


class InvalidCodecConfig(ValueError):
    """A config with out-of-range fields; :attr:`problems` lists them, one phrase each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid codec config: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class CodecConfig:
    """Architecture of a SEANet + residual-VQ codec.

    Attributes:
        sample_rate: Audio sample rate in Hz.
        channels: Audio channels (1 or 2).
        causal: Causal (left-only) padding in every convolution, as the streamable 24 kHz model.
        norm: Convolution normalisation: ``weight_norm``, ``time_group_norm`` or ``none``.
        pad_mode: Padding mode of the convolutions (``reflect`` in ``encodec``, ``constant``
            in audiocraft).
        dimension: Width of the latent fed to the quantizer.
        n_filters: Width of the first convolution; doubles at each downsampling.
        n_residual_layers: Residual blocks per resolution.
        ratios: Up-sampling ratios in decoder order; the encoder downsamples in reverse order.
        kernel_size: Kernel of the first convolution.
        last_kernel_size: Kernel of the last convolution.
        residual_kernel_size: Kernel of the first convolution of each residual block.
        dilation_base: Dilation growth between residual blocks of one resolution.
        compress: Channel reduction inside residual blocks.
        lstm: LSTM layers at the bottleneck (0 for none).
        true_skip: Identity skip in residual blocks; False uses a 1x1 convolution shortcut.
        trim_right_ratio: Share of a causal transposed convolution's padding trimmed on the right.
        final_activation: Name of a ``torch.nn`` activation after the decoder, or None.
        disable_norm_outer_blocks: Number of outer blocks (first of the encoder, last of the
            decoder) built without normalisation (audiocraft option).
        activation: ``ELU`` (EnCodec) or ``Snake`` (DAC: ``x + sin(a x)**2 / a`` with a
            learned ``a`` per channel, :class:`~audiotok.codec.snake.Snake1d`).
        activation_alpha: The ELU's alpha.
        n_q: Number of codebooks in the residual quantizer.
        bins: Entries per codebook (the token cardinality).
        codebook_dim: 0: each codebook looks the latent up in its own ``dimension`` (EnCodec).
            Above 0: DAC's factorised codes: each stage projects the residual to this many
            dimensions and takes the entry of highest cosine similarity
            (:class:`~audiotok.codec.quantization.FactorisedVectorQuantization`).
        target_bandwidths: Supported bandwidths in kbps, ascending.
        normalize: Normalise each segment's loudness before encoding and store its scale.
        segment: Segment duration in seconds for overlap-add processing, or None for one pass.
        overlap: Overlap between consecutive segments, as a fraction of the segment.
    """

    sample_rate: int
    channels: int
    causal: bool
    norm: str = "weight_norm"
    pad_mode: str = "reflect"
    dimension: int = 128
    n_filters: int = 32
    n_residual_layers: int = 1
    ratios: tuple[int, ...] = (8, 5, 4, 2)
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    lstm: int = 2
    true_skip: bool = False
    trim_right_ratio: float = 1.0
    final_activation: str | None = None
    disable_norm_outer_blocks: int = 0
    activation: str = "ELU"
    activation_alpha: float = 1.0
    n_q: int = 32
    bins: int = 1024
    codebook_dim: int = 0
    target_bandwidths: tuple[float, ...] = field(default=(1.5, 3.0, 6.0, 12.0, 24.0))
    normalize: bool = False
    segment: float | None = None
    overlap: float = 0.01

    def __post_init__(self) -> None:
        # Tuples keep the dataclass hashable and immutable even when built from JSON lists.
        object.__setattr__(self, "ratios", tuple(int(r) for r in self.ratios))
        object.__setattr__(
            self, "target_bandwidths", tuple(float(b) for b in self.target_bandwidths)
        )
        problems = []
        if self.channels not in (1, 2):
            problems.append(f"channels must be 1 or 2, not {self.channels}")
        if self.norm not in NORMS:
            problems.append(f"norm must be one of {NORMS}, not {self.norm!r}")
        if self.pad_mode not in PAD_MODES:
            problems.append(f"pad_mode must be one of {PAD_MODES}, not {self.pad_mode!r}")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {ACTIVATIONS}, not {self.activation!r}")
        if self.causal and self.norm == "time_group_norm":
            problems.append("time_group_norm looks at the whole signal and can't be causal")
        if not 0 <= self.codebook_dim <= self.dimension:
            problems.append(
                f"codebook_dim must be in [0, {self.dimension}], not {self.codebook_dim}"
            )
        if self.bins < 2 or self.bins & (self.bins - 1):
            problems.append(f"bins must be a power of two, not {self.bins}")
        if not self.target_bandwidths or list(self.target_bandwidths) != sorted(
            self.target_bandwidths
        ):
            problems.append("target_bandwidths must be a non-empty ascending list")
        problems += self._range_problems()
        if problems:
            raise InvalidCodecConfig(problems)

    def _range_problems(self) -> list[str]:
        """What lies outside the bounds above, one phrase each (empty when all is well)."""
        ratios, widest = self.ratios, self.n_filters * 2 ** len(self.ratios)
        stage_dim = self.codebook_dim or self.dimension
        checks = {
            f"sample_rate must be in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz, "
            f"not {self.sample_rate}": MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE,
            f"ratios must be 1 to 8 numbers in [1, {MAX_RATIO}], not {list(ratios)}": (
                1 <= len(ratios) <= 8 and all(1 <= r <= MAX_RATIO for r in ratios)
            ),
            f"n_filters must be >= 1 with n_filters x 2 ** len(ratios) <= {MAX_WIDTH}, "
            f"not {self.n_filters}": self.n_filters >= 1 and widest <= MAX_WIDTH,
            f"dimension must be in [1, {MAX_WIDTH}], not {self.dimension}": (
                1 <= self.dimension <= MAX_WIDTH
            ),
            f"kernel sizes must be in [1, {MAX_KERNEL}], not "
            f"{[self.kernel_size, self.last_kernel_size, self.residual_kernel_size]}": all(
                1 <= k <= MAX_KERNEL
                for k in (self.kernel_size, self.last_kernel_size, self.residual_kernel_size)
            ),
            "n_residual_layers must be in [0, 16], dilation_base in [1, 16], compress in "
            "[1, 64] and lstm in [0, 8]": (
                0 <= self.n_residual_layers <= 16
                and 1 <= self.dilation_base <= 16
                and 1 <= self.compress <= 64
                and 0 <= self.lstm <= 8
            ),
            f"n_q must be >= 1 and <= {MAX_N_Q}, not {self.n_q}": 1 <= self.n_q <= MAX_N_Q,
            f"n_q x bins x codebook size must be <= {MAX_CODEBOOK_VALUES}, not "
            f"{self.n_q * self.bins * stage_dim}": (
                self.n_q * self.bins * stage_dim <= MAX_CODEBOOK_VALUES
            ),
            "trim_right_ratio must be in [0, 1]": 0 <= self.trim_right_ratio <= 1,
            f"disable_norm_outer_blocks must be in [0, {len(ratios) + 2}]": (
                0 <= self.disable_norm_outer_blocks <= len(ratios) + 2
            ),
            "activation_alpha must be finite": math.isfinite(self.activation_alpha),
            "target_bandwidths must be finite and > 0": all(
                math.isfinite(b) and b > 0 for b in self.target_bandwidths
            ),
            f"overlap must be in [0, 1), not {self.overlap}": 0 <= self.overlap < 1,
        }
        problems = [what for what, ok in checks.items() if not ok]
        if self.segment is not None and not (
            math.isfinite(self.segment) and self.segment * self.sample_rate >= self.hop_length
        ):
            problems.append(
                f"segment must be null or at least one frame ({self.hop_length} samples), "
                f"not {self.segment} s"
            )
        return problems

    @property
    def hop_length(self) -> int:
        """Samples per frame: the product of the ratios."""
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> float:
        """Frames (token time steps) per second."""
        return self.sample_rate / self.hop_length

    @property
    def bits_per_codebook(self) -> int:
        """Bits of one token: log2 of the cardinality."""
        return int(math.log2(self.bins))

    @property
    def segment_length(self) -> int | None:
        """Segment length in samples, or None when the model runs in one pass."""
        return None if self.segment is None else int(self.segment * self.sample_rate)

    @property
    def segment_stride(self) -> int | None:
        """Distance between segment starts in samples, or None without segments."""
        length = self.segment_length
        return None if length is None else max(1, int((1 - self.overlap) * length))

    def max_codebooks(self) -> int:
        """Codebooks used at the highest bandwidth."""
        return self.num_codebooks(self.target_bandwidths[-1])

    def num_codebooks(self, bandwidth: float) -> int:
        """Codebooks used at ``bandwidth`` kbps, as ``encodec`` counts them.

        ``encodec`` takes ``floor(bandwidth / kbps_per_codebook)`` with the frame rate rounded
        up; the tiny tolerance keeps 2.2 kbps at 4 codebooks of 0.55 kbps despite binary floats.
        """
        kbps_per_codebook = self.bits_per_codebook * math.ceil(self.frame_rate) / 1000
        return min(self.n_q, max(1, math.floor(bandwidth / kbps_per_codebook + 1e-9)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; ``CodecConfig(**d)`` rebuilds the config."""
        data = dataclasses.asdict(self)
        data["ratios"] = list(self.ratios)
        data["target_bandwidths"] = list(self.target_bandwidths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodecConfig:
        """Builds a config from :meth:`to_dict` output, rejecting unknown fields and values of
        the wrong type (JSON's 1e9 for an integer, a string for a number)."""
        unknown = unknown_fields(cls, data)
        if unknown:
            raise ValueError(f"unknown codec config fields: {', '.join(unknown)}")
        errors = field_type_errors(cls, data)
        if errors:
            raise InvalidCodecConfig(errors)
        return cls(**data)


def unknown_fields(cls: type, data: dict[str, Any]) -> list[str]:
    """The keys of ``data`` that are not fields of the dataclass ``cls``, sorted."""
    return sorted(set(data) - {f.name for f in dataclasses.fields(cls)})


def with_tuples(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with lists made tuples for the dataclass ``cls``'s tuple-typed fields (a single
    string becomes a 1-tuple, None stays None), keeping config dataclasses hashable."""
    names = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")}
    out = {}
    for key, value in data.items():
        if key in names and value is not None:
            value = (value,) if isinstance(value, str) else tuple(value)
        out[key] = value
    return out


def field_type_errors(cls: type, data: dict[str, Any], where: str = "") -> list[str]:
    """What in ``data`` does not fit the field types of the dataclass ``cls``, one line each.

    Numbers must be finite (``NaN`` and ``Infinity``, which JSON readers take, would train
    NaNs or never stop), integers whole, lists and tuples of their items' type (a single
    string stands for a 1-tuple of strings, as :func:`with_tuples` reads it). Nested
    dataclasses (sections) are left to their own check.
    """
    hints = typing.get_type_hints(cls)
    return [
        f"{where}{name}: expected {_describe(hints[name])}, not {value!r}"
        for name, value in data.items()
        if name in hints and not _fits(value, hints[name])
    ]


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is Any or dataclasses.is_dataclass(hint):
        return True
    if origin in (tuple, list):
        values = [value] if isinstance(value, str) else value
        return isinstance(values, (list, tuple)) and all(_fits(v, args[0]) for v in values)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(v, args[1]) for v in value.values())
    if hint is float:
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (math.isfinite(value))
        )
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


_NAMES = {float: ("a finite number", "finite numbers"), int: ("an integer", "integers"),
          str: ("a string", "strings"), bool: ("true or false", "booleans")}  # fmt: skip


def _describe(hint: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (tuple, list):
        return f"a list of {_describe(args[0], plural=True)}"
    if origin is dict:
        return f"a mapping to {_describe(args[1], plural=True)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a, plural) for a in args)
    if hint is type(None):
        return "null"
    if hint in _NAMES:
        return _NAMES[hint][plural]
    return getattr(hint, "__name__", str(hint))
