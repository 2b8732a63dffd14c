"""Dataset tokenization on Ray Data, on the session's local Ray cluster (``ray_cluster``).

A dataset made on Ray must equal the local one file for file, and a worker killed mid-run
must cost nothing: every file indexed once, every shard whole.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import DATA, tiny_codec

ray = pytest.importorskip("ray")

from audiotok.dataset.ray_engine import RayEngine  # noqa: E402
from audiotok.dataset.reader import TokenDataset  # noqa: E402
from audiotok.dataset.tokenize import tokenize_dataset  # noqa: E402

pytestmark = pytest.mark.ray
TIMEOUT = 120.0


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


def actor_pids(name: str) -> list[int]:
    """Processes of live Ray actors whose title names ``name`` (Ray sets ``ray::...``)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                title = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::") and name.encode() in title:
                pids.append(int(entry.name))
    return pids


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


@pytest.mark.parametrize("stereo", [False, True], ids=["24khz", "48khz-segmented"])
def test_ray_dataset_equals_the_local_one(ray_cluster, corpus, tmp_path, stereo):
    codec = tiny_codec()
    if stereo:  # the 48 kHz model's kind: stereo, normalised segments with their scales
        codec = tiny_codec("tiny48", sample_rate=48_000, channels=2, causal=False,
                           norm="time_group_norm", normalize=True, segment=0.1,
                           target_bandwidths=(1.2, 2.4))  # fmt: skip
    local = tokenize_dataset(
        codec, corpus, tmp_path / "local", shard_bytes=1500, progress=False, batch_size=2
    )
    on_ray = tokenize_dataset(
        codec,
        corpus,
        tmp_path / "ray",
        shard_bytes=1500,
        progress=False,
        batch_size=2,
        engine=RayEngine(num_workers=2),
    )
    assert on_ray.encoded == local.encoded == 19
    assert sorted(on_ray.failures) == sorted(local.failures) and len(local.failures) == 3
    assert len(local.shards) > 2
    same_datasets(tmp_path / "local", tmp_path / "ray")
    # Resuming on Ray adds nothing; the 3 failures are tried again on Ray. One actor here (each
    # is a process importing torch and Ray Data, ~5 s of CPU): which files a resumed run skips
    # does not depend on how many actors encode the rest. The first run keeps two: files split
    # between actors must come back in input order, each as the local run encodes it.
    again = tokenize_dataset(
        codec, corpus, tmp_path / "ray", progress=False, engine=RayEngine(num_workers=1)
    )
    assert again.encoded == 0 and again.skipped == 19
    # No usage-metrics thread left behind, polling a Prometheus this machine does not run.
    assert "data-usage-metrics-poller" not in {t.name for t in threading.enumerate()}


def test_a_worker_killed_mid_run_costs_nothing(ray_cluster, corpus, tmp_path):
    """SIGKILL an encoding actor's process while files are in flight: Ray restarts it, its
    batch runs again, and the dataset still equals the local one."""
    codec = tiny_codec()
    files = [f for f in corpus if f.suffix == ".flac"] * 3  # more work: time to kill
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and not killed:
            pids = actor_pids("EncodeFiles")
            index = tmp_path / "ray" / "index.jsonl"
            if pids and index.exists() and index.stat().st_size:  # some files done, not all
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    report = tokenize_dataset(
        codec,
        files,
        tmp_path / "ray",
        shard_bytes=3000,
        progress=False,
        engine=RayEngine(num_workers=2),
    )
    killer.join(TIMEOUT)
    assert killed, "no actor was killed: the run ended first"
    local = tokenize_dataset(codec, files, tmp_path / "local", shard_bytes=3000, progress=False)
    assert report.encoded == local.encoded == len(set(map(os.fspath, files)))
    lines = (tmp_path / "ray" / "index.jsonl").read_text().splitlines()
    paths = [json.loads(line)["path"] for line in lines]
    assert len(paths) == len(set(paths)), "a file indexed twice"
    same_datasets(tmp_path / "local", tmp_path / "ray")


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
