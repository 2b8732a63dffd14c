"""Where generated audio is kept: files in the state folder, or values in Redis.

A result is named by its request's cache key and format (``KEY.wav``), so a job run twice
(after a lost lease) writes the same name with the same audio: writing is idempotent, and
readers never see half a result (files are renamed into place; Redis ``SET`` is atomic).

- :class:`ResultFiles`: ``STATE/results/``; one machine's disk, or a shared file system
  (renames are atomic on NFS too, unlike SQLite's locks).
- :class:`RedisResults`: ``{audiotok}:result:NAME`` keys that Redis deletes itself when the
  cache's TTL has passed; every replica on every node reads what any of them wrote.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from ..audio.write import write_audio
from ..errors import AudioError

# Generated audio is written as audiocraft's example writes it (and `audiotok generate`):
# -14 LUFS, past full scale a tanh soft clip rather than a hard one.
GENERATED_AUDIO = {"strategy": "loudness", "loudness_compressor": True}


class ResultFiles:
    """Results as files in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, audio: Any, sample_rate: int) -> None:
        """Writes ``audio`` ``[C, T]`` as ``name`` (its format from its suffix), atomically,
        unless it is there: a job run again (its lease lost) keeps what it delivered first."""
        if self.exists(name):
            return
        try:
            write_audio(self.folder / name, audio, sample_rate, **GENERATED_AUDIO)
        except AudioError:
            if not self.exists(name):  # not another run's write, between the check and ours
                raise

    def exists(self, name: str | None) -> bool:
        return bool(name) and (self.folder / name).is_file()

    def path(self, name: str) -> Path | None:
        """The result's file (routes answer with it directly)."""
        return self.folder / name

    def open(self, name: str) -> BinaryIO:
        return open(self.folder / name, "rb")  # the caller closes it

    def delete(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)


class RedisResults:
    """Results as Redis values that expire ``ttl`` seconds after they are written.

    Args:
        client: A ``redis.Redis`` client (bytes responses).
        prefix: Key prefix of the service's store, e.g. ``{audiotok}:``.
        ttl: Seconds a result is kept (the cache's TTL: after it, the job reads ``expired``).
        scratch: Folder for encoding a result before it is sent.
    """

    def __init__(self, client: Any, prefix: str, ttl: float, scratch: Path) -> None:
        self.client, self.prefix, self.ttl, self.scratch = client, prefix, ttl, scratch
        scratch.mkdir(parents=True, exist_ok=True)

    def _key(self, name: str) -> str:
        return f"{self.prefix}result:{name}"

    def write(self, name: str, audio: Any, sample_rate: int) -> None:
        # The encoders write files (mp3 and opus through their libraries): encode in the
        # scratch folder, then send the bytes.
        with tempfile.TemporaryDirectory(dir=self.scratch) as folder:
            path = Path(folder) / name
            write_audio(path, audio, sample_rate, **GENERATED_AUDIO)
            data = path.read_bytes()
        # A little past the cache's TTL: a job marked done just before expiry still reads.
        # NX: a job run again (its lease lost) keeps what it delivered first.
        self.client.set(self._key(name), data, px=int((self.ttl + 60.0) * 1000), nx=True)

    def exists(self, name: str | None) -> bool:
        return bool(name) and bool(self.client.exists(self._key(name)))

    def path(self, name: str) -> Path | None:
        return None

    def open(self, name: str) -> BinaryIO:
        data = self.client.get(self._key(name))
        if data is None:
            raise FileNotFoundError(f"result {name} is no longer kept")
        return io.BytesIO(data)

    def delete(self, name: str) -> None:
        self.client.delete(self._key(name))
