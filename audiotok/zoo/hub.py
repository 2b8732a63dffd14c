"""Finding a registry model's weights: the local caches first, then a download.

Where we look, in order, for each of a card's sources:

* direct URLs (the ``encodec`` ``.th`` files): ``$AUDIOTOK_CACHE`` (default
  ``~/.cache/audiotok``), then torch hub's checkpoint folder, where the ``encodec`` package
  keeps them, so its users' downloads are reused;
* Hugging Face repositories: the Hugging Face cache (``$HF_HOME``, ``$HF_HUB_CACHE``).

A file found in a cache or downloaded is checked against the card's SHA-256 when one is
known; a download is written to a temporary file and renamed only once verified. With
``AUDIOTOK_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import socket
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from ..errors import CheckpointError, ModelNotAvailableError
from ..runtime.console import stderr_is_terminal
from .codec_cards import PACKAGED_DIR, PRIORS_KEY, WeightsSource


class HasSources(Protocol):
    """Anything with a name and weight sources: a codec's ModelCard, an entropy LM's card."""

    name: str
    sources: tuple[WeightsSource, ...]


DOWNLOAD_TIMEOUT_S = 60


def cache_dir() -> Path:
    """audiotok's download folder: ``$AUDIOTOK_CACHE``, else ``$XDG_CACHE_HOME/audiotok``."""
    if os.environ.get("AUDIOTOK_CACHE"):
        return Path(os.environ["AUDIOTOK_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "audiotok"  # ~ as torch and huggingface_hub expand it


def torch_hub_checkpoints() -> Path:
    """torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), without importing torch."""
    base = (
        os.environ.get("TORCH_HOME")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch"
    )
    return Path(base).expanduser() / "hub" / "checkpoints"


def is_offline() -> bool:
    """True when downloads are switched off by the environment."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("AUDIOTOK_OFFLINE", "HF_HUB_OFFLINE")
    )


def _check_sha256(path: Path, expected: str | None) -> None:
    if not expected:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(expected.lower()):
        raise CheckpointError(
            f"{path}: SHA-256 {digest.hexdigest()[:16]}... does not match the expected {expected}; "
            "the file is damaged or not the official one: delete it and fetch it again"
        )


def _url_candidates(source: WeightsSource) -> list[Path]:
    return [cache_dir() / source.filename, torch_hub_checkpoints() / source.filename]


def _local(source: WeightsSource) -> Path | None:
    """The checkpoint path (a file, or a directory for ``hf``) if the source is cached."""
    if source.packaged:
        path = PACKAGED_DIR / source.filenames[0]
        return path if path.is_file() else None
    if source.url:
        unusable: CheckpointError | None = None
        for path in _url_candidates(source):
            if path.is_file():
                try:  # a damaged or unreadable copy must not hide a good one in the next place
                    _check_sha256(path, source.sha256)
                except OSError as exc:  # another user's 0600 file in a shared cache
                    unusable = unusable or CheckpointError(
                        f"{path}: can't read it ({exc.strerror})"
                    )
                    continue
                except CheckpointError as exc:
                    unusable = unusable or exc
                    continue
                return path
        if unusable is not None:
            raise unusable
        return None
    return _hf_download(source, local_only=True)


def _check_reachable(url: str) -> None:
    """Fails fast when ``url``'s host can't be resolved, instead of retrying for seconds.

    URLs without a host (``file://``) need no network and always pass.
    """
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(
        parts.hostname
    ):
        return  # the proxy resolves the name, not this machine (HPC and corporate networks)
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        socket.getaddrinfo(parts.hostname, port)
    except OSError as exc:
        reason = exc.strerror or exc
        raise ModelNotAvailableError(f"{parts.hostname} unreachable ({reason})") from None


def check_hub_reachable() -> None:
    """Fails fast, in one line, when the Hugging Face Hub (``HF_ENDPOINT``) can't be reached."""
    _check_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))


def _hf_download(source: WeightsSource, local_only: bool) -> Path | None:
    from huggingface_hub import hf_hub_download

    if not local_only:
        check_hub_reachable()
    paths = []
    for filename in source.filenames:
        try:
            paths.append(
                Path(hf_hub_download(source.repo_id, filename, local_files_only=local_only))
            )
        except Exception as exc:  # offline, missing, HTTP: the hub has many error types
            if local_only:
                return None
            raise ModelNotAvailableError(
                f"{source.describe()}: {type(exc).__name__}: {exc}"
            ) from None
    weights = paths[0]
    _check_sha256(weights, source.sha256)
    return weights.parent if source.format == "hf" else weights


STALE_PART_SECONDS = 24 * 3600
"""A partial download this old is one whose process died (kill -9, a reboot): removed."""


def _download_url(source: WeightsSource, progress: bool) -> Path:
    import http.client

    _check_reachable(source.url)
    target = cache_dir() / source.filename
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.*.part"):
            with contextlib.suppress(OSError):
                if time.time() - stale.stat().st_mtime > STALE_PART_SECONDS:
                    stale.unlink()
        tmp = str(target.parent / f".{target.name}.{secrets.token_hex(4)}.part")
        # O_EXCL, mode 0o666: the umask's permissions (mkstemp's 0600 hid a shared cache's files)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise ModelNotAvailableError(
            f"can't write to the cache {target.parent} ({exc.strerror or exc}); set "
            "AUDIOTOK_CACHE to a writable folder"
        ) from None
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(source.url, timeout=DOWNLOAD_TIMEOUT_S) as response,
        ):
            total = int(response.headers.get("Content-Length") or 0) or None
            from tqdm import tqdm

            bar_on = progress and stderr_is_terminal()
            if progress and not bar_on:  # a log gets one line, not a bar's redraws
                print(f"{target.name}: downloading {source.url}", file=sys.stderr)
            got = 0
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=target.name, disable=not bar_on
            ) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    got += len(block)
                    bar.update(len(block))
        if total is not None and got != total:  # urllib does not notice a closed connection
            raise ModelNotAvailableError(
                f"{source.url}: connection closed after {got} of {total} bytes; try again"
            )
        try:
            _check_sha256(Path(tmp), source.sha256)
        except CheckpointError:  # a ModelNotAvailableError: fetch tries the next source
            raise ModelNotAvailableError(
                f"{source.url}: the downloaded file is not the official one (its SHA-256 does "
                f"not start with {source.sha256}: a proxy's or captive portal's page?)"
            ) from None
        os.replace(tmp, target)
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, a full disk
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            raise ModelNotAvailableError(
                f"{target.parent}: no space left for {target.name} ({source.url}); free some "
                "or set AUDIOTOK_CACHE to another disk"
            ) from None
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        raise ModelNotAvailableError(f"{source.url}: {reason}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def registry_lookup(source: Any) -> str | None:
    """The name to look up in the registry for a model given as ``source``, or None (a path).

    A string is a registry name or alias unless it names, with a slash, something that exists:
    ``facebook/encodec_24khz`` is then the folder ``hf download --local-dir`` made, as
    transformers takes it. ``Path`` objects are always paths.
    """
    if not isinstance(source, str) or ("/" in source and Path(source).exists()):
        return None
    return source


def places(card: HasSources) -> list[str]:
    """Where :func:`find_local` looks for ``card``'s weights, for messages."""
    out = []
    for source in card.sources:
        if source.packaged:
            out.append(str(PACKAGED_DIR / source.filenames[0]))
        elif source.url:
            out += [str(p) for p in _url_candidates(source)]
        else:
            out.append(f"the Hugging Face cache ({source.repo_id})")
    return list(dict.fromkeys(out))  # sources of one repository share a place


def find_local(card: HasSources) -> tuple[WeightsSource, Path] | None:
    """The first of ``card``'s sources that is cached locally, with its path, or None."""
    for source in card.sources:
        path = _local(source)
        if path is not None:
            return source, path
    return None


def fetch(card: HasSources, *, progress: bool = True) -> tuple[WeightsSource, Path]:
    """``card``'s weights from a local cache, else downloaded.

    Returns:
        The source used and the checkpoint's path (a directory for the ``hf`` format).

    Raises:
        ModelNotAvailableError: Not cached and not downloadable; the one-line message says
            where we looked and how to get the file.
        CheckpointError: Offline, a cached file fails its hash check (online it is downloaded
            again over it).
    """
    errors = []
    try:
        found = find_local(card)
    except CheckpointError as exc:  # damaged where we keep it: downloaded again over it
        if is_offline():
            raise
        errors.append(str(exc))
        found = None
    if found:
        return found
    if not is_offline():
        for source in card.sources:
            if source.packaged:
                errors.append(f"{source.describe()} is missing: reinstall audiotok")
                continue
            try:
                if source.url:
                    return source, _download_url(source, progress)
                return source, _hf_download(source, local_only=False)
            except ModelNotAvailableError as exc:
                errors.append(str(exc))
    why = (
        "downloads are off (AUDIOTOK_OFFLINE / HF_HUB_OFFLINE)"
        if is_offline()
        else "; ".join(dict.fromkeys(errors))
    )
    first = card.sources[0]
    use = getattr(card, "local_use", None) or f"load it with `-m {card.name} --checkpoint PATH`"
    raise ModelNotAvailableError(
        f"model {card.name}: weights not found locally (looked in {', '.join(places(card))}) and "
        f"not downloadable ({why}). On a machine online run `audiotok models fetch {card.name}`, "
        f"or get {first.describe()} and {use}"
    )


def packaged_priors(model_id: str) -> Any:
    """The static entropy-coder priors ``[n_q, bins]`` of a packaged model, or None.

    Read with safetensors' numpy loader, so ``audiotok info`` can check a file without torch.
    """
    from .codec_cards import find_card

    card = find_card(model_id)
    card_path = _local(card.sources[0]) if card and card.sources[0].packaged else None
    if card_path is None:
        return None
    from safetensors import safe_open

    with safe_open(str(card_path.with_suffix(".safetensors")), framework="numpy") as f:
        return f.get_tensor(PRIORS_KEY) if PRIORS_KEY in f.keys() else None  # noqa: SIM118
