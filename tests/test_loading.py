"""``load_codec``: where a model's weights are looked for, and every way loading is refused.

Nothing here reaches the network: every cache points under ``tmp_path``, downloads are off
unless a test serves the weights from a ``file://`` URL, and a guard fails any test that
resolves a host name. Registry cards are replaced (with ``dataclasses.replace``) where a test
needs a hash that a randomly initialised model can match.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import load_clip, tiny_codec
from reference_models import (
    calibrate_codebooks_,
    encodec_package_model,
    hf_model,
    hf_run,
    save_encodec_th,
)

from audiotok import load_codec
from audiotok.errors import CheckpointError, ModelNotAvailableError
from audiotok.runtime.files import sha256_file
from audiotok.zoo import codec_cards as registry
from audiotok.zoo import codec_checkpoints, hub
from audiotok.zoo.codec_checkpoints import save_checkpoint
from audiotok.zoo.codec_convert import config_from_audiocraft, config_from_hf
from audiotok.zoo.interpolation import ConfigView

OFFICIAL_24 = "encodec_24khz-d7cc33bc.th"
POINTER_32 = {"pretrained": "facebook/encodec_32khz", "exported": True, "version": "1.3.0"}


# --- isolation -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def caches(tmp_path, monkeypatch):
    """Every cache under ``tmp_path``, downloads off, and no host name resolved."""
    root = tmp_path / "caches"
    paths = SimpleNamespace(
        audiotok=root / "audiotok",
        torch_hub=root / "torch" / "hub" / "checkpoints",
        hf=root / "hf" / "hub",
    )
    monkeypatch.setenv("AUDIOTOK_CACHE", str(paths.audiotok))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "xdg"))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(paths.hf))
    monkeypatch.setenv("AUDIOTOK_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads its cache folder once, when imported.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(paths.hf))

    real_getaddrinfo = socket.getaddrinfo

    def no_network(host, *args, **kwargs):
        if host:
            raise AssertionError(f"a test tried to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    return paths


def downloads_on(monkeypatch) -> None:
    monkeypatch.delenv("AUDIOTOK_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE")


def use_cards(monkeypatch, *cards: registry.ModelCard) -> None:
    """Puts ``cards`` in the registry in place of the cards of the same names."""
    by_name = {card.name: card for card in cards}
    new = tuple(by_name.get(card.name, card) for card in registry.CARDS)
    monkeypatch.setattr(registry, "CARDS", new)  # what find_card (hence load_codec) reads
    monkeypatch.setattr(codec_checkpoints, "CARDS", new)  # what recognise reads


def card_24khz(**source_changes) -> registry.ModelCard:
    """The encodec_24khz card with only its ``.th`` source, changed as given."""
    card = registry.find_card("encodec_24khz")
    return dataclasses.replace(
        card, sources=(dataclasses.replace(card.sources[0], **source_changes),)
    )


def one_line(message: str) -> str:
    assert message and message == message.strip(), repr(message)
    assert "\n" not in message and "\r" not in message, repr(message)
    return message


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def put_in_hf_cache(hf_cache: Path, repo_id: str, directory: Path) -> Path:
    """Lays out ``directory``'s files as a Hugging Face cache snapshot of ``repo_id``."""
    repo = hf_cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in directory.iterdir():
        shutil.copyfile(f, snapshot / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


# --- reference checkpoints, built once ---------------------------------------------------------


@pytest.fixture(scope="module")
def th24(tmp_path_factory, encodec_package) -> Path:
    """An ``encodec`` ``.th`` of the 24 kHz architecture, random weights, no official name."""
    model = encodec_package_model("encodec_24khz", seed=1)
    return save_encodec_th(model, tmp_path_factory.mktemp("th24"), "weights.th")


@pytest.fixture(scope="module")
def hf24(tmp_path_factory) -> SimpleNamespace:
    """A transformers 24 kHz model (codebooks set from 0.3 s of speech), saved as safetensors."""
    wav = load_clip("speech_24k.flac", 24_000, 1, seconds=0.3)
    model = hf_model("encodec_24khz", seed=2)
    calibrate_codebooks_(model, "hf", wav, "encodec_24khz")
    directory = tmp_path_factory.mktemp("hf24")
    model.save_pretrained(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    return SimpleNamespace(dir=directory, model=model, wav=wav)


def assert_holds(codec, th: Path) -> None:
    """The codec's weights are exactly the ``.th`` file's."""
    saved = torch.load(th, weights_only=True)
    ours = codec.model.state_dict()
    assert set(ours) == set(saved)
    for key, value in saved.items():
        assert torch.equal(ours[key], value.float()), key


# --- registry names: local caches ------------------------------------------------------------


def test_offline_without_weights_says_where_it_looked_and_what_to_do(caches):
    start = time.monotonic()
    with pytest.raises(ModelNotAvailableError) as info:
        load_codec("encodec_24khz")
    elapsed = time.monotonic() - start

    message = one_line(str(info.value))
    assert message.startswith("model encodec_24khz: weights not found locally")
    assert str(caches.audiotok / OFFICIAL_24) in message
    assert str(caches.torch_hub / OFFICIAL_24) in message
    assert "the Hugging Face cache (facebook/encodec_24khz)" in message
    assert "downloads are off (AUDIOTOK_OFFLINE" in message
    assert "`audiotok models fetch encodec_24khz`" in message
    assert "`-m encodec_24khz --checkpoint PATH`" in message
    assert registry.ENCODEC_URL + OFFICIAL_24 in message
    assert elapsed < 3, f"an offline miss took {elapsed:.1f} s"
    assert files_in(caches.audiotok) == [], "nothing may be written to the cache"


DOWNLOADED = [c.name for c in registry.CARDS if not c.sources[0].packaged]


@pytest.mark.parametrize("name", DOWNLOADED)
def test_offline_miss_names_each_model(name):
    with pytest.raises(ModelNotAvailableError) as info:
        load_codec(name)

    message = one_line(str(info.value))
    assert message.startswith(f"model {name}: ")
    assert f"`audiotok models fetch {name}`" in message
    assert f"`-m {name} --checkpoint PATH`" in message


@pytest.mark.parametrize("where", ["audiotok", "torch_hub"])
def test_registry_model_found_in_a_cache(where, caches, th24, monkeypatch):
    cached = getattr(caches, where) / OFFICIAL_24
    cached.parent.mkdir(parents=True)
    shutil.copyfile(th24, cached)
    card = card_24khz(sha256=sha256_file(cached))
    use_cards(monkeypatch, card)

    assert hub.find_local(card) == (card.sources[0], cached)
    codec = load_codec("encodec_24khz")

    assert codec.model_id == "encodec_24khz"
    assert codec.default_bandwidth == 6.0
    assert_holds(codec, th24)


def test_audiotok_cache_is_searched_before_torch_hub(caches, th24, monkeypatch):
    caches.audiotok.mkdir(parents=True)
    caches.torch_hub.mkdir(parents=True)
    shutil.copyfile(th24, caches.audiotok / OFFICIAL_24)
    (caches.torch_hub / OFFICIAL_24).write_bytes(b"a damaged download")
    card = card_24khz(sha256=sha256_file(th24))
    use_cards(monkeypatch, card)

    assert hub.fetch(card) == (card.sources[0], caches.audiotok / OFFICIAL_24)
    assert_holds(load_codec("encodec_24khz"), th24)


@pytest.mark.parametrize("where", ["audiotok", "torch_hub"])
def test_cached_file_with_wrong_hash_is_refused_as_damaged(where, caches):
    # The registry's own card: its hash prefix d7cc33bc can't match these bytes.
    cached = getattr(caches, where) / OFFICIAL_24
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x00" * 4096)

    with pytest.raises(CheckpointError) as info:
        load_codec("encodec_24khz")

    message = one_line(str(info.value))
    assert message.startswith(f"{cached}: SHA-256 ")
    assert "does not match the expected d7cc33bc" in message
    assert "damaged" in message
    assert "delete it and fetch it again" in message
    assert cached.read_bytes() == b"\x00" * 4096, "a file the user owns is not deleted"


def test_registry_model_found_in_hugging_face_cache(caches, hf24):
    put_in_hf_cache(caches.hf, "facebook/encodec_24khz", hf24.dir)

    codec = load_codec("encodec_24khz")

    assert codec.model_id == "encodec_24khz"
    codes = codec.encode(hf24.wav, bandwidth=24.0).codes
    assert torch.equal(codes, hf_run(hf24.model, hf24.wav, 24.0)[0])


# --- registry names: downloads ---------------------------------------------------------------


def test_download_is_verified_and_kept_in_the_cache(caches, th24, tmp_path, monkeypatch):
    remote = tmp_path / "remote" / OFFICIAL_24
    remote.parent.mkdir()
    shutil.copyfile(th24, remote)
    card = card_24khz(url=remote.as_uri(), sha256=sha256_file(remote))
    use_cards(monkeypatch, card)
    downloads_on(monkeypatch)

    source, path = hub.fetch(card, progress=False)

    assert (source, path) == (card.sources[0], caches.audiotok / OFFICIAL_24)
    assert path.read_bytes() == remote.read_bytes()
    assert files_in(caches.audiotok) == [OFFICIAL_24], "no temporary file may be left"
    assert_holds(load_codec("encodec_24khz"), th24)


def test_download_with_wrong_hash_leaves_nothing(caches, tmp_path, monkeypatch):
    remote = tmp_path / "remote" / OFFICIAL_24
    remote.parent.mkdir()
    remote.write_bytes(b"not the official weights" * 100)
    card = card_24khz(url=remote.as_uri(), sha256="0" * 64)
    downloads_on(monkeypatch)

    # A ModelNotAvailableError naming the URL (it was a CheckpointError naming a temporary file
    # already deleted, and the card's next source was never tried).
    with pytest.raises(ModelNotAvailableError) as info:
        hub.fetch(card, progress=False)

    message = one_line(str(info.value))
    assert f"{remote.as_uri()}: the downloaded file is not the official one" in message
    assert "does not start with " + "0" * 64 in message
    assert files_in(caches.audiotok) == [], "neither the file nor a temporary file may remain"


@pytest.fixture
def loopback_server(monkeypatch):
    """An HTTP server on 127.0.0.1 whose answers the test sets: ``(status, headers, body)``."""
    import _socket
    import http.server
    import threading

    answer = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, headers, body = answer["reply"]
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)  # then closes: a body shorter than announced is cut off

        def log_message(self, *args):
            pass

    def loopback_only(host, *args, **kwargs):
        assert host in ("127.0.0.1", None), host
        return _socket.getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    answer["url"] = f"http://127.0.0.1:{server.server_address[1]}/{OFFICIAL_24}"
    yield answer
    server.shutdown()
    server.server_close()


def test_a_download_cut_off_is_reported_as_such(caches, loopback_server, th24, monkeypatch):
    """urllib does not notice a connection closed early: the hash check blamed the file."""
    data = th24.read_bytes()
    card = card_24khz(url=loopback_server["url"], sha256=hashlib.sha256(data).hexdigest())
    downloads_on(monkeypatch)
    loopback_server["reply"] = (200, {"Content-Length": str(len(data))}, data[: len(data) // 2])
    with pytest.raises(ModelNotAvailableError, match=rf"connection closed after {len(data) // 2} "):
        hub.fetch(card, progress=False)
    assert files_in(caches.audiotok) == []
    loopback_server["reply"] = (200, {"Content-Length": str(len(data))}, data)
    _, path = hub.fetch(card, progress=False)
    # The umask's permissions: mkstemp's 0600 hid the file from a shared cache's other users.
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_damaged_copies_are_passed_over_and_downloaded_again(caches, loopback_server, th24,
                                                            monkeypatch):  # fmt: skip
    data = th24.read_bytes()
    card = card_24khz(url=loopback_server["url"], sha256=hashlib.sha256(data).hexdigest())
    use_cards(monkeypatch, card)
    caches.audiotok.mkdir(parents=True)
    caches.torch_hub.mkdir(parents=True)
    (caches.audiotok / OFFICIAL_24).write_bytes(b"a download cut short")
    shutil.copyfile(th24, caches.torch_hub / OFFICIAL_24)
    assert hub.find_local(card) == (card.sources[0], caches.torch_hub / OFFICIAL_24)
    (caches.torch_hub / OFFICIAL_24).unlink()
    with pytest.raises(CheckpointError, match="does not match"):  # offline: said, not fixed
        hub.fetch(card, progress=False)
    downloads_on(monkeypatch)
    stale = caches.audiotok / f".{OFFICIAL_24}.dead.part"  # a download killed a day ago
    stale.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    loopback_server["reply"] = (200, {"Content-Length": str(len(data))}, data)
    assert hub.fetch(card, progress=False)[1].read_bytes() == data  # over the damaged one
    assert files_in(caches.audiotok) == [OFFICIAL_24]


def test_names_resolved_by_a_proxy_are_not_checked_here(monkeypatch):
    """On networks reached only through a proxy this machine resolves no name: the DNS check
    refused every download there."""

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(ModelNotAvailableError, match=r"dl\.internal unreachable"):
        hub._check_reachable("https://dl.internal/w.th")
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    hub._check_reachable("https://dl.internal/w.th")


def test_a_tilde_in_xdg_cache_home_is_the_home_folder(monkeypatch):
    monkeypatch.delenv("AUDIOTOK_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "~/cache")
    assert hub.cache_dir() == Path.home() / "cache" / "audiotok"


def test_a_url_without_host_is_not_unreachable(tmp_path):
    """What the two tests above trip on, in isolation."""
    hub._check_reachable((tmp_path / OFFICIAL_24).as_uri())


# --- names and paths that are not models -----------------------------------------------------


@pytest.mark.parametrize("source", ["encodec_99khz", "missing/model.th"])
def test_unknown_name_or_missing_path(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotAvailableError) as info:
        load_codec(source)

    message = one_line(str(info.value))
    assert message.startswith(f"unknown model {source!r}")
    for name in registry.card_names():
        assert name in message
    assert "nor an existing file or directory" in message


def test_checkpoint_goes_only_with_a_registry_name(tmp_path):
    card = save_checkpoint(tiny_codec().model, tmp_path / "tiny.json", name="tiny")

    with pytest.raises(CheckpointError) as info:
        load_codec(card, checkpoint=card)

    assert one_line(str(info.value)) == (
        "a checkpoint (--checkpoint) goes with a registry model name, not with a path"
    )


# --- unreadable and unsafe files -------------------------------------------------------------


class OpensAFile:
    """A pickle payload: unpickling it opens (creates) ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    path = tmp_path / "model.th"
    path.write_bytes(bytes(range(256)) * 16)

    with pytest.raises(CheckpointError) as info:
        load_codec(path)

    message = one_line(str(info.value))
    assert message.startswith(f"{path}: not a readable PyTorch checkpoint (")
    assert "()" not in message and "weights_only" not in message, "a reason, and no unsafe advice"


def test_pickled_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "model.th"
    torch.save({"weight": torch.zeros(2), "payload": OpensAFile(marker)}, path)

    with pytest.raises(CheckpointError) as info:
        load_codec(path)

    assert one_line(str(info.value)).startswith(f"{path}: not a readable PyTorch checkpoint (")
    assert not marker.exists(), "the pickle's payload was executed"
    # The payload is live: an unsafe load does run it.
    torch.load(path, weights_only=False)["payload"].close()
    assert marker.exists()


def test_pickled_non_tensor_object_is_refused(tmp_path):
    path = tmp_path / "model.th"
    state = collections.OrderedDict(weight=torch.zeros(2), saved=datetime.datetime(2024, 1, 1))
    torch.save(state, path)

    with pytest.raises(CheckpointError) as info:
        load_codec(path)

    assert one_line(str(info.value)).startswith(f"{path}: not a readable PyTorch checkpoint (")


def test_refused_pickle_message_gives_the_reason_and_no_terminal_codes(tmp_path):
    path = tmp_path / "model.th"
    torch.save({"weight": torch.zeros(2), "saved": datetime.datetime(2024, 1, 1)}, path)

    with pytest.raises(CheckpointError) as info:
        load_codec(path)

    message = one_line(str(info.value))
    assert "\x1b" not in message
    assert "datetime" in message
    assert "weights_only` set to `False" not in message


@pytest.mark.parametrize(
    ("content", "reason"),
    [({"weight": 1}, "entry 'weight' is not a tensor"), ({}, "holds no state dict")],
    ids=["non-tensor-entry", "empty"],
)
def test_state_dict_that_is_not_one(content, reason, tmp_path):
    path = tmp_path / "model.th"
    torch.save(content, path)

    with pytest.raises(CheckpointError) as info:
        load_codec(path)

    assert one_line(str(info.value)) == f"{path}: {reason}"


@pytest.mark.parametrize("cards", [0, 2])
def test_directory_without_a_checkpoint(cards, tmp_path):
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "README.txt").write_text("weights to follow")
    for i in range(cards):
        (directory / f"card{i}.json").write_text("{}")

    with pytest.raises(CheckpointError) as info:
        load_codec(directory)

    message = one_line(str(info.value))
    assert message.startswith(f"{directory}: a directory without config.json (transformers)")
    assert "compression_state_dict.bin" in message


def test_safetensors_without_card(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_codec().model.state_dict().items()}, path)

    with pytest.raises(CheckpointError) as info:
        load_codec(path)

    assert one_line(str(info.value)) == (
        f"{path}: safetensors weights without their .json card or config.json"
    )


def test_a_card_name_with_a_dot_keeps_it(tmp_path):
    card = save_checkpoint(tiny_codec().model, tmp_path / "model.v2", name="tiny")
    assert card.name == "model.v2.json" and (tmp_path / "model.v2.safetensors").is_file()
    by_weights = save_checkpoint(tiny_codec().model, tmp_path / "w.safetensors", name="tiny")
    assert by_weights.name == "w.json"


def test_audiotok_card_with_missing_weights(tmp_path):
    card = save_checkpoint(tiny_codec().model, tmp_path / "tiny.json", name="tiny")
    card.with_suffix(".safetensors").unlink()

    with pytest.raises(CheckpointError) as info:
        load_codec(card)

    assert one_line(str(info.value)) == f"{card}: its weights file tiny.safetensors is missing"


def test_audiotok_card_of_a_newer_version(tmp_path):
    card = save_checkpoint(tiny_codec().model, tmp_path / "tiny.json", name="tiny")
    fields = json.loads(card.read_text())
    card.write_text(json.dumps({**fields, "version": fields["version"] + 1}))

    with pytest.raises(CheckpointError) as info:
        load_codec(card)

    message = one_line(str(info.value))
    assert message == f"{card}: card version 2 is newer than this audiotok reads"


def test_audiotok_card_round_trip_keeps_name_and_default(tmp_path):
    codec = tiny_codec(seed=5)
    card = save_checkpoint(codec.model, tmp_path / "m.json", name="mine", default_bandwidth=0.6)
    wav = load_clip("speech_24k.flac", 24_000, 1, seconds=0.5)

    for source in (card, card.with_suffix(".safetensors"), tmp_path):
        loaded = load_codec(source)
        assert (loaded.model_id, loaded.default_bandwidth) == ("mine", 0.6)
        assert torch.equal(loaded.encode(wav).codes, codec.encode(wav, bandwidth=0.6).codes)


# --- architectures ---------------------------------------------------------------------------


def test_architecture_recognised_from_tensor_shapes(th24, tmp_path):
    mine = tmp_path / "mine.th"
    shutil.copyfile(th24, mine)

    codec = load_codec(mine)

    assert codec.model_id == "encodec_24khz"
    assert codec.default_bandwidth == 6.0
    assert codec.bandwidths == (1.5, 3.0, 6.0, 12.0, 24.0)
    assert_holds(codec, th24)


def test_unrecognised_architecture_asks_for_a_name(tmp_path):
    path = tmp_path / "tiny.th"
    torch.save(tiny_codec().model.state_dict(), path)

    with pytest.raises(CheckpointError) as info:
        load_codec(path)

    message = one_line(str(info.value))
    assert message.startswith(f"{path}: architecture not recognised from its name or tensor shapes")
    assert f"`-m NAME --checkpoint {path}`" in message
    assert ", ".join(registry.card_names()) in message


def test_checkpoint_of_another_registry_architecture(tmp_path, encodec_package):
    path = save_encodec_th(encodec_package_model("encodec_48khz"), tmp_path, "other.th")

    with pytest.raises(CheckpointError) as info:
        load_codec("encodec_24khz", checkpoint=path)

    message = one_line(str(info.value))
    assert message.startswith(f"{path}: weights don't fit encodec_24khz (")
    assert message.endswith("; it looks like encodec_48khz")


def test_checkpoint_of_an_unknown_architecture_for_a_name(tmp_path):
    path = tmp_path / "tiny.th"
    torch.save(tiny_codec().model.state_dict(), path)

    with pytest.raises(CheckpointError) as info:
        load_codec("encodec_24khz", checkpoint=path)

    message = one_line(str(info.value))
    assert message.startswith(f"{path}: weights don't fit encodec_24khz (")
    assert "wrong shape" in message
    assert "looks like" not in message


# --- audiocraft pointers ---------------------------------------------------------------------


def test_audiocraft_pointer_resolves_to_the_registry_model(tmp_path):
    path = tmp_path / "compression_state_dict.bin"
    torch.save(POINTER_32, path)

    for source in (path, tmp_path):
        with pytest.raises(ModelNotAvailableError) as info:
            load_codec(source)
        message = one_line(str(info.value))
        assert message.startswith("model encodec_32khz: weights not found locally")
        assert "the Hugging Face cache (facebook/encodec_32khz)" in message


def test_audiocraft_pointer_loads_the_cached_model(caches, tmp_path):
    model = hf_model("encodec_32khz", seed=4)
    model.save_pretrained(tmp_path / "hf32")
    put_in_hf_cache(caches.hf, "facebook/encodec_32khz", tmp_path / "hf32")
    path = tmp_path / "compression_state_dict.bin"
    torch.save(POINTER_32, path)

    codec = load_codec(path)

    assert codec.model_id == "encodec_32khz"
    assert (codec.sample_rate, codec.cardinality, codec.bandwidths) == (32_000, 2048, (2.2,))
    assert torch.equal(
        codec.model.quantizer.vq.layers[3]._codebook.embed,
        model.quantizer.layers[3].codebook.embed,
    )


def test_audiocraft_pointer_to_another_model_is_refused(tmp_path):
    path = tmp_path / "compression_state_dict.bin"
    torch.save(POINTER_32, path)

    with pytest.raises(CheckpointError) as info:
        load_codec("encodec_16khz", checkpoint=path)

    assert one_line(str(info.value)) == (
        f"{path}: refers to model 'facebook/encodec_32khz', not encodec_16khz"
    )


def test_audiocraft_pointer_to_an_unknown_model_names_the_file(tmp_path):
    path = tmp_path / "compression_state_dict.bin"
    torch.save({"pretrained": "facebook/musicgen-melody"}, path)

    with pytest.raises(CheckpointError) as info:
        load_codec(path)

    assert one_line(str(info.value)) == (
        f"{path}: refers to model 'facebook/musicgen-melody', which is not in the registry "
        f"({', '.join(registry.card_names())})"
    )


def test_audiocraft_pointer_to_itself_is_not_followed(tmp_path):
    path = tmp_path / "self.bin"
    torch.save({"pretrained": str(path)}, path)

    with pytest.raises(CheckpointError, match="which is not in the registry"):
        load_codec(path)


# --- transformers directories ----------------------------------------------------------------


def test_transformers_pytorch_model_bin_loads_like_safetensors(hf24, tmp_path):
    # transformers 5 always writes safetensors; a .bin is its state dict under torch.save.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copyfile(hf24.dir / "config.json", bin_dir / "config.json")
    torch.save(hf24.model.state_dict(), bin_dir / "pytorch_model.bin")

    from_bin, from_safetensors = load_codec(bin_dir), load_codec(hf24.dir)

    assert from_bin.model_id == from_safetensors.model_id == "encodec_24khz"
    for bandwidth in (1.5, 24.0):
        codes = from_bin.encode(hf24.wav, bandwidth=bandwidth).codes
        assert torch.equal(codes, from_safetensors.encode(hf24.wav, bandwidth=bandwidth).codes)
        assert torch.equal(codes, hf_run(hf24.model, hf24.wav, bandwidth)[0])
    assert codes[:, 0].unique().numel() > 4, "degenerate codes make a weak test"


def test_transformers_config_of_another_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mimi"}))

    with pytest.raises(CheckpointError) as info:
        load_codec(tmp_path)

    assert (
        one_line(str(info.value))
        == f"{tmp_path}: config.json describes a 'mimi' model, not encodec"
    )


def test_transformers_directory_without_weights(tmp_path, hf24):
    shutil.copyfile(hf24.dir / "config.json", tmp_path / "config.json")

    with pytest.raises(CheckpointError) as info:
        load_codec(tmp_path)

    assert one_line(str(info.value)) == (
        f"{tmp_path}: has config.json but no model.safetensors or pytorch_model.bin"
    )


# --- configuration translation ---------------------------------------------------------------


def test_config_from_hf_refuses_other_model_types():
    with pytest.raises(
        CheckpointError, match=r"^config.json describes a 'dac' model, not encodec$"
    ):
        config_from_hf({"model_type": "dac", "sampling_rate": 44_100})


def test_resolve_interpolations():
    root = {
        "a": {"b": {"c": 3}, "name": "x"},
        "whole": "${a.b.c}",
        "chained": "${whole}",
        "embedded": "${a.name}-${a.b.c}kHz",
        "listed": ["${a.b}", 1],
        "plain": "$ {not} one",
    }

    out = ConfigView(root).to_dict()

    assert out["whole"] == 3 and isinstance(out["whole"], int)
    assert out["chained"] == 3
    assert out["embedded"] == "x-3kHz"
    assert out["listed"] == [{"c": 3}, 1]
    assert out["plain"] == "$ {not} one"
    assert root["whole"] == "${a.b.c}", "the input is not modified"


@pytest.mark.parametrize(
    ("root", "pattern"),
    [
        ({"a": {"b": 1}, "x": "${a.c}"}, r"unresolvable interpolation \$\{a\.c\}$"),
        ({"a": 1, "x": "${a.b}"}, r"unresolvable interpolation \$\{a\.b\}$"),
        ({"x": "${y}", "y": "${x}"}, r"interpolation cycle$"),
        ({"x": "a${x}"}, r"interpolation cycle$"),
    ],
    ids=["missing-key", "through-a-scalar", "cycle", "self-embedding"],
)
def test_resolve_interpolations_refuses(root, pattern):
    with pytest.raises(CheckpointError, match=pattern) as info:
        ConfigView(root).to_dict()
    one_line(str(info.value))


def test_interpolations_resolve_only_where_read():
    """As OmegaConf does: a reference is resolved when its value is read, relative ones from
    the node that holds them, and a resolver (``${oc.env:...}``) only fails if read."""
    root = {
        "dora": {"dir": "${oc.env:AUDIOCRAFT_DORA_DIR}", "missing": "${no.such.key}"},
        "seanet": {"n_filters": 32, "width": "${.n_filters}", "deeper": {"up": "${..n_filters}"}},
        "list": ["${seanet.width}", {"x": "${list.0}"}],
    }
    cfg = ConfigView(root)

    assert cfg.select("seanet.width") == 32
    assert cfg.select("seanet.deeper.up") == 32
    assert cfg["list"][0] == 32 and cfg["list"][1]["x"] == 32
    assert cfg.select("seanet.nothing", None) is None
    with pytest.raises(CheckpointError, match=r"^audiocraft config: no seanet\.nothing$"):
        cfg.select("seanet.nothing")
    with pytest.raises(CheckpointError, match=r"oc\.env:AUDIOCRAFT_DORA_DIR.*at dora\.dir"):
        cfg.select("dora.dir")
    assert root["seanet"]["width"] == "${.n_filters}", "the input is not modified"


AUDIOGEN_YAML = """\
sample_rate: 16000
channels: 1
model_suffix: odec
compression_model: enc${model_suffix}
encodec:
  autoencoder: seanet
  quantizer: rvq
  sample_rate: ${sample_rate}
  channels: ${channels}
  causal: false
seanet:
  channels: ${encodec.channels}
  causal: ${encodec.causal}
  n_filters: ${rvq.width}
  n_residual_layers: 1
  ratios: [8, 5, 4, 2]
  norm: weight_norm
  pad_mode: constant
  true_skip: true
  lstm: 2
  decoder:
    trim_right_ratio: 1.0
rvq:
  width: 64
  n_q: 4
  bins: 2048
"""


def test_config_from_audiocraft_resolves_interpolations():
    assert config_from_audiocraft(AUDIOGEN_YAML) == registry.ENCODEC_16KHZ


def test_config_from_audiocraft_ignores_references_it_does_not_read():
    """audiocraft's saved configs name the training machine's environment (``dora.dir``,
    ``${oc.env:USER}``): harmless, since only the model's own values are read."""
    yaml = AUDIOGEN_YAML + "dora:\n  dir: ${oc.env:AUDIOCRAFT_DORA_DIR}\nuser: ${oc.env:USER}\n"
    assert config_from_audiocraft(yaml) == registry.ENCODEC_16KHZ


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        ("${sample_rate}", "${rates.sample}", r"unresolvable interpolation \$\{rates\.sample\}$"),
        ("width: 64", "width: ${seanet.n_filters}", r"interpolation cycle$"),
        ("enc${model_suffix}", "${model_suffix}", r"compression model 'odec' is not supported"),
    ],
    ids=["missing", "cycle", "not-encodec"],
)
def test_config_from_audiocraft_refuses(old, new, pattern):
    assert old in AUDIOGEN_YAML
    with pytest.raises(CheckpointError, match=pattern) as info:
        config_from_audiocraft(AUDIOGEN_YAML.replace(old, new))
    one_line(str(info.value))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"weights": None}, "'weights' must be a file name beside the card, not None"),
        ({"weights": "sub/m.safetensors"}, "not 'sub/m.safetensors'"),
        ({"weights": ".."}, "not '..'"),
        ({"version": "1.0"}, "version must be a whole number, not '1.0'"),
        ({"version": 99}, "version 99 is newer than this audiotok reads"),
        ({"default_bandwidth": "0.6"}, "default_bandwidth '0.6' is not one of its bandwidths"),
    ],
)
def test_hand_edited_cards_are_one_line_errors(tmp_path, change, message):
    """A null or nested weights name, or a version string, raised ValueError or TypeError."""
    card = save_checkpoint(tiny_codec().model, tmp_path / "c.json", name="c")
    data = json.loads(card.read_text())
    card.write_text(json.dumps({**data, **change}))
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_codec(card)


def test_a_folder_named_like_an_alias_is_that_folder(caches, hf24, monkeypatch):
    """``hf download facebook/encodec_24khz --local-dir facebook/encodec_24khz`` makes a folder
    named like the alias: it was ignored for the registry (weights not found locally)."""
    local = caches.audiotok.parent / "facebook" / "encodec_24khz"
    shutil.copytree(hf24.dir, local)
    monkeypatch.chdir(local.parent.parent)
    codec = load_codec("facebook/encodec_24khz")
    assert torch.equal(codec.encode(hf24.wav, bandwidth=24.0).codes,
                       hf_run(hf24.model, hf24.wav, 24.0)[0])  # fmt: skip
    with pytest.raises(ModelNotAvailableError, match="give the name as a string"):
        load_codec(Path("encodec_24khz"))
