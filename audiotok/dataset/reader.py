"""Reading a token dataset back: :class:`TokenDataset`, memory-mapped, file by file."""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..codec.tokens import Tokens
from .layout import INDEX_NAME, INFO_NAME, SHARD_PATTERN, DatasetError, read_index, read_info


class TokenDataset:
    """A dataset directory read back: ``ds[i]`` is the :class:`Tokens` of the ``i``-th file.

    Shards are memory-mapped (``safetensors.safe_open``) and only the frames of the file asked
    for are read. Files are in index order: the order they were encoded in.

    Example:
        >>> ds = TokenDataset("tokens")                                   # doctest: +SKIP
        >>> tokens = ds[0]                          # codes int64 [1, K, F], scales [1, S] | None
        >>> ds.paths()[0], ds.record(0)["shard"]
        ('corpus/a.flac', 'shard-00000.safetensors')
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.info = read_info(self.root / INFO_NAME)
        with open(self.root / INDEX_NAME, "rb") as index:
            self._records = read_index(index, self.root / INDEX_NAME)
        for record in self._records:
            if not SHARD_PATTERN.fullmatch(str(record["shard"])):
                raise DatasetError(f"{self.root / INDEX_NAME}: bad shard name {record['shard']!r}")
        self._shards: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._records)

    def paths(self) -> list[str]:
        """The files' paths as the index names them, in order."""
        return [record["path"] for record in self._records]

    def record(self, i: int) -> dict[str, Any]:
        """The index record of file ``i`` (a copy)."""
        return dict(self._records[operator.index(i)])

    def __getitem__(self, i: int) -> Tokens:
        """Tokens of file ``i``: codes int64 ``[1, K, F]``, scales float32 ``[1, S]`` or None."""
        record = self._records[operator.index(i)]
        shard = self._shard(record["shard"])
        start = record["frame_offset"]
        codes = shard.get_slice("codes")[:, start : start + record["num_frames"]]
        scales = None
        if self.info["has_scales"]:
            first = record["scale_offset"]
            scales = shard.get_slice("scales")[first : first + record["num_scales"]][None]
        info = self.info
        return Tokens(codes[None].long(), scales, record["length"], record["sample_rate"],
                      float(info["bandwidth"]), info["model_id"])  # fmt: skip

    def __iter__(self) -> Iterator[Tokens]:
        return (self[i] for i in range(len(self)))

    def _shard(self, name: str) -> Any:
        if name not in self._shards:
            from safetensors import safe_open

            path = self.root / name
            if not path.is_file():
                raise DatasetError(f"{path}: shard missing")
            self._shards[name] = safe_open(str(path), framework="pt")
        return self._shards[name]

    def __getstate__(self) -> dict[str, Any]:
        # Open shards don't cross process boundaries (DataLoader workers); each reopens them.
        return {**self.__dict__, "_shards": {}}
