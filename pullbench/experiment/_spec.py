"""Experiment specs and their randomized complete block design.

An :class:`ExperimentSpec` is a small frozen value object. It is loaded from the same keys that
papermill passes to notebook 02 (YAML or TOML files, or a plain mapping), validated at
construction, and turned into a run plan by :func:`design`: each block runs every cell
(image x arm) once, in a fresh random order drawn from the spec's seed; warm-up blocks come first,
are run and recorded, and are excluded from analysis.

Example YAML::

    name: buffers
    images: [synthetic-256m]
    registry: embedded            # or: distribution, or http://127.0.0.1:5000
    arms:
      - go-iocopy                  # a preset, as is
      - pr48602
      - {strategy: containerd-1m, params: {buffer_bytes: 262144}, name: containerd-256k}
      - {strategy: copyfileobj, grid: {chunk_bytes: [8192, 65536, 1048576]}}
    baseline: go-iocopy
    blocks: 20
    warmup_blocks: 1
    seed: 1
    margin: 0.02
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import tomllib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .._errors import BenchmarkError, ParameterWarning, StrategyError
from .._sizes import looks_like_size, parse_size
from ..stats._defaults import DEFAULT_ALPHA, DEFAULT_MARGIN

__all__ = [
    "DEFAULT_ARMS",
    "DEFAULT_BASELINE",
    "DEFAULT_IMAGE",
    "ArmSpec",
    "ExperimentSpec",
    "PlannedRun",
    "design",
    "load_spec",
    "parse_param_value",
]

logger = logging.getLogger(__name__)

#: The arms of ``pullbench bench`` without arguments; the first is the baseline.
DEFAULT_ARMS: tuple[str, ...] = (
    "go-iocopy",
    "pr48602",
    "pools-bufio32k",
    "containerd-1m",
    "requests-iter-content",
    "splice",
)
DEFAULT_BASELINE = "go-iocopy"
DEFAULT_IMAGE = "synthetic-256m"

REGISTRY_KINDS = ("embedded", "distribution")
CACHE_POLICIES = ("warm", "drop")
ISOLATIONS = ("process", "inprocess")

_ARM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=,/\[\]-]*$")
#: ``kind`` of an arm that is one of pullbench's copy strategies.
STRATEGY_KIND = "strategy"


def _external_kinds() -> tuple[str, ...]:
    """Kinds of the arms pullbench does not own (``pullbench.arms.ARM_KINDS``)."""
    from ..arms import ARM_KINDS

    return tuple(ARM_KINDS)


def _shorthand_key(kind: str) -> str | None:
    """The parameter ``kind:VALUE`` sets (``pullbench.arms.ARM_SHORTHAND``), if any."""
    from ..arms import ARM_SHORTHAND

    return ARM_SHORTHAND.get(kind)


def parse_param_value(text: Any) -> Any:
    """Parse one strategy-parameter value given as text (CLI ``--param`` or YAML).

    Integers, floats, booleans and ``null`` are parsed as YAML scalars; byte sizes may carry a
    binary suffix, parsed by :func:`pullbench._sizes.parse_size` (``32k``, ``512KiB``, ``1.5m``).

    Parameters
    ----------
    text : Any
        The value; non-strings are returned unchanged.

    Returns
    -------
    Any
        int, float, bool, None or str.
    """
    if not isinstance(text, str):
        return text
    if looks_like_size(text) or text.strip().lower().startswith("0x"):
        try:
            return parse_size(text)
        except ValueError as exc:
            raise BenchmarkError(f"parameter value {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _freeze_params(params: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    if params is None:
        return ()
    if not isinstance(params, Mapping):
        raise BenchmarkError(f"arm params must be a mapping of name -> value, got {params!r}")
    out = []
    for key, value in params.items():
        if not isinstance(key, str) or not key:
            raise BenchmarkError(f"arm parameter names must be non-empty strings, got {key!r}")
        value = parse_param_value(value)
        if not isinstance(value, (int, float, bool, str, type(None))):
            raise BenchmarkError(
                f"arm parameter {key}={value!r}: values must be plain scalars "
                "(int, float, bool, str)"
            )
        out.append((key, value))
    return tuple(sorted(out))


def _params_label(params: tuple[tuple[str, Any], ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in params)


@dataclass(frozen=True, slots=True)
class ArmSpec:
    """One arm: a copy-strategy preset, or a puller pullbench does not own, with parameters.

    Attributes
    ----------
    name : str
        Label used in results and tables (unique within a spec). Defaults to the strategy name,
        with overrides appended in brackets: ``go-iocopy[buffer_bytes=65536]``.
    strategy : str
        Strategy preset name, as listed by ``pullbench.list_strategies()``; for an external
        arm, its kind.
    params : tuple of (str, scalar)
        Parameter overrides, sorted by name.
    kind : str
        ``strategy`` (default), or an external arm's kind: ``command``, ``skopeo``,
        ``ctr-fetch``, ``ctr-pull``, ``docker`` (:data:`pullbench.arms.ARM_KINDS`).
    unpack : tuple of str
        Unpack-stage tokens (:meth:`pullbench.UnpackPlan.from_tokens`: a decompressor, a
        schedule, an order, ``dcN``); empty: the pull stores blobs only. Written after the
        strategy with ``+``: ``go-iocopy+zlib+after``, ``containerd-1m+isal+stream``.
    """

    name: str
    strategy: str
    params: tuple[tuple[str, Any], ...] = ()
    unpack: tuple[str, ...] = ()
    kind: str = STRATEGY_KIND

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, str) or not self.strategy:
            raise BenchmarkError(f"arm {self.name!r}: strategy must be a non-empty string")
        if not _ARM_NAME_RE.match(self.name):
            raise BenchmarkError(
                f"arm name {self.name!r} is not usable: use letters, digits and . _ - + = , / [ ] "
                "(give the arm a 'name')"
            )
        if self.unpack:
            from ..puller._stages import UnpackPlan

            try:
                UnpackPlan.from_tokens(self.unpack)
            except StrategyError as exc:
                raise BenchmarkError(f"arm {self.name!r}: {exc}") from None
        if self.kind != STRATEGY_KIND:
            kinds = _external_kinds()
            if self.kind not in kinds:
                raise BenchmarkError(f"arm {self.name!r}: unknown kind {self.kind!r}; choose "
                                     f"{STRATEGY_KIND} or one of {', '.join(kinds)}")
            if self.unpack:
                raise BenchmarkError(f"arm {self.name!r}: unpack tokens are for strategies; a "
                                     f"{self.kind} arm unpacks (or not) as that puller does")
            object.__setattr__(self, "strategy", self.kind)

    @property
    def external(self) -> bool:
        """True for a puller pullbench does not own (``kind`` is not ``strategy``)."""
        return self.kind != STRATEGY_KIND

    @property
    def params_dict(self) -> dict[str, Any]:
        """The parameter overrides as a plain dict."""
        return dict(self.params)

    @classmethod
    def make(cls, strategy: str, params: Mapping[str, Any] | None = None,
             name: str | None = None, unpack: Sequence[str] | str = (),
             kind: str = STRATEGY_KIND) -> ArmSpec:
        """Build an arm, naming it after the strategy, its overrides and its unpack tokens
        (``go-iocopy[buffer_bytes=65536]+zlib+after``) unless ``name`` is given.

        An external arm (``kind`` not ``strategy``) takes its kind as ``strategy``; a
        ``command`` arm is named ``command`` by default (its command line makes a poor name).
        """
        frozen = _freeze_params(params)
        tokens = tuple(t for t in (unpack.split("+") if isinstance(unpack, str) else unpack) if t)
        if kind != STRATEGY_KIND:
            strategy = kind
        if name is None:
            shown = () if kind == "command" else frozen
            name = strategy if not shown else f"{strategy}[{_params_label(shown)}]"
            if tokens:
                name += "+" + "+".join(tokens)
        return cls(name=name, strategy=strategy, params=frozen, unpack=tokens, kind=kind)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (``name``, ``strategy``, ``params``; ``unpack``, ``kind`` if any)."""
        out: dict[str, Any] = {"name": self.name, "strategy": self.strategy,
                               "params": dict(self.params)}
        if self.unpack:
            out["unpack"] = "+".join(self.unpack)
        if self.external:
            out["kind"] = self.kind
        return out


def _parse_arm_entry(entry: Any) -> list[ArmSpec]:
    """One entry of ``arms``: a preset name, ``"name:k=v,k=v"``, or a mapping (maybe a grid)."""
    if isinstance(entry, ArmSpec):
        return [entry]
    if isinstance(entry, str):
        text, *tokens = entry.strip().split("+")
        text = text.strip()
        head = text.partition(":")[0].strip()
        kind = head if head in _external_kinds() else STRATEGY_KIND
        if ":" in text:
            strategy, _, rest = text.partition(":")
            params: dict[str, Any] = {}
            shorthand = _shorthand_key(kind)
            for n, item in enumerate(filter(None, (p.strip() for p in rest.split(",")))):
                key, sep, value = item.partition("=")
                if not sep and n == 0 and shorthand is not None:
                    # dockerd:pr48602 = dockerd:variant=pr48602; go:iocopy = go:idiom=iocopy
                    params[shorthand] = key
                    continue
                if not sep:
                    raise BenchmarkError(
                        f"arm {entry!r}: expected 'strategy:param=value,...', got {item!r}"
                    )
                params[key.strip()] = parse_param_value(value.strip())
            return [ArmSpec.make(strategy.strip(), params, unpack=tokens, kind=kind)]
        return [ArmSpec.make(text, unpack=tokens, kind=kind)]
    if isinstance(entry, Mapping):
        unknown = set(entry) - {"strategy", "params", "name", "grid", "unpack", "kind"}
        if unknown:
            raise BenchmarkError(
                f"arm {dict(entry)!r}: unknown keys {sorted(unknown)} "
                "(allowed: strategy, kind, params, name, grid, unpack)"
            )
        unpack = entry.get("unpack") or ()
        kind = str(entry.get("kind") or STRATEGY_KIND)
        if kind == STRATEGY_KIND and "strategy" not in entry:
            raise BenchmarkError(f"arm {dict(entry)!r} has no 'strategy' (or 'kind')")
        strategy = str(entry.get("strategy") or kind)
        base = dict(entry.get("params") or {})
        grid = entry.get("grid")
        if not grid:
            return [ArmSpec.make(strategy, base, entry.get("name"), unpack=unpack, kind=kind)]
        if not isinstance(grid, Mapping) or not all(
            isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0 for v in grid.values()
        ):
            raise BenchmarkError(
                f"arm grid {grid!r}: expected a mapping of parameter -> non-empty list of values"
            )
        keys = sorted(grid)
        arms = []
        for combo in itertools.product(*(grid[k] for k in keys)):
            params = {**base, **dict(zip(keys, combo, strict=True))}
            arms.append(ArmSpec.make(strategy, params, unpack=unpack, kind=kind))
        return arms
    raise BenchmarkError(f"arm {entry!r}: expected a strategy name or a mapping")


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """Everything that defines an experiment; results record it verbatim.

    Attributes
    ----------
    name : str
        Short name, used in the default results folder ``results/<timestamp>-<name>/``.
    images : tuple of str
        Fixture catalog names (``synthetic-256m``, ``debian-minbase``, ...) or, with a URL
        registry, references already stored there (``repo:tag``).
    registry : str
        ``embedded`` (default), ``distribution`` (Debian's docker-registry) or a URL
        ``http(s)://host:port`` of a running registry.
    network_profile : str
        Named network profile between puller and registry; ``loopback`` (default) is the only
        one built in -- others are plugged in with :func:`pullbench.register_network_profile`.
    tls : bool
        Serve the registry over TLS (needs a TLS layer registered with
        :func:`pullbench.register_tls_layer`).
    arms : tuple of ArmSpec
        The arms; names are unique.
    baseline : str
        Arm name every other arm is compared with (default: the first arm).
    blocks : int
        Analysed blocks (repetitions of every arm).
    warmup_blocks : int
        Blocks run first, recorded with ``warmup=True`` and excluded from analysis.
    cache_policy : {"warm", "drop"}
        ``drop`` drops the page cache before every run (root only) -> ``cache_state="cold"``.
    isolation : {"process", "inprocess"}
        ``process``: a fresh worker process per run (default).
    seed : int
        Seed of the random run order (numpy ``default_rng``).
    margin : float
        Equivalence margin as a fraction of the baseline (0.02 = +-2 %).
    alpha : float
        Significance level.
    concurrency : int
        Concurrent layer downloads per pull.
    probes : bool
        Run the puller's probes (``pull(probes=...)``): per-thread CPU time, ``/proc`` I/O
        counters, peak RSS and read/write-size counts. False records none of them (those columns
        are empty and CPU metrics are skipped in the analysis); wall times and verification are
        the same.
    dest_dir : str or None
        Directory on the destination filesystem where each run's content store is created
        (emptied after every run). None: ``<results>/store``.
    metrics : tuple of str
        Columns analysed for verdicts.
    cpus : str
        CPU affinity of the puller worker, the registry, the proxy and daemons: ``auto``
        (default: on two or more CPUs the servers get the lower half, the puller the rest),
        ``off``, or ``puller=1,registry=0`` (see :mod:`pullbench.experiment._isolation`).
    """

    name: str = "bench"
    images: tuple[str, ...] = (DEFAULT_IMAGE,)
    registry: str = "embedded"
    network_profile: str = "loopback"
    tls: bool = False
    arms: tuple[ArmSpec, ...] = tuple(ArmSpec.make(a) for a in DEFAULT_ARMS)
    baseline: str = ""
    blocks: int = 20
    warmup_blocks: int = 1
    cache_policy: str = "warm"
    isolation: str = "process"
    seed: int = 20261129
    margin: float = DEFAULT_MARGIN
    alpha: float = DEFAULT_ALPHA
    concurrency: int = 3
    probes: bool = True
    dest_dir: str | None = None
    metrics: tuple[str, ...] = ("duration_s", "cpu_ns_per_byte")
    cpus: str = "auto"

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", self.name or ""):
            raise BenchmarkError(f"spec name {self.name!r}: use letters, digits, '.', '_' or '-'")
        if isinstance(self.images, str):
            object.__setattr__(self, "images", (self.images,))
        if not self.images or not all(isinstance(i, str) and i for i in self.images):
            raise BenchmarkError("spec needs at least one image (a catalog name or reference)")
        if len(set(self.images)) != len(self.images):
            raise BenchmarkError(f"images are repeated: {list(self.images)}")
        if self.registry not in REGISTRY_KINDS and not re.match(r"^https?://", self.registry):
            raise BenchmarkError(
                f"registry {self.registry!r}: use 'embedded', 'distribution' or a URL "
                "such as http://127.0.0.1:5000"
            )
        arms = tuple(a for entry in self.arms for a in _parse_arm_entry(entry))
        if not arms:
            raise BenchmarkError("spec needs at least one arm")
        names = [a.name for a in arms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise BenchmarkError(
                f"arm names must be unique; repeated: {dupes} (give them a 'name')"
            )
        object.__setattr__(self, "arms", arms)
        if not self.baseline:
            object.__setattr__(self, "baseline", arms[0].name)
        if self.baseline not in names:
            raise BenchmarkError(f"baseline {self.baseline!r} is not an arm; arms are {names}")
        for key in ("blocks", "warmup_blocks", "concurrency", "seed"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise BenchmarkError(f"{key} must be an integer, got {value!r}")
        if self.blocks < 1:
            raise BenchmarkError(f"blocks must be >= 1, got {self.blocks}")
        if self.warmup_blocks < 0:
            raise BenchmarkError(f"warmup_blocks must be >= 0, got {self.warmup_blocks}")
        if self.concurrency < 1:
            raise BenchmarkError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.cache_policy not in CACHE_POLICIES:
            raise BenchmarkError(
                f"cache_policy {self.cache_policy!r}: choose one of {CACHE_POLICIES}"
            )
        if self.isolation not in ISOLATIONS:
            raise BenchmarkError(f"isolation {self.isolation!r}: choose one of {ISOLATIONS}")
        if not 0 < float(self.margin) < 1:
            raise BenchmarkError(
                f"margin is a fraction of the baseline in (0, 1), got {self.margin}"
            )
        if not 0 < float(self.alpha) < 0.5:
            raise BenchmarkError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if isinstance(self.metrics, str):
            object.__setattr__(self, "metrics", (self.metrics,))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        if not self.network_profile or not isinstance(self.network_profile, str):
            raise BenchmarkError("network_profile must be a non-empty name")
        if not isinstance(self.cpus, str):
            raise BenchmarkError(f"cpus must be a string such as 'auto', 'off' or "
                                 f"'puller=1,registry=0', got {self.cpus!r}")
        from ._isolation import parse_cpu_setting

        parse_cpu_setting(self.cpus)  # the syntax; the CPUs themselves are checked at run time

    # -- derived --------------------------------------------------------------------------------
    @property
    def arm_names(self) -> tuple[str, ...]:
        """Arm names in spec order."""
        return tuple(a.name for a in self.arms)

    def arm(self, name: str) -> ArmSpec:
        """Return the arm called ``name``; raise BenchmarkError listing the arms otherwise."""
        for a in self.arms:
            if a.name == name:
                return a
        raise BenchmarkError(f"no arm {name!r}; arms are {list(self.arm_names)}")

    @property
    def total_runs(self) -> int:
        """Number of runs in the plan (warm-up included)."""
        return (self.blocks + self.warmup_blocks) * len(self.arms) * len(self.images)

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able mapping; ``ExperimentSpec.from_mapping(spec.to_dict()) == spec``."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["arms"] = [a.to_dict() for a in self.arms]
        out["images"] = list(self.images)
        out["metrics"] = list(self.metrics)
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ExperimentSpec:
        """Build a spec from a mapping with the spec's field names (YAML/TOML/papermill keys).

        Raises
        ------
        BenchmarkError
            Unknown keys (the message lists the allowed ones) or invalid values.
        """
        if not isinstance(data, Mapping):
            raise BenchmarkError(f"a spec must be a mapping, got {type(data).__name__}")
        allowed = {f.name for f in fields(cls)}
        data = dict(data)
        if "image" in data and "images" not in data:
            data["images"] = data.pop("image")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise BenchmarkError(f"unknown spec keys {unknown}; allowed: {sorted(allowed)}")
        if "images" in data:
            images = data["images"]
            data["images"] = (images,) if isinstance(images, str) else tuple(images)
        if "arms" in data:
            arms = data["arms"]
            if isinstance(arms, str):
                arms = [a for a in (s.strip() for s in arms.split(",")) if a]
            data["arms"] = tuple(arms)
        if "metrics" in data and not isinstance(data["metrics"], str):
            data["metrics"] = tuple(data["metrics"])
        return cls(**data)

    def with_overrides(self, **changes: Any) -> ExperimentSpec:
        """Return a copy with some fields changed (validated again)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        data = self.to_dict()
        data.update(changes)
        if "arms" in changes and "baseline" not in changes:
            data["baseline"] = ""
        return ExperimentSpec.from_mapping(data)

    def with_params(self, overrides: Iterable[tuple[str | None, str, Any]]) -> ExperimentSpec:
        """Apply parameter overrides ``(arm or None, key, value)`` to the arms.

        An override naming an arm (or a strategy) changes that arm. One naming none goes to every
        arm whose strategy has the parameter ``key``, and a :class:`~pullbench.ParameterWarning`
        says which arms those were (and which were renamed, the baseline included), so that
        ``--param write_size=64k`` never silently changes the baseline.

        Overridden arms keep their name only when it was given explicitly; default names are
        regenerated (``pr48602[write_size=65536]``). The baseline follows its arm.

        Raises
        ------
        BenchmarkError
            An override names an arm that does not exist, or no arm's strategy has the
            parameter of an arm-less override.
        """
        overrides = list(overrides)
        targets = {a for a, _, _ in overrides if a is not None}
        missing = sorted(targets - set(self.arm_names) - {a.strategy for a in self.arms})
        if missing:
            raise BenchmarkError(
                f"--param names unknown arms {missing}; arms are {list(self.arm_names)}"
            )
        known = _strategy_parameters()
        takers: dict[int, list[str]] = {}
        for i, (target, key, value) in enumerate(overrides):
            if target is not None:
                continue
            takers[i] = [arm.name for arm in self.arms if key in known.get(arm.strategy, ())]
            if not takers[i] and all(arm.strategy in known for arm in self.arms):
                raise BenchmarkError(
                    f"--param {key}={value}: no arm's strategy has a parameter {key!r} (arms: "
                    + ", ".join(f"{a.name} ({', '.join(sorted(known[a.strategy])) or 'none'})"
                                for a in self.arms) + ")"
                )
        new_arms = []
        renamed: dict[str, str] = {}
        baseline = self.baseline
        for arm in self.arms:
            params = arm.params_dict
            for i, (target, key, value) in enumerate(overrides):
                if (target in (arm.name, arm.strategy) if target is not None
                        else arm.name in takers[i]):
                    params[key] = parse_param_value(value)
            if params == arm.params_dict:
                new_arms.append(arm)
                continue
            default_name = ArmSpec.make(arm.strategy, arm.params_dict, unpack=arm.unpack,
                                        kind=arm.kind).name
            name = None if arm.name == default_name else arm.name
            new = ArmSpec.make(arm.strategy, params, name, unpack=arm.unpack, kind=arm.kind)
            if arm.name == self.baseline:
                baseline = new.name
            if new.name != arm.name:
                renamed[arm.name] = new.name
            new_arms.append(new)
        for i, names in takers.items():
            _, key, value = overrides[i]
            _warn_unprefixed(key, value, names, [a.name for a in self.arms if a.name not in names],
                             renamed, self.baseline)
        return replace_spec(self, arms=tuple(new_arms), baseline=baseline)


def _strategy_parameters() -> dict[str, frozenset[str]]:
    """Registered strategy name -> the names of its parameters."""
    from ..puller.strategies import list_strategies

    return {info.name: frozenset(info.params) for info in list_strategies()}


def _warn_unprefixed(key: str, value: Any, names: Sequence[str], others: Sequence[str],
                     renamed: Mapping[str, str], baseline: str | None) -> None:
    """Say where an arm-less ``--param KEY=VALUE`` went (a :class:`ParameterWarning`)."""
    went = ", ".join(
        f"{n} (now {renamed[n]}{', the baseline' if n == baseline else ''})" if n in renamed
        else f"{n}{' (the baseline)' if n == baseline else ''} (unchanged: already {value})"
        for n in names
    )
    text = f"--param {key}={value} names no arm, so it went to every arm with {key}: {went}"
    if others:
        text += f"; not to {', '.join(others)} (no parameter {key})"
    if names:
        text += f". To change one arm only, prefix it: --param {names[-1]}.{key}={value}"
    warnings.warn(text, ParameterWarning, stacklevel=3)


def replace_spec(spec: ExperimentSpec, **changes: Any) -> ExperimentSpec:
    """``dataclasses.replace`` that re-validates (a frozen spec stays valid)."""
    return replace(spec, **changes)


def load_spec(source: str | Path | Mapping[str, Any]) -> ExperimentSpec:
    """Load an :class:`ExperimentSpec` from a YAML (``.yaml``/``.yml``), TOML or JSON file.

    Parameters
    ----------
    source : str, Path or Mapping
        A file path, or a mapping with the spec's keys (as papermill passes them).

    Returns
    -------
    ExperimentSpec

    Raises
    ------
    BenchmarkError
        Missing or unreadable file, unknown extension, parse error, or invalid spec.
    """
    if isinstance(source, Mapping):
        return ExperimentSpec.from_mapping(source)
    path = Path(source)
    if not path.is_file():
        raise BenchmarkError(f"spec file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise BenchmarkError(f"spec file {path}: use .yaml, .yml, .toml or .json")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise BenchmarkError(f"spec file {path} could not be parsed: {exc}") from exc
    if isinstance(data, Mapping) and "spec" in data and len(data) == 1:
        data = data["spec"]
    try:
        return ExperimentSpec.from_mapping(data)
    except BenchmarkError as exc:
        raise BenchmarkError(f"spec file {path}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """One run of the plan.

    Attributes
    ----------
    run_index : int
        Position in the whole plan, 0-based; also the run's identity for ``--resume``.
    block : int
        Block number; warm-up blocks are negative (-warmup_blocks .. -1), analysed blocks 0..n-1.
    order_in_block : int
        Position of this run inside its block, 0-based.
    arm : str
        Arm name.
    image : str
        Image name as given in the spec.
    warmup : bool
        True for warm-up runs (recorded, excluded from analysis).
    """

    run_index: int
    block: int
    order_in_block: int
    arm: str
    image: str
    warmup: bool = False
    run_id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.run_id:
            object.__setattr__(self, "run_id", f"b{self.block:+04d}-{self.image}-{self.arm}")


def design(spec: ExperimentSpec) -> list[PlannedRun]:
    """Randomized complete block design of ``spec``.

    Every block holds every (image, arm) cell exactly once, in an order drawn afresh for each
    block from ``numpy.random.default_rng(spec.seed)``: the same seed always gives the same plan,
    so an interrupted experiment resumes into the same plan. Warm-up blocks come first.

    Returns
    -------
    list of PlannedRun
        ``spec.total_runs`` runs, in execution order.
    """
    from numpy.random import default_rng  # imported here: numpy is not imported with pullbench

    rng = default_rng(spec.seed)
    cells = [(image, arm.name) for image in spec.images for arm in spec.arms]
    plan: list[PlannedRun] = []
    for b in range(-spec.warmup_blocks, spec.blocks):
        order = rng.permutation(len(cells))
        for pos, idx in enumerate(order):
            image, arm = cells[int(idx)]
            plan.append(
                PlannedRun(run_index=len(plan), block=b, order_in_block=pos, arm=arm,
                           image=image, warmup=b < 0)
            )
    return plan

