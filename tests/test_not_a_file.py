"""Inputs that exist but are not regular files are called what they are, not missing.

A directory, FIFO or device given as audio or as -m was reported as "no such file", which
sent users looking for a typo in a path that was there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_cli_compress import SPEECH, error_line, model, run  # noqa: F401 - the fixture

from audiotok.audio.blocks import audio_info
from audiotok.errors import AudioError
from audiotok.runtime.files import not_a_file

DEVICE = Path("/dev/null")


def test_what_a_path_is_instead_of_a_file(tmp_path):
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "folder.wav").mkdir()
    assert not_a_file(tmp_path / "pipe.wav") == "not a regular file (a FIFO)"
    assert not_a_file(tmp_path / "folder.wav") == "not a regular file (a directory)"
    assert not_a_file(tmp_path / "missing.wav") == "no such file"
    if DEVICE.exists():
        assert not_a_file(DEVICE) == "not a regular file (a device)"
    with pytest.raises(AudioError, match=r"pipe\.wav: not a regular file \(a FIFO\)$"):
        audio_info(tmp_path / "pipe.wav")  # refused without opening it (which would block)


def test_the_commands_say_it(model, tmp_path):  # noqa: F811
    (tmp_path / "folder.wav").mkdir()
    os.mkfifo(tmp_path / "pipe.wav")
    for name, what in (("folder.wav", "a directory"), ("pipe.wav", "a FIFO")):
        line = error_line(run("compress", tmp_path / name, tmp_path / "out.atok", "-m", model))
        assert line == f"audiotok: error: {tmp_path / name}: not a regular file ({what})"
    if DEVICE.exists():
        line = error_line(run("compress", SPEECH, tmp_path / "out.atok", "-m", DEVICE))
        assert line == f"audiotok: error: {DEVICE}: not a regular file (a device)"
