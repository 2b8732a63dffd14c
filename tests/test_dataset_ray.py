"""Dataset tokenization on Ray Data, on the session's local Ray cluster (``ray_cluster``).

A dataset made on Ray must equal the local one file for file, and a worker killed mid-run
must cost nothing: every file indexed once, every shard whole.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
import torch
from conftest import DATA, segmented_tiny, tiny_codec

from audiotok.dataset.ray_engine import RayEngine
from audiotok.dataset.reader import TokenDataset
from audiotok.dataset.tokenize import tokenize_dataset

if importlib.util.find_spec("ray") is None:  # not imported here: ~1 s on every worker
    pytest.skip("needs the ray extra", allow_module_level=True)

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Real clips, copied under several names (22 files, 3 of them not audio)."""
    root = tmp_path_factory.mktemp("corpus")
    clips = sorted(p for p in DATA.glob("*.flac"))
    for i in range(19):
        shutil.copy(clips[i % len(clips)], root / f"{i:02d}_{clips[i % len(clips)].name}")
    for name in ("bad1.wav", "bad2.wav", "bad3.wav"):
        (root / name).write_bytes(b"not audio")
    return sorted(root.iterdir())


@pytest.fixture(autouse=True)
def one_thread():
    """Local runs on one thread, as each Ray actor (``RayEngine.threads``): the thread count
    changes float rounding, which tips near-ties between codebook entries of random models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def same_datasets(a, b) -> None:
    da, db = TokenDataset(a), TokenDataset(b)
    assert da.paths() == db.paths()
    for i in range(len(da)):
        assert da.record(i) == db.record(i)
        assert da[i].codes.equal(db[i].codes)
        scales_a, scales_b = da[i].scales, db[i].scales
        assert (scales_a is None) == (scales_b is None)
        if scales_a is not None:
            assert scales_a.equal(scales_b)
    from safetensors import safe_open

    names = sorted(p.name for p in a.glob("shard-*"))
    assert names == sorted(p.name for p in b.glob("shard-*"))
    for name in names:  # same tensors and metadata (whose order safetensors does not keep)
        with safe_open(a / name, "pt") as fa, safe_open(b / name, "pt") as fb:
            assert fa.metadata() == fb.metadata() and set(fa.keys()) == set(fb.keys())
            for key in fa.keys():  # noqa: SIM118  (safe_open is no mapping)
                assert fa.get_tensor(key).equal(fb.get_tensor(key)), (name, key)


def test_ray_dataset_equals_the_local_one_through_a_killed_worker(ray_cluster, corpus, tmp_path):
    """Two actors (each a process importing torch and Ray Data, ~5.5 s of CPU) encode the
    files, and one of them is SIGKILLed in its second batch, files in flight: Ray restarts it
    and the batches it held run again. The files split between the actors must come back in
    input order (with ``preserve_order`` off, a two-actor run failed and a one-actor run
    passed), each as the local run encodes it, every file indexed once, every shard whole.

    The actor kills itself, once (a marker file: the cluster is this machine), rather than
    being killed from here: a kill from outside, timed on the index, could land when the actor
    was idle or the last file done. Ray retries an actor's tasks on that actor once it is
    restarted, so the run can end only through the restart.

    The model is the 48 kHz one's kind (stereo, normalised segments): its scales and two
    channels go through the actors' columns too."""
    codec = segmented_tiny()
    marker = tmp_path / "killed"

    class KilledInItsSecondBatch(type(codec)):  # local: Ray's cloudpickle sends it by value
        batches = 0

        def encode_batch(self, *args, **kwargs):
            self.batches += 1
            if self.batches == 2:
                try:
                    os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
                except FileExistsError:  # the other actor, or the restarted one: once is enough
                    pass
                else:
                    os.kill(os.getpid(), signal.SIGKILL)
            return super().encode_batch(*args, **kwargs)

    dying = copy.copy(codec)
    dying.__class__ = KilledInItsSecondBatch
    dying.marker = str(marker)
    on_ray = tokenize_dataset(
        dying,
        corpus,
        tmp_path / "ray",
        shard_bytes=1500,
        progress=False,
        batch_size=2,
        engine=RayEngine(num_workers=2),
    )
    assert marker.exists(), "no actor was killed"
    local = tokenize_dataset(
        codec, corpus, tmp_path / "local", shard_bytes=1500, progress=False, batch_size=2
    )
    assert on_ray.encoded == local.encoded == 19
    assert sorted(on_ray.failures) == sorted(local.failures) and len(local.failures) == 3
    assert len(local.shards) > 2
    lines = (tmp_path / "ray" / "index.jsonl").read_text().splitlines()
    paths = [json.loads(line)["path"] for line in lines]
    assert len(paths) == len(set(paths)), "a file indexed twice"
    same_datasets(tmp_path / "local", tmp_path / "ray")
    # What Ray wrote resumes: nothing added, the 3 failures tried again. Here, not on Ray:
    # tokenize_dataset picks the files to skip from the index before any engine sees them.
    again = tokenize_dataset(codec, corpus, tmp_path / "ray", progress=False)
    assert again.encoded == 0 and again.skipped == 19
    assert sorted(again.failures) == sorted(local.failures)
    # No usage-metrics thread left behind, polling a Prometheus this machine does not run.
    assert "data-usage-metrics-poller" not in {t.name for t in threading.enumerate()}


class _FakeDataset:
    """What ``RayEngine._run`` asks of Ray Data, recorded; its rows raise ``error``."""

    def __init__(self, items, error=None):
        self.items, self.error, self.kwargs = items, error, None

    def map_batches(self, fn, **kwargs):
        self.kwargs = kwargs
        return self

    def iter_rows(self):
        if self.error is not None:
            raise self.error
        yield from ()


def _fake_ray(error=None):
    from types import SimpleNamespace

    import ray

    made = []

    def from_items(items, **kwargs):
        made.append(_FakeDataset(items, error))
        return made[-1]

    context = SimpleNamespace(execution_options=SimpleNamespace())
    data = SimpleNamespace(
        from_items=from_items, DataContext=SimpleNamespace(get_current=lambda: context)
    )
    return SimpleNamespace(data=data, exceptions=ray.exceptions), made


def test_what_the_engine_sends_and_raises(tmp_path, monkeypatch):
    """Workers resolve relative paths in their own directory (every file was "no such file");
    a CUDA run moved the caller's codec to the CPU in place; a worker's RuntimeError came out
    as Ray's RayTaskError, which callers of the local engine don't catch."""
    import ray

    from audiotok.dataset.inputs import Source

    codec = tiny_codec()
    moved = []
    monkeypatch.setattr(type(codec), "to", lambda self, device: moved.append(self) or self)
    monkeypatch.chdir(tmp_path)
    todo = [Source("a.flac", Path("corpus/a.flac"), {})]
    fake, made = _fake_ray()
    list(RayEngine(device="cuda")._run(fake, codec, todo, 6.0, 2))
    assert made[0].items == [{"index": 0, "file": str(tmp_path / "corpus" / "a.flac")}]
    assert len(moved) == 1 and moved[0] is not codec, "the caller's codec stays where it is"
    assert made[0].kwargs["fn_constructor_kwargs"]["codec"] is not codec

    try:
        try:
            raise RuntimeError("CUDA out of memory")
        except RuntimeError as exc:
            raise ray.exceptions.UserCodeException("map_batches failed") from exc
    except ray.exceptions.UserCodeException as user:
        wrapped = ray.exceptions.RayTaskError("map", "traceback", user).as_instanceof_cause()
    fake, _ = _fake_ray(wrapped)
    with pytest.raises(RuntimeError, match=r"^CUDA out of memory$") as raised:
        list(RayEngine()._run(fake, codec, todo, 6.0, 2))
    assert not isinstance(raised.value, ray.exceptions.RayTaskError)
