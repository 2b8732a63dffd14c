"""audiotok compress / decompress reading standard input (``-``) in bounded memory.

``sys.stdin.buffer.read()`` took all of it at once: ``< /dev/zero`` ended in a MemoryError
traceback. Standard input now goes to a temporary file, 1 MiB at a time, read as files are.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch
from test_cli_compress import SPEECH, error_line, model, run  # noqa: F401 - the fixture

from audiotok.compression.container.reader import AtokReader


class Stdin(io.RawIOBase):
    """Standard input that gives its bytes in reads of a bounded size, never all at once."""

    def __init__(self, data: bytes) -> None:
        self.inner, self.largest = io.BytesIO(data), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.largest = max(self.largest, len(buffer))
        chunk = self.inner.read(min(len(buffer), 1 << 20))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def readall(self) -> bytes:
        raise AssertionError("standard input read whole into memory")


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if "stdin" in p.name]


def test_compress_and_decompress_read_stdin_as_a_file(model, tmp_path):  # noqa: F811
    result = run(
        "compress", "-", tmp_path / "s.atok", "-m", model, input=Stdin(SPEECH.read_bytes())
    )
    assert result.exit_code == 0, result.output
    assert run("compress", SPEECH, tmp_path / "f.atok", "-m", model).exit_code == 0
    assert (tmp_path / "s.atok").read_bytes() == (tmp_path / "f.atok").read_bytes()
    data = (tmp_path / "s.atok").read_bytes()
    result = run("decompress", "-", tmp_path / "s.wav", "-m", model, input=Stdin(data))
    assert result.exit_code == 0, result.output
    assert run("decompress", tmp_path / "f.atok", tmp_path / "f.wav", "-m", model).exit_code == 0
    assert np.array_equal(sf.read(tmp_path / "s.wav")[0], sf.read(tmp_path / "f.wav")[0])
    assert leftovers(tmp_path) == [], "the temporary copy is removed"


def test_long_stdin_is_compressed_as_a_stream(model, tmp_path):  # noqa: F811
    x = torch.randn(1, 24_000 * 21, generator=torch.Generator().manual_seed(0)).numpy() * 0.1
    buffer = io.BytesIO()
    sf.write(buffer, x.T, 24_000, format="WAV")
    stdin = Stdin(buffer.getvalue())
    result = run("compress", "-", tmp_path / "long.atok", "-m", model, input=stdin)
    assert result.exit_code == 0, result.output
    assert stdin.largest <= 1 << 20
    with AtokReader(tmp_path / "long.atok") as reader:
        assert reader.header.length is None, "streamed: the length is in the index"
    assert leftovers(tmp_path) == []


def test_unreadable_stdin_is_named_as_stdin(model, tmp_path):  # noqa: F811
    line = error_line(
        run("compress", "-", tmp_path / "x.atok", "-m", model, input=Stdin(b"x" * 99))
    )
    assert line.startswith("audiotok: error: <stdin>: cannot read audio"), line
    line = error_line(
        run("decompress", "-", tmp_path / "x.wav", "-m", model, input=Stdin(b"\0" * 99))
    )
    assert line.startswith("audiotok: error: <stdin>: "), line
    assert leftovers(tmp_path) == []


def test_out_of_memory_is_one_line(model, tmp_path, monkeypatch):  # noqa: F811
    import audiotok.compression.files as files

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(files, "decompress_file", exhausted)
    (tmp_path / "a.atok").write_bytes(b"ATOK")
    line = error_line(run("decompress", tmp_path / "a.atok", tmp_path / "a.wav", "-m", model))
    assert line.startswith("audiotok: error: out of memory"), line
