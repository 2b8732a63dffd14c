"""Entropy coders: the interface of the ``.atok`` payload coders (their registry is
:mod:`.coders`).

A container packet holds the codes ``[K, F]`` of about a second of audio (``K`` codebooks,
``F`` frames, every code in ``[0, cardinality)``). An :class:`EntropyCoder` turns them into
the packet's payload and back. Each packet is coded on its own (a coder keeps no state from
one packet to the next), so any packet decodes alone.

The container header stores the coder's :attr:`~EntropyCoder.coder_id` and its serialised
:meth:`~EntropyCoder.params`; a reader rebuilds the coder with
:func:`~audiotok.compression.container.coders.coder_for_id` and :meth:`~EntropyCoder.from_params`.

=====  ============  =========================================================================
id     name          coder
=====  ============  =========================================================================
0      ``raw``       :class:`.rawpack.RawCoder`: fixed-width bit packing
1      ``adaptive``  :class:`.adaptive.AdaptiveCoder`: interleaved rANS with
                     an adaptive frequency model per codebook
=====  ============  =========================================================================

Every coder is integer-exact: the same codes give the same bytes on every machine, and a
payload that does not decode raises :class:`~audiotok.errors.CorruptDataError`.

Example:
    >>> import numpy as np
    >>> from audiotok.compression.container.coders import coder_for_id, coder_for_name
    >>> coder = coder_for_name("raw")(16, 2)
    >>> payload = coder.encode(np.array([[1, 2, 3], [4, 5, 6]]))
    >>> payload.hex()
    '123456'
    >>> coder_for_id(coder.coder_id).from_params(16, 2, coder.params()).decode(payload, 3)
    array([[1, 2, 3],
           [4, 5, 6]])
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from ...errors import CorruptDataError

MAX_CARDINALITY = 1 << 16  # codes must fit a 16-bit word (raw) and the rANS precision


def check_shape(cardinality: int, num_codebooks: int, error: type[Exception] = ValueError) -> None:
    """Raises ``error`` unless ``cardinality`` is a power of two in [2, 2^16] and K >= 1.

    ``from_params`` passes UnsupportedFormatError: there the values come from a file.
    """
    if not is_int(cardinality) or not 2 <= cardinality <= MAX_CARDINALITY:
        raise error(f"cardinality must be a power of two in [2, 65536], got {cardinality!r}")
    if cardinality & (cardinality - 1):
        raise error(f"cardinality must be a power of two in [2, 65536], got {cardinality}")
    if not is_int(num_codebooks) or num_codebooks < 1:
        raise error(f"the number of codebooks must be a positive int, got {num_codebooks!r}")


def is_int(value: object) -> bool:
    """Whether ``value`` is a Python or numpy integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class EntropyCoder(abc.ABC):
    """Codes the codes ``[K, F]`` of one packet into bytes and back.

    Subclasses set :attr:`coder_id` and :attr:`name`, serialise what a decoder needs to know
    in :meth:`params` and implement :meth:`encode` and :meth:`decode`.

    Args:
        cardinality: Entries per codebook, a power of two in ``[2, 65536]``.
        num_codebooks: ``K``, at least 1.
        **params: Coder-specific parameters.

    Raises:
        ValueError: Bad cardinality, codebook count or parameters.
    """

    coder_id: ClassVar[int]
    """Stored in the container header."""
    name: ClassVar[str]
    """The CLI's ``--entropy`` value."""

    def __init__(self, cardinality: int, num_codebooks: int, **params: Any) -> None:
        check_shape(cardinality, num_codebooks)
        if params:
            raise TypeError(f"{type(self).__name__}: unknown parameters {sorted(params)}")
        self.cardinality = int(cardinality)
        self.num_codebooks = int(num_codebooks)
        # log2(cardinality): the bits of a code
        self.bits_per_code = self.cardinality.bit_length() - 1

    @abc.abstractmethod
    def params(self) -> bytes:
        """This coder's parameters, serialised (a few bytes, layout in the subclass)."""

    @classmethod
    @abc.abstractmethod
    def from_params(
        cls,
        cardinality: int,
        num_codebooks: int,
        data: bytes,
        priors: np.ndarray | None = None,
    ) -> EntropyCoder:
        """The coder that :meth:`params` serialised as ``data``.

        Args:
            cardinality: Entries per codebook (from the container header).
            num_codebooks: ``K`` (from the container header).
            data: What :meth:`params` returned.
            priors: Static priors ``[K, cardinality]`` from the codec's card, or None; used by
                coders whose parameters say they need them, ignored by the others.

        Raises:
            CorruptDataError: ``data`` is not a valid serialisation.
            UnsupportedFormatError: Parameters (or a cardinality) this version can't decode,
                or priors that are needed but missing or not the ones the stream was made
                with.
        """

    @abc.abstractmethod
    def encode(self, codes: np.ndarray) -> bytes:
        """The payload of one packet.

        Args:
            codes: Integers ``[K, F]``, every one in ``[0, cardinality)``; ``F`` may be 0.

        Raises:
            ValueError: ``codes`` has another shape, a non-integer dtype or a code out of range.
        """

    @abc.abstractmethod
    def decode(self, payload: bytes, num_frames: int) -> np.ndarray:
        """The codes of one packet; the inverse of :meth:`encode`.

        Allocates ``O(K * num_frames + K * cardinality)`` at most; the caller bounds
        ``num_frames``.

        Returns:
            int64 ``[K, num_frames]``, every code in ``[0, cardinality)``.

        Raises:
            CorruptDataError: The payload does not decode to exactly ``K * num_frames`` codes
                (too short, too long, or inconsistent), or ``num_frames`` is negative.
        """

    @abc.abstractmethod
    def max_payload_size(self, num_frames: int) -> int:
        """An upper bound on the size of :meth:`encode`'s output for ``num_frames`` frames."""

    def check_codes(self, codes: np.ndarray) -> np.ndarray:
        """``codes`` as a C-ordered int64 ``[K, F]`` array, or ValueError."""
        arr = np.asarray(codes)
        if arr.dtype.kind not in "iu":
            raise ValueError(f"codes must be integers, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[0] != self.num_codebooks:
            raise ValueError(f"codes must be [{self.num_codebooks}, F], got shape {arr.shape}")
        # Compare before converting: a uint64 code >= 2^63 must not wrap to a negative one.
        if arr.size and (arr.min() < 0 or arr.max() >= self.cardinality):
            raise ValueError(
                f"codes must be in [0, {self.cardinality}), got [{arr.min()}, {arr.max()}]"
            )
        return np.ascontiguousarray(arr, dtype=np.int64)

    @staticmethod
    def check_num_frames(num_frames: int) -> int:
        """``num_frames`` as an int, or CorruptDataError if it is negative or not an integer."""
        if not is_int(num_frames):
            raise CorruptDataError(f"the frame count must be an int, got {num_frames!r}")
        if num_frames < 0:
            raise CorruptDataError(f"negative frame count {num_frames}")
        return int(num_frames)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cardinality}, {self.num_codebooks})"
