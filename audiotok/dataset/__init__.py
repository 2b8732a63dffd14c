"""Token datasets: a corpus of audio files encoded once into shards, for language models.

``inputs`` reads the files ahead in threads and groups them into batches; ``tokenize``
encodes them (:func:`tokenize_dataset`, resumable), here or through ``ray_engine`` on a Ray
cluster; ``shards`` writes the shards and the
index under a lock; ``layout`` is the on-disk description (``docs/DATASETS.md``);
``reader`` reads it back (:class:`TokenDataset`, memory-mapped).

    >>> from audiotok.dataset import TokenDataset, tokenize_dataset    # doctest: +SKIP
    >>> report = tokenize_dataset(codec, sorted(Path("corpus").rglob("*.flac")), "tokens")
    >>> TokenDataset("tokens")[0].codes.shape
    torch.Size([1, 8, 750])
"""

from __future__ import annotations

from ..runtime.lazy import lazy_exports

# module -> the names it defines, imported when first used.
_EXPORTS = {
    ".layout": ("DatasetError", "read_info"),
    ".tokenize": ("DatasetReport", "read_manifest", "tokenize_dataset"),
    ".reader": ("TokenDataset",),
}

__all__ = sorted(name for names in _EXPORTS.values() for name in names)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
