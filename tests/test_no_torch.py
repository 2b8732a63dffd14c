"""The onnx backend where torch is not installed: CLI, Python API, datasets and the service.

Each run is a subprocess whose ``import torch`` fails as it does without torch (a finder on
``sys.meta_path``, installed by a ``sitecustomize`` on ``PYTHONPATH``, raises
``ModuleNotFoundError`` for ``torch`` and its submodules). What the runs make is compared with
the same backend run here, where torch is loaded: the same bytes and codes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import DATA

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from audiotok.codec.load import load_codec
from audiotok.codec.tokens import Tokens

SPEECH = DATA / "speech_24k.flac"

BLOCKER = '''
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
    """As if torch were not installed."""

    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTorch())
'''


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The environment of a run without torch: the blocker, and a cache of its own."""
    root = tmp_path_factory.mktemp("no-torch")
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(BLOCKER)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root / "site"), os.environ.get("PYTHONPATH", "")]),
        "AUDIOTOK_CACHE": str(root / "cache"),
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(scope="module")
def export(env, default_onnx_cache, default_onnx) -> Path:
    """The packaged default exported (with torch, here) into a folder, and into the runs' cache
    by ``load_codec(backend="onnx")`` as a machine with torch would have done it: the run's
    export by that call (conftest.py), its cache entries copied into the runs' cache."""
    shutil.copytree(default_onnx_cache / "onnx", Path(env["AUDIOTOK_CACHE"]) / "onnx")
    return default_onnx


def run(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """``python ARGS`` without torch; fails the test if it ends otherwise than ``ok`` says."""
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert (done.returncode == 0) == ok, done.stderr[-3000:]
    return done


def audiotok(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    return run(env, "-m", "audiotok", *args, ok=ok)


def test_the_blocker_works(env):
    done = run(env, "-c", "import torch", ok=False)
    assert "No module named 'torch'" in done.stderr


def test_compress_and_decompress_from_the_cli(env, export, tmp_path):
    long = tmp_path / "long.wav"  # over 20 s: streamed through the one-step graphs
    speech, rate = sf.read(SPEECH, dtype="float32")
    sf.write(long, np.tile(speech, 3)[: 21 * rate], rate)
    codec = load_codec(export)
    for source, args in ((SPEECH, ["-m", str(export)]), (long, ["--backend", "onnx"])):
        atok = tmp_path / f"{source.stem}.atok"
        audiotok(env, "compress", str(source), str(atok), *args)
        wav = tmp_path / f"{source.stem}-decoded.wav"
        # No -m: the model the file names, found in the cache by its weights file's hash.
        audiotok(env, "decompress", str(atok), str(wav), "--backend", "onnx")
        expected = tmp_path / f"{source.stem}-expected.atok"
        from audiotok.compression.files import compress_file

        compress_file(source, expected, codec)
        assert atok.read_bytes() == expected.read_bytes()
        decoded, out_rate = sf.read(wav, dtype="float32")
        original = sf.info(source)
        assert out_rate == original.samplerate and len(decoded) == original.frames
        assert np.corrcoef(decoded, sf.read(source, dtype="float32")[0])[0, 1] > 0.5


def test_tokens_and_datasets_from_the_cli(env, export, tmp_path):
    npz = tmp_path / "speech.safetensors"
    audiotok(env, "encode", str(SPEECH), "-o", str(npz), "-m", str(export), "-b", "3")
    tokens = Tokens.load(npz, framework="np")
    expected = load_codec(export).encode(sf.read(SPEECH, dtype="float32")[0][None], 24_000, 3.0)
    np.testing.assert_array_equal(tokens.codes, expected.codes)
    audiotok(env, "decode", str(npz), "-o", str(tmp_path / "speech.wav"), "--backend", "onnx")
    assert sf.info(tmp_path / "speech.wav").frames == tokens.length

    folder = tmp_path / "audio"
    folder.mkdir()
    for name in ("a", "b"):
        (folder / f"{name}.flac").write_bytes(SPEECH.read_bytes())
    audiotok(env, "encode", str(folder), "-o", str(tmp_path / "dataset"), "-m", str(export))
    index = (tmp_path / "dataset" / "index.jsonl").read_text().splitlines()
    assert len(index) == 2 and {json.loads(line)["num_frames"] for line in index} == {
        expected.num_frames
    }


def test_the_python_api(env, export):
    script = f"""
import sys, numpy as np, soundfile as sf, audiotok
wav, rate = sf.read({str(SPEECH)!r}, dtype="float32")
codec = audiotok.load_codec({str(export)!r})
tokens = codec.encode(wav[None], sample_rate=rate, bandwidth=6.0)
audio = codec.decode(tokens)
data = audiotok.compress(codec, wav[None], rate)
back, _ = audiotok.decompress(data, codec)
with codec.streaming(bandwidth=6.0) as stream:
    streamed = np.concatenate([stream.encode(wav[None, None, i : i + 4000])
                               for i in range(0, len(wav), 4000)] + [stream.encode_end()], -1)
assert "torch" not in sys.modules
assert isinstance(tokens.codes, np.ndarray) and isinstance(audio, np.ndarray)
assert isinstance(back, np.ndarray) and back.shape == wav[None].shape
np.save(sys.stdout.buffer, np.concatenate([tokens.codes, streamed], 0))
"""
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    codes = np.load(io.BytesIO(done.stdout))
    expected = load_codec(export).encode(sf.read(SPEECH, dtype="float32")[0][None], 24_000, 6.0)
    np.testing.assert_array_equal(codes[0], expected.codes[0])
    np.testing.assert_array_equal(codes[1], expected.codes[0])  # streamed == offline


def test_the_service(env, export, tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    from test_serve import Server

    for key in ("PYTHONPATH", "AUDIOTOK_CACHE"):
        monkeypatch.setenv(key, env[key])
    server = Server(tmp_path / "state", "--backend", "onnx")
    try:
        with open(SPEECH, "rb") as f:
            r = server.client.post("/v1/compress", files={"audio": ("s.flac", f)})
        assert r.status_code == 200, r.text
        d = server.client.post("/v1/decompress", content=r.content)
        assert d.status_code == 200, d.text
        assert sf.info(io.BytesIO(d.content)).frames == sf.info(SPEECH).frames
        e = server.client.post("/v1/encode", files={"audio": ("s.flac", SPEECH.read_bytes())})
        assert e.status_code == 200, e.text
        assert server.client.post("/v1/decode", content=e.content).status_code == 200
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()


def test_what_needs_torch_says_so_in_one_line(env, tmp_path):
    # encodec_24khz was never exported here: making its graphs needs torch.
    done = audiotok(env, "compress", str(SPEECH), str(tmp_path / "x.atok"), "--backend", "onnx",
                    "-m", "encodec_24khz", ok=False)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "export-onnx" in lines[0], done.stderr
    done = audiotok(env, "compress", str(SPEECH), str(tmp_path / "y.atok"), ok=False)
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "audiotok: error: torch is not installed, and this needs it (pip install torch; the "
        "onnx backend runs exported codecs without it: --backend onnx, or -m EXPORT_DIR)"
    ]
    assert not (tmp_path / "x.atok").exists() and not (tmp_path / "y.atok").exists()
    # A folder named with -m, as told, that is no export: said so, not that torch is missing.
    (tmp_path / "empty").mkdir()
    done = audiotok(env, "compress", str(SPEECH), str(tmp_path / "z.atok"), "-m",
                    str(tmp_path / "empty"), ok=False)  # fmt: skip
    assert "not an audiotok export-onnx folder (no model.json)" in done.stderr, done.stderr
    (tmp_path / "empty" / "model.json").write_text("{not json")
    done = audiotok(env, "compress", str(SPEECH), str(tmp_path / "z.atok"), "-m",
                    str(tmp_path / "empty"), ok=False)  # fmt: skip
    assert "model.json: not an audiotok export-onnx sidecar" in done.stderr, done.stderr
