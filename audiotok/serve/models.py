"""The models a service holds: codecs for compression, generators for ``/v1/generate``.

Each is loaded once at start-up. Several versions of a generator can be loaded side by side
and traffic split between them by weight (a *rollout*): with ``--generator musicgen=OLD
--generator musicgen-v2=NEW --rollout musicgen:musicgen-v2=0.1``, a request for ``musicgen``
runs on ``musicgen-v2`` one time in ten. The version that ran is recorded in the job, its log
line and its cache key; rolling back is removing the ``--rollout``.

A service whose generators run elsewhere (a front end of a Ray deployment, whose generator
replicas scale apart) knows them from the queue's catalogue, which workers publish at start:
their names, weights' hashes, sample rates and longest durations (:class:`Catalogued`).

A generator's ``weights`` is the SHA-256 of its LM, text conditioner and codec tensors, so the
cache key changes whenever the weights behind a name do (a new checkpoint under the same name
never serves the old one's cached audio).
"""

from __future__ import annotations

import hashlib
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from ..codec.base import Codec
from ..errors import AudiotokError


class UnknownModel(AudiotokError):
    """A request names a model the service did not load (HTTP 422)."""


class GeneratorStarting(AudiotokError):
    """A front end's generator is run elsewhere and has not started yet (HTTP 503)."""


def weights_hash(*modules: Any, extra: bytes = b"") -> str:
    """SHA-256 over the torch modules' state dicts (names, dtypes, shapes, bytes), hex."""
    import torch  # generators only: codecs (the onnx backend's) are served without torch

    digest = hashlib.sha256(extra)
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@dataclass
class Catalogued:
    """What a front end knows of a generator another process runs (its ``Generator.model``)."""

    sample_rate: int
    max_duration: float
    frame_rate: float = 0.0  # 0: unknown (a catalogue from a version that did not publish it)


@dataclass
class Generator:
    """A loaded MusicGen or AudioGen (or a :class:`Catalogued` one), its weights' hash, and a
    lock: one batch at a time."""

    name: str
    model: Any
    weights: str
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)

    @property
    def max_duration(self) -> float:
        return float(self.model.max_duration)

    @property
    def frame_rate(self) -> float:
        """Token frames per second (a request shorter than one frame generates nothing)."""
        return float(self.model.frame_rate)


@dataclass
class ServedModels:
    """The codecs (by name; the first is the default) and generators of one service."""

    codecs: dict[str, Codec]
    generators: dict[str, Generator]
    # name -> [(version, share)]: requests for ``name`` go to ``version`` with that share.
    rollouts: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    # Generators other processes run (a front end's): known once they publish themselves.
    elsewhere: tuple[str, ...] = ()
    codec_lock: threading.Lock = field(default_factory=threading.Lock)
    rng: random.Random = field(default_factory=random.Random)

    def codec(self, name: str | None) -> Codec:
        if name is None:
            return next(iter(self.codecs.values()))
        try:
            return self.codecs[name]
        except KeyError:
            raise UnknownModel(
                f"unknown codec {name!r}; this service has {self._names(self.codecs)}"
            ) from None

    def catalogue(self) -> dict[str, dict[str, Any]]:
        """What workers publish of their generators, for front ends (see :meth:`catalogued`)."""
        return {
            name: dict(
                weights=g.weights,
                sample_rate=g.sample_rate,
                max_duration=g.max_duration,
                frame_rate=g.frame_rate,
            )
            for name, g in self.generators.items()
        }

    def catalogued(self, catalogue: dict[str, dict[str, Any]]) -> None:
        """Knows the generators of ``catalogue`` (from :meth:`catalogue`) by name; loads none."""
        for name, info in catalogue.items():
            model = Catalogued(
                int(info["sample_rate"]),
                float(info["max_duration"]),
                float(info.get("frame_rate", 0.0)),
            )
            self.generators[name] = Generator(name, model, info["weights"])

    def version(self, name: str) -> Generator:
        """The generator called ``name`` exactly (a job's, its rollout already drawn)."""
        try:
            return self.generators[name]
        except KeyError:
            raise UnknownModel(
                f"unknown generator {name!r}; this service has {self._names(self.generators)}"
            ) from None

    def generator(self, name: str | None) -> Generator:
        """The generator a request for ``name`` runs on (the first if None), its rollout drawn.

        Raises:
            UnknownModel: No such generator.
            GeneratorStarting: It is run elsewhere and has not published itself yet.
        """
        waiting = [n for n in self.elsewhere if n not in self.generators]
        if waiting and (name in waiting or (name is None and not self.generators)):
            raise GeneratorStarting(f"generator {name or waiting[0]!r} is starting; try again")
        if not self.generators:
            raise UnknownModel("this service has no generator (start it with --generator NAME)")
        if name is None:
            name = next(iter(self.generators))
        draw = self.rng.random()
        for version, share in self.rollouts.get(name, ()):
            if draw < share:
                name = version
                break
            draw -= share
        return self.version(name)

    @staticmethod
    def _names(table: dict[str, Any]) -> str:
        return ", ".join(sorted(table)) or "none"


def parse_rollout(spec: str, generators: dict[str, Generator] | None) -> tuple[str, str, float]:
    """``NAME:VERSION=SHARE`` -> ``(name, version, share)``, both in ``generators`` (unless it
    is None: a front end's generators are known later, from the catalogue).

    Raises:
        UnknownModel: A generator is not loaded, or the share is not in [0, 1].
    """
    name, _, rest = spec.partition(":")
    version, _, share_text = rest.partition("=")
    try:
        share = float(share_text)
    except ValueError:
        share = -1.0
    if not name or not version or not 0.0 <= share <= 1.0:
        raise UnknownModel(f"--rollout {spec!r}: expected NAME:VERSION=SHARE, SHARE in [0, 1]")
    for model in (name, version):
        if generators is not None and model not in generators:
            raise UnknownModel(f"--rollout {spec!r}: no generator {model!r} is loaded")
    return name, version, share


def load_generator(name: str, source: str, device: str = "cpu") -> Generator:
    """Loads ``source`` (registry name, Hugging Face id or path) as generator ``name``."""
    from ..generate import AudioGen, MusicGen, load_lm

    loaded = load_lm(source, device=device, progress=False)
    # AudioGen is the 16 kHz model (its defaults differ), whatever its files are called.
    cls = AudioGen if loaded.config.sample_rate == 16_000 else MusicGen
    model = cls(name, loaded)
    weights = weights_hash(loaded.lm, loaded.conditioner, extra=loaded.codec.fingerprint())
    return Generator(name, model, weights)


def load_codecs(names: list[str], device: str = "cpu", backend: str = "torch") -> dict[str, Codec]:
    """The codecs by the names requests use (``NAME`` or ``NAME=PATH``), run by ``backend``."""
    from ..codec.load import load_codec

    codecs = {}
    for spec in names:
        name, _, source = spec.partition("=")
        codec = load_codec(source or name, device=device, backend=backend)
        codecs[name] = codec
        codecs.setdefault(codec.model_id, codec)
    return codecs


def load_served_models(
    codecs: list[str],
    generators: list[str],
    rollouts: list[str],
    device: str = "cpu",
    load_codecs_too: bool = True,
    backend: str = "torch",
    local_generators: bool = False,
) -> ServedModels:
    """The models of a service from its options: ``NAME[=PATH]`` codecs (the packaged default
    if none; none at all without ``load_codecs_too``, for a generation worker) and generators,
    ``NAME:VERSION=SHARE`` rollouts (checked against the generators when some are loaded here);
    ``backend``: how the codecs run (``torch`` or ``onnx``; generators run on torch).

    Raises:
        UnknownModel: A rollout names a generator not loaded, or its shares pass 1.
    """
    codec_device = "cpu" if backend == "onnx" else device
    loaded = (
        load_codecs(codecs or ["audiotok_24khz"], codec_device, backend) if load_codecs_too else {}
    )
    models = ServedModels(loaded, {})
    for spec in generators:
        name, _, source = spec.partition("=")
        models.generators[name] = load_generator(name, source or name, device=device)
    for spec in rollouts:
        known = models.generators if generators or local_generators else None
        name, version, share = parse_rollout(spec, known)
        models.rollouts.setdefault(name, []).append((version, share))
        if sum(share for _, share in models.rollouts[name]) > 1.0:
            raise UnknownModel(f"--rollout: the shares of {name!r} add up to more than 1")
    return models
