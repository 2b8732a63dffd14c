"""audiocraft's YAML configs read lazily: ``${a.b}`` references resolved only where read.

audiocraft's exports store an experiment's config (``xp.cfg``) as ``OmegaConf.to_yaml``
writes it, which keeps interpolations as written: ``causal: ${encodec.causal}``,
``sample_rate: ${sample_rate}``, and elsewhere in the same file
``dir: /checkpoint/${oc.env:USER}/...``, which only means something on the machine that
trained. Like OmegaConf's ``DictConfig``, a :class:`ConfigView` resolves a value when it is
read, so references we never read do no harm. Supported, as OmegaConf does:

* ``${a.b}``: absolute; ``${.x}``, ``${..x}``: relative to the node holding the value;
* a value that is exactly one reference takes the referenced value and its type
  (``${rvq.n_q}`` is an int); a reference inside a longer string is substituted as text
  (``enc${suffix}``).

Resolvers (``${oc.env:NAME}``, any ``${name:...}``) are refused when read: one line naming
the reference.

Example:
    >>> cfg = ConfigView({"rate": 16000, "enc": {"sample_rate": "${rate}"}, "x": "${oc.env:X}"})
    >>> cfg.select("enc.sample_rate")
    16000
    >>> dict(cfg["enc"])
    {'sample_rate': 16000}
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import CheckpointError

_REFERENCE = re.compile(r"\$\{([^}]+)\}")
_MISSING = object()
# More nested references than any config has: beyond it, a reference leads back to itself.
_MAX_DEPTH = 20


class ConfigView(Mapping[str, Any]):
    """A read-only view of a parsed YAML mapping whose values are resolved when read.

    Nested mappings come back as views, lists as lists of resolved values, and the underlying
    dictionaries are never modified.

    Args:
        node: The mapping this view shows.
        root: The whole config (``node`` itself for the top level).
        path: Keys from the root to ``node``, for relative references and messages.
        depth: References followed to reach ``node``.
    """

    def __init__(
        self, node: Mapping[str, Any], root: Mapping[str, Any] | None = None,
        path: tuple[str, ...] = (), depth: int = 0,
    ) -> None:  # fmt: skip
        self._node = node
        self._root = node if root is None else root
        self._path = path
        self._depth = depth  # references followed to reach this node, to catch cycles

    def __getitem__(self, key: str) -> Any:
        return self._resolve(self._node[key], (*self._path, str(key)), self._depth)

    def __iter__(self) -> Iterator[str]:
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def __repr__(self) -> str:
        return f"ConfigView({'.'.join(self._path) or '<root>'})"

    def select(self, dotted: str, default: Any = _MISSING) -> Any:
        """The value at ``a.b.c`` below this view, resolved; ``default`` if a key is missing.

        Raises:
            CheckpointError: A key is missing and no default is given, or a reference on the
                way can't be resolved.
        """
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, ConfigView) or part not in node:
                if default is _MISSING:
                    raise CheckpointError(f"audiocraft config: no {dotted}")
                return default
            node = node[part]
        return node

    def to_dict(self) -> dict[str, Any]:
        """Every value resolved, nested mappings as plain dicts (reads the whole config)."""
        return {key: _plain(value) for key, value in self.items()}

    def _resolve(self, value: Any, path: tuple[str, ...], depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise CheckpointError("audiocraft config: interpolation cycle")
        if isinstance(value, Mapping):
            return ConfigView(value, self._root, path, depth)
        if isinstance(value, list):
            return [self._resolve(v, (*path, str(i)), depth) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _REFERENCE.fullmatch(value.strip())
        if whole:
            return self._follow(whole[1], path, depth)
        return _REFERENCE.sub(lambda m: str(_plain(self._follow(m[1], path, depth))), value)

    def _follow(self, reference: str, path: tuple[str, ...], depth: int) -> Any:
        """The value ``${reference}`` names, read from where ``path`` holds it."""
        if ":" in reference:
            raise CheckpointError(
                f"audiocraft config: ${{{reference}}} at {'.'.join(path)} needs an OmegaConf "
                "resolver, which is not supported"
            )
        keys = reference.lstrip(".")
        dots = len(reference) - len(keys)
        # ${.x} is a sibling of the value (path[:-1] holds it); each further dot goes up one.
        base = path[: len(path) - dots] if dots else ()
        node: Any = ConfigView(self._root, self._root, (), depth + 1)
        for part in (*base, *keys.split(".")):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, ConfigView) and part in node:
                node = node[part]
            else:
                raise CheckpointError(
                    f"audiocraft config: unresolvable interpolation ${{{reference}}}"
                )
        return node


def _plain(value: Any) -> Any:
    """``value`` with views turned into dicts, all the way down."""
    if isinstance(value, ConfigView):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
