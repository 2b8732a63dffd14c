"""Shared fixtures: real audio clips and the reference implementations."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

DATA = Path(__file__).parent / "data"


def pytest_configure(config: pytest.Config) -> None:
    # Under pytest-xdist (the README's `-n 2`) each worker takes its share of the cores: two
    # OpenMP pools of two threads on two cores spin against each other and both crawl.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    threads = max(1, min(2, (os.cpu_count() or 1) // workers))
    torch.set_num_threads(threads)
    # And so do the processes the tests start (servers, CLI runs, Ray's workers): a server
    # of two OpenMP threads beside two busy workers spins on a core it does not get.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


# The scopes of more than ~15 s under -n 2, slowest first (--durations=0 of an idle run on a
# 2-core VM, 2026-12-07): ray 117 s, onnx_backend 57, serve_faults 43, train_slices 36,
# parity 31, then 22-15 s each. The rest follow in xdist's order; none takes over 15 s.
SLOWEST_SCOPES = ("ray", *(f"tests/test_{name}.py" for name in (
    "onnx_backend", "serve_faults", "train_slices", "parity", "cli_compress", "serve", "ecdc",
    "train", "no_torch", "onnx_web", "streaming", "serve_web", "loading", "onnx_streaming",
)))  # fmt: skip


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent without it
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under ``-n N --dist loadscope`` (the README's test command): a module's tests go to one
    worker, so its module-scoped servers and models are built once, and so do all the tests
    of the ``*_ray.py`` modules, so the session's Ray cluster is started once, not per worker.
    (``--dist loadgroup`` marks do not take effect with xdist 3.8 under pytest 9.2: xdist
    renames the items' ``_nodeid``, which pytest no longer reads.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "ray" if module.endswith("_ray.py") else module

        def _assign_work_unit(self, node) -> None:
            # Longest first: xdist queues scopes by their number of tests, which put the Ray
            # scope (a cluster, then Ray Serve twice) and the other slow modules of few tests
            # last, where they ran alone at the end while the other worker was done.
            for scope in reversed(SLOWEST_SCOPES):
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return ModuleScheduling(config, log)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's too: what the workers are told
def pytest_configure_node(node) -> None:
    # (The workers' own --dist is "no".) Whether the Ray tests reach one worker as one run.
    node.workerinput["ray_tests_in_one_scope"] = node.config.getvalue("dist") == "loadscope"


@pytest.fixture(scope="session")
def encodec_package():
    """Meta's ``encodec`` package (installed with --no-deps, see README).

    Skipped where it isn't installed, except in CI, where its absence fails the run.
    """
    from reference_models import import_encodec

    try:
        return import_encodec()
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(
                "the encodec reference package is not installed (pip install --no-deps encodec)"
            )
        pytest.skip("the encodec reference package is not installed")


def load_clip(
    name: str, sample_rate: int, channels: int, seconds: float | None = None
) -> torch.Tensor:
    """A committed real-audio clip as ``[1, channels, T]`` at ``sample_rate``."""
    wav, rate = sf.read(DATA / name, dtype="float32", always_2d=True)
    if seconds is not None:
        wav = wav[: int(seconds * rate)]
    if rate != sample_rate:
        wav = soxr.resample(wav, rate, sample_rate)
    wav = wav.T
    if wav.shape[0] != channels:
        wav = wav.mean(0, keepdims=True) if channels == 1 else np.repeat(wav[:1], channels, 0)
    return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).unsqueeze(0)


@pytest.fixture(scope="session")
def speech_clip() -> Path:
    return DATA / "speech_24k.flac"


@pytest.fixture(scope="session")
def music_clip() -> Path:
    return DATA / "music_48k_stereo.flac"


def tiny_config(**overrides):
    """A small architecture for fast unit tests (24 kHz mono unless overridden)."""
    from audiotok.codec.config import CodecConfig

    fields = dict(
        sample_rate=24_000, channels=1, causal=True, dimension=8, n_filters=4, lstm=1,
        n_q=4, bins=16, target_bandwidths=(0.3, 0.6),
    )  # fmt: skip
    fields.update(overrides)
    return CodecConfig(**fields)


def tiny_codec(model_id: str = "tiny", seed: int = 0, **overrides):
    """A randomly initialised tiny codec behind the tokenizer interface."""
    from reference_models import codebooks_from_latents_

    from audiotok.codec.encodec import EncodecCodec
    from audiotok.codec.model import EncodecModel

    torch.manual_seed(seed)
    model = EncodecModel(tiny_config(**overrides)).eval()
    cfg = model.config
    with torch.no_grad():
        latent = model.encoder(torch.randn(1, cfg.channels, cfg.sample_rate // 4) * 0.1)
        if cfg.codebook_dim:  # factorised: entries among each stage's projections
            gen = torch.Generator().manual_seed(seed)
            for layer in model.quantizer.vq.layers:
                # Without its random bias a projection's angle follows the latent, not ties.
                layer.in_proj.bias.zero_()
                projected = layer.in_proj(latent)  # [1, d, F]
                frames = projected[0].t()
                picks = torch.randint(0, frames.shape[0], (cfg.bins,), generator=gen)
                noise = torch.randn(cfg.bins, cfg.codebook_dim, generator=gen) * frames.std()
                layer._codebook.embed.copy_(frames[picks] + 0.3 * noise)
                latent = latent - layer.decode(layer.lookup(projected))
            return EncodecCodec(model, model_id)
        codebooks = [layer._codebook.embed for layer in model.quantizer.vq.layers]
        codebooks_from_latents_(codebooks, latent, seed)
    return EncodecCodec(model, model_id)


def bare_tiny(**overrides):
    """The cheapest model to export: :func:`tiny_codec` not causal (no streaming graphs),
    padding by constants, without LSTM and residual units. For the tests of what an export
    writes and where, and of one kind of layer in its graphs (``overrides`` add it back)."""
    fields = dict(causal=False, pad_mode="constant", lstm=0, n_residual_layers=0)
    return tiny_codec(**{**fields, **overrides})


@pytest.fixture
def codec():
    return tiny_codec()


def segmented_tiny():
    """A tiny stereo model that normalises 0.1 s segments, like the 48 kHz one."""
    return tiny_codec(
        "tiny48", sample_rate=48_000, channels=2, causal=False, norm="time_group_norm",
        normalize=True, segment=0.1, target_bandwidths=(1.2, 2.4),
    )  # fmt: skip


@pytest.fixture
def segmented_codec():
    """:func:`segmented_tiny`."""
    return segmented_tiny()


_RAY: dict = {}  # "cluster": the session's local Ray cluster, while it runs


def _start_ray():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 3, "include_dashboard": False, "no_monitor": True,
                        "include_log_monitor": False},
    )  # fmt: skip
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    return cluster


def _stop_ray() -> None:
    cluster = _RAY.pop("cluster", None)
    if cluster is not None:
        import ray

        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def _ray_session():
    yield
    _stop_ray()


@pytest.fixture(scope="module")
def ray_cluster(_ray_session):
    """A local Ray cluster for the session's Ray tests: one node (raylet) with three CPUs;
    this process is its driver. Started by the first test that asks for it, stopped after the
    last test of the ``*_ray.py`` modules (see ``pytest_runtest_teardown``) or at the end.

    One node, not a head and worker nodes on loopback: the tests kill actor processes, never
    nodes, and every node here would share this machine's disk and paths, so extra raylets
    exercised only Ray's own object transfer, each at the price of its raylet, its dashboard
    and runtime-env agents and, under Serve, its own HTTP proxy (~16 s of CPU for two). No
    autoscaler monitor (nothing to scale) and no log monitor (``log_to_driver=False``: no one
    reads what it would forward)."""
    if "cluster" not in _RAY:
        _RAY["cluster"] = _start_ray()
    return _RAY["cluster"]


def _in_ray_module(item) -> bool:
    return item is not None and item.nodeid.split("::", 1)[0].endswith("_ray.py")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """Stops the Ray cluster once the last Ray test is done, not at the session's end: the
    Ray scope runs first on its xdist worker, and an idle cluster (GCS, raylet, agents, Ray
    Data's stats and autoscaling actors) took ~0.06 core for the rest of the run. Under other
    xdist modes a worker can't tell that no Ray test follows, and keeps it to the end; a Ray
    test after a stop would find ``ray_cluster`` start a new one."""
    yield
    if "cluster" not in _RAY or not _in_ray_module(item) or _in_ray_module(nextitem):
        return
    if hasattr(item.config, "workerinput"):  # an xdist worker knows its next item only
        last = item.config.workerinput.get("ray_tests_in_one_scope", False)
    else:
        items = item.session.items
        last = not any(map(_in_ray_module, items[items.index(item) + 1 :]))
    if last:
        _stop_ray()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A Debian ``redis-server`` on a free loopback port for the session (skipped where
    none is installed), no persistence; each test takes its own key prefix or database."""
    import shutil
    import socket
    import subprocess
    import time

    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder), "--databases", "64"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.02)
    yield f"redis://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def _run_folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """``name`` in the run's temporary folder, common to the pytest-xdist workers."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's basetemp is a child of the run's
        root = root.parent
    return root / name


@pytest.fixture(scope="session")
def default_onnx_cache(tmp_path_factory) -> Path:
    """An ``$AUDIOTOK_CACHE`` into which ``load_codec("audiotok_24khz", backend="onnx")``
    exported the packaged default, once for the whole run; under pytest-xdist the workers share
    it through a lock in their common temporary folder. Tests only read it (what that export
    left in the cache: tests/test_onnx_backend.py); those that test exporting export on their
    own."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from filelock import FileLock

    from audiotok.codec.load import onnx_export_folder

    cache = _run_folder(tmp_path_factory, "default-onnx-cache")
    with FileLock(f"{cache}.lock"), pytest.MonkeyPatch.context() as env:
        env.setenv("AUDIOTOK_CACHE", str(cache))
        onnx_export_folder("audiotok_24khz")  # exported the first time, found after
    return cache


@pytest.fixture(scope="session")
def default_onnx(default_onnx_cache) -> Path:
    """The packaged default's ONNX export (``model.json`` and its graphs), in
    :func:`default_onnx_cache`."""
    (folder,) = (p for p in (default_onnx_cache / "onnx").iterdir() if p.name != "sources")
    return folder


def _shared_export(tmp_path_factory, codec) -> Path:
    """``codec`` exported to ONNX once for the whole run (shared by the xdist workers as
    :func:`default_onnx_cache`), in a folder named by its weights' fingerprint: a process whose
    ``tiny_codec`` came out otherwise gets an export of its own weights."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from filelock import FileLock

    from audiotok.codec.onnx_export import export_onnx

    name = f"onnx-{codec.model_id}-{codec.fingerprint().hex()[:16]}"
    folder = _run_folder(tmp_path_factory, name)
    with FileLock(f"{folder}.lock"):
        if not (folder / "model.json").exists():
            export_onnx(codec, folder, overwrite=True)
    return folder


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """``tiny_codec()`` exported to ONNX (with its streaming graphs: it is causal), shared by
    the tests that read an export of it; those that change one change a copy."""
    return _shared_export(tmp_path_factory, tiny_codec())


@pytest.fixture(scope="session")
def segmented_onnx(tmp_path_factory) -> Path:
    """:func:`segmented_tiny` exported to ONNX (segment graphs), shared as :func:`tiny_onnx`."""
    return _shared_export(tmp_path_factory, segmented_tiny())


def check_stream_refusals(codec, bandwidth: float, audio: torch.Tensor) -> None:
    """What ``codec``'s stream is fed is checked as ``encode`` and ``decode`` check theirs
    (torch and ONNX Runtime streams alike); ``audio`` ``[1, 1, 4800]``."""
    from audiotok.audio.read import to_numpy
    from audiotok.errors import AudioError, TokensError

    with codec.streaming(1, bandwidth) as s:
        codes = s.encode(audio.double().numpy())  # float64 numpy, as encode takes it
        alone = codec.streaming(1, bandwidth).encode(audio)
        assert np.array_equal(to_numpy(codes), to_numpy(alone))
        for bad, message in [
            (audio[0], r"\[B=1, C=1, n\], not \[1, 4800\]"),  # [C, n], not [B, C, n]
            (audio.repeat(1, 2, 1), r"not \[1, 2, 4800\]"),  # stereo into a mono model
            ((audio * 32767).short(), "float samples, not (torch.)?int16"),
            (audio * float("nan"), "NaN or infinite"),
            (audio.double() * 1e45, "NaN or infinite"),  # beyond float32: inf once cast
        ]:
            with pytest.raises(AudioError, match=message):
                s.encode(bad)
        codes = torch.as_tensor(to_numpy(codes))
        for bad, message in [
            (codes + 5000, r"outside \[0, "),  # would index past the codebook
            (codes - codes - 1, r"outside \[0, "),  # ONNX's Gather would wrap it round
            (torch.zeros(1, 40, 2, dtype=torch.long), r"K<=\d+"),  # more codebooks than n_q
            (codes.float(), "integers"),
        ]:
            with pytest.raises(TokensError, match=message):
                s.decode(bad)
        s.decode(np.asarray(codes))  # numpy codes are taken too
        s.encode_end()
        with pytest.raises(RuntimeError, match="encode_end"):
            s.encode(audio)  # it would go on from the padded state
    with pytest.raises(RuntimeError, match="closed"):
        s.decode(codes)
    with pytest.raises(ValueError, match="at least 1"):
        codec.streaming(0, bandwidth)
