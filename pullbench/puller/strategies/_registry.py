"""The strategy registry: presets by name, parameters and their parsing.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..._errors import StrategyError
from ..._sizes import parse_size
from ._base import CopyStrategy, KiB, MiB, StrategyInfo
from ._copiers import CopyfileobjCopy, IterContentCopy, SocketCopy, SpliceCopy

__all__ = ["get_strategy", "list_strategies", "parse_strategy_param", "register_strategy"]

logger = logging.getLogger(__name__)




# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class _Entry:
    factory: Callable[..., CopyStrategy]
    defaults: Mapping[str, Any]
    mirrors: str
    description: str


_REGISTRY: dict[str, _Entry] = {}
_REG_LOCK = threading.Lock()


def register_strategy(
    cls_or_factory: Callable[..., CopyStrategy],
    name: str | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    mirrors: str | None = None,
    description: str | None = None,
    replace: bool = False,
) -> Callable[..., CopyStrategy]:
    """Make a strategy available by name to :func:`get_strategy`, :func:`pull` and the CLI.

    Parameters
    ----------
    cls_or_factory : CopyStrategy subclass or callable
        A subclass (its ``name``, ``mirrors``, ``defaults`` and docstring are used unless given
        here), or a callable taking keyword parameters and returning a :class:`CopyStrategy`.
    name : str, optional
        Registry name; required for a plain factory.
    defaults : mapping, optional
        Parameter defaults (for a factory: its keyword defaults if omitted).
    mirrors, description : str, optional
    replace : bool
        Allow replacing an existing name.

    Returns
    -------
    The object registered (usable as a class decorator).

    Raises
    ------
    StrategyError
        Missing name, or the name is taken and ``replace`` is false.
    """
    is_class = isinstance(cls_or_factory, type) and issubclass(cls_or_factory, CopyStrategy)
    if is_class:
        cls: Any = cls_or_factory
        name = name or cls.name
        if defaults is None:
            defaults = dict(cls.defaults)
        mirrors = mirrors if mirrors is not None else cls.mirrors
        doc = inspect.getdoc(cls) or ""
        description = (
            description if description is not None else doc.split("\n\n")[0].replace("\n", " ")
        )
        preset_name = name

        def factory(**params: Any) -> CopyStrategy:
            obj = cls(**params)
            if obj.name != preset_name:
                obj.name = preset_name
            return obj  # type: ignore[no-any-return]
    else:
        if not name:
            raise StrategyError("register_strategy(factory, name=...) needs a name for a factory")
        factory = cls_or_factory
        if defaults is None:
            sig = inspect.signature(cls_or_factory)
            defaults = {
                k: p.default
                for k, p in sig.parameters.items()
                if p.default is not inspect.Parameter.empty
            }
        description = description or (inspect.getdoc(cls_or_factory) or "").split("\n\n")[0]
        mirrors = mirrors or ""
    if not name or not isinstance(name, str):
        raise StrategyError("a strategy needs a non-empty name")
    with _REG_LOCK:
        if name in _REGISTRY and not replace:
            raise StrategyError(
                f"strategy {name!r} is already registered; pass replace=True to replace it"
            )
        _REGISTRY[name] = _Entry(factory, dict(defaults), mirrors or "", description or "")
    return cls_or_factory


def _preset(
    cls: type[CopyStrategy], name: str, mirrors: str, description: str, **overrides: Any
) -> None:
    base = dict(cls.defaults)
    preset_defaults = {**base, **overrides}

    def factory(**params: Any) -> CopyStrategy:
        unknown = sorted(set(params) - set(preset_defaults))
        if unknown:
            raise StrategyError(
                f"strategy {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(sorted(preset_defaults))}"
            )
        try:
            obj = cls(**{**preset_defaults, **params})
        except StrategyError as exc:
            # the class validates under its own name ('tunable'); the user typed the preset's
            raise StrategyError(str(exc).replace(f"strategy {cls.name!r}", f"strategy {name!r}",
                                                 1)) from None
        obj.name = name  # type: ignore[misc]
        return obj

    register_strategy(
        factory, name, defaults=preset_defaults, mirrors=mirrors, description=description
    )


def get_strategy(name: str, **params: Any) -> CopyStrategy:
    """Build a registered strategy with its defaults overridden by ``params``.

    Parameters
    ----------
    name : str
        A name from :func:`list_strategies` (e.g. ``"go-iocopy"``).
    **params
        Parameter overrides, e.g. ``read_size=16384``.

    Raises
    ------
    StrategyError
        Unknown name (the message lists the registered ones), unknown parameter (lists the valid
        ones) or an invalid value.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise StrategyError(
            f"unknown strategy {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        )
    unknown = sorted(set(params) - set(entry.defaults))
    if unknown:
        raise StrategyError(
            f"strategy {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(sorted(entry.defaults)) or '(none)'}"
        )
    for key, value in list(params.items()):
        default = entry.defaults[key]
        if isinstance(value, str) and not isinstance(default, str):
            # a size typed as text (--param, YAML): parse it here so errors name `name`
            params[key] = _coerce_param(name, key, value, default)
    try:
        strategy = entry.factory(**params)
    except StrategyError:
        raise
    except (TypeError, ValueError) as exc:
        raise StrategyError(f"strategy {name!r}: {exc}") from None
    if not isinstance(strategy, CopyStrategy):
        raise StrategyError(
            f"factory for {name!r} returned {type(strategy).__name__}, not a CopyStrategy"
        )
    return strategy


def list_strategies() -> list[StrategyInfo]:
    """Every registered strategy with its default parameters and what it mirrors, sorted by name."""
    return [
        StrategyInfo(n, dict(e.defaults), e.mirrors, e.description)
        for n, e in sorted(_REGISTRY.items())
    ]


def parse_strategy_param(name: str, key: str, text: str) -> Any:
    """Convert a ``--param key=value`` string to the type of the strategy's default for ``key``.

    Integers are byte sizes parsed by :func:`pullbench._sizes.parse_size` (``64k``, ``512KiB``,
    ``1.5m``, ``0x8000``).

    Raises
    ------
    StrategyError
        Unknown strategy or key, or a value that does not parse.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise StrategyError(
            f"unknown strategy {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        )
    if key not in entry.defaults:
        raise StrategyError(
            f"strategy {name!r} has no parameter {key!r}; "
            f"valid: {', '.join(sorted(entry.defaults)) or '(none)'}"
        )
    return _coerce_param(name, key, text, entry.defaults[key])


def _coerce_param(name: str, key: str, text: str, default: Any) -> Any:
    """``text`` converted to the type of ``default`` (errors name strategy ``name``)."""
    if isinstance(default, bool):
        if text.lower() in {"1", "true", "yes", "on"}:
            return True
        if text.lower() in {"0", "false", "no", "off"}:
            return False
        raise StrategyError(f"strategy {name!r}: {key}={text!r} is not a boolean")
    if isinstance(default, int):
        try:
            return parse_size(text)
        except ValueError as exc:
            raise StrategyError(f"strategy {name!r}: {key}={text!r}: {exc}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise StrategyError(f"strategy {name!r}: {key}={text!r} is not a number") from None
    return text


# ----------------------------------------------------------------------------- presets

register_strategy(
    SocketCopy,
    "tunable",
    description=("Any combination of read path, read size, write coalescing and hash location."),
)
_preset(
    SocketCopy,
    "go-iocopy",
    "moby/moby:distribution/pull_v2.go io.Copy(tmpFile, io.TeeReader(body, verifier)); "
    "golang/go:src/io/io.go copyBuffer (32 KiB)",
    "dockerd's legacy pull: 32 KiB short reads, one write per read, digest inline (TeeReader).",
    read_path="readinto",
    read_size=32 * KiB,
    write_mode="per-read",
    write_size=32 * KiB,
    hash_mode="inline",
)
_preset(
    SocketCopy,
    "pr48602",
    "moby/moby#48602: 512 KiB copy buffer + 512 KiB bufio.Writer with io.Copy's ReaderFrom "
    "shortcut removed (golang/go:src/bufio/bufio.go)",
    "The PR: short reads up to 512 KiB, coalesced into 512 KiB writes, digest inline.",
    read_path="readinto",
    read_size=512 * KiB,
    write_mode="bufio",
    write_size=512 * KiB,
    hash_mode="inline",
)
_preset(
    SocketCopy,
    "pools-bufio32k",
    "moby/moby#48605 / the #48602 review: pooled 32 KiB copy buffer + pooled 32 KiB bufio.Writer "
    "(moby/moby:pkg/pools/pools.go)",
    "Reviewer's proposal: 32 KiB short reads into a 32 KiB bufio writer, digest inline.",
    read_path="readinto",
    read_size=32 * KiB,
    write_mode="bufio",
    write_size=32 * KiB,
    hash_mode="inline",
)
_preset(
    SocketCopy,
    "containerd-1m",
    "containerd/containerd:core/content/helpers.go copyWithBuffer: io.ReadAtLeast into a pooled "
    "1 MiB buffer, then Write (containerd/containerd#4653)",
    "containerd's content.Copy: fill 1 MiB with short reads, one 1 MiB write, digest per write.",
    read_path="readinto",
    read_size=1 * MiB,
    write_mode="fill",
    write_size=1 * MiB,
    hash_mode="inline",
)
register_strategy(IterContentCopy)
register_strategy(CopyfileobjCopy)
register_strategy(SpliceCopy)

