"""pullbench: measure, explain and decide whether a change to how an image pull copies bytes
is faster.

Public API by topic
-------------------
Errors
    PullbenchError and its subclasses (see ``pullbench._errors``).
Media types and digests
    OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST, ..., sha256_digest,
    is_valid_digest.
Registries (servers to pull from) -- ``pullbench.servers``
    EmbeddedRegistry, DistributionRegistry, Misbehavior.
Fixture images
    build_image, push_image, catalog.
Puller and copy strategies
    parse_reference, RegistryClient, pull, PullResult, strategies.
Statistics
    compare, verdicts, power and planning.
Experiments
    ExperimentSpec, run_experiment, load_results.
"""

from __future__ import annotations

import importlib as _importlib
import logging as _logging
import typing as _typing

# Cheap (standard library only): imported with the package.
from ._errors import (
    AuthenticationError,
    BenchmarkError,
    BlobError,
    DigestMismatch,
    ImageBuildError,
    ImageNotFound,
    InvalidReference,
    ManifestError,
    ProgramBuildError,
    PullbenchError,
    RegistryError,
    RegistryUnavailable,
    ResultSchemaError,
    ServerError,
    SizeMismatch,
    StatsInputError,
    StrategyError,
)
from ._media import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_ACCEPT,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    is_valid_digest,
    sha256_digest,
)

# Everything else is imported on first use (PEP 562 ``__getattr__``), so ``import pullbench`` and
# the CLI start fast without numpy, pandas, scipy, statsmodels or matplotlib (style guide rule 12).
# The names, ``__all__`` and the objects are the same as with eager imports.
if _typing.TYPE_CHECKING:  # the same names for type checkers and IDEs
    from . import servers
    from ._client import Descriptor, FetchedManifest, Manifest, Platform, RegistryClient
    from ._diagnostics import (
        DegenerateSampleWarning,
        Diagnostic,
        StatsWarning,
        diagnose,
        diagnose_pair,
    )
    from ._env import capture_environment
    from ._hyperfine import read_hyperfine_json, write_hyperfine_json
    from ._images import (
        CatalogEntry,
        SyntheticImageSpec,
        build_image,
        catalog,
        default_cache_dir,
        image_from_directory,
        image_from_pip,
        list_catalog,
        tar_directory,
    )
    from ._mirror import MirrorResult, mirror_image
    from ._oci import ImageLayout, LayoutDescriptor, import_image, push_image
    from ._power import (
        PowerPlan,
        minimum_detectable_effect,
        plan_from_pilot,
        power_at_n,
        runs_needed,
    )
    from ._probes import Meter
    from ._published import data_path, published_figures
    from ._puller import LayerResult, PullResult, pull
    from ._reference import ImageReference, parse_reference
    from ._report import analyze_results, format_verdict_table, render_report, verdict_table
    from ._results import (
        RESULTS_SCHEMA_VERSION,
        ResultsStore,
        consolidate_results,
        load_environment,
        load_results,
        resolve_results_path,
    )
    from ._runner import (
        Endpoint,
        EndpointLayer,
        ExperimentInterrupted,
        ExperimentResult,
        ImageInfo,
        RegistryFactory,
        default_registry_factory,
        drop_page_cache,
        network_profiles,
        register_network_profile,
        register_tls_layer,
        run_experiment,
    )
    from ._spec import ArmSpec, ExperimentSpec, PlannedRun, design, load_spec
    from ._stats import (
        VERDICTS,
        BatchComparison,
        Comparison,
        FactorialResult,
        GridResult,
        SummaryComparison,
        adjust_pvalues,
        analyze_grid,
        bca_interval,
        compare_all_pairs,
        compare_batch,
        compare_from_summary,
        compare_samples,
        decide_verdict,
        factorial_anova,
    )
    from ._strategies import (
        CopyStats,
        CopyStrategy,
        StrategyInfo,
        get_strategy,
        list_strategies,
        register_strategy,
    )
    from .servers._proxy import (
        NetworkProfile,
        get_profile,
        profile_names,
        pull_recording_proxy_cpu,
        register_runner_layers,
        remote_registry_factory,
    )

#: submodule (relative to this package) -> the public names it provides
_LAZY_MODULES: dict[str, tuple[str, ...]] = {
    # images (issue 2)
    "._images": (
        "CatalogEntry", "SyntheticImageSpec", "build_image", "catalog", "default_cache_dir",
        "image_from_directory", "image_from_pip", "list_catalog", "tar_directory",
    ),
    "._oci": (
        "ImageLayout", "LayoutDescriptor", "import_image", "push_image",
    ),
    # puller (issue 3)
    "._client": (
        "Descriptor", "FetchedManifest", "Manifest", "Platform", "RegistryClient",
    ),
    "._mirror": (
        "MirrorResult", "mirror_image",
    ),
    "._probes": (
        "Meter",
    ),
    "._puller": (
        "LayerResult", "PullResult", "pull",
    ),
    "._reference": (
        "ImageReference", "parse_reference",
    ),
    "._strategies": (
        "CopyStats", "CopyStrategy", "StrategyInfo", "get_strategy", "list_strategies",
        "register_strategy",
    ),
    # stats (issue 4)
    "._diagnostics": (
        "DegenerateSampleWarning", "Diagnostic", "StatsWarning", "diagnose", "diagnose_pair",
    ),
    "._hyperfine": (
        "read_hyperfine_json", "write_hyperfine_json",
    ),
    "._power": (
        "PowerPlan", "minimum_detectable_effect", "plan_from_pilot", "power_at_n", "runs_needed",
    ),
    "._published": (
        "data_path", "published_figures",
    ),
    "._stats": (
        "BatchComparison", "Comparison", "FactorialResult", "GridResult", "SummaryComparison",
        "VERDICTS", "adjust_pvalues", "analyze_grid", "bca_interval", "compare_all_pairs",
        "compare_batch", "compare_from_summary", "compare_samples", "decide_verdict",
        "factorial_anova",
    ),
    # experiments (issue 5)
    "._env": (
        "capture_environment",
    ),
    "._report": (
        "analyze_results", "format_verdict_table", "render_report", "verdict_table",
    ),
    "._results": (
        "RESULTS_SCHEMA_VERSION", "ResultsStore", "consolidate_results", "load_environment",
        "load_results", "resolve_results_path",
    ),
    "._runner": (
        "Endpoint", "EndpointLayer", "ExperimentInterrupted", "ExperimentResult", "ImageInfo",
        "RegistryFactory", "default_registry_factory", "drop_page_cache", "network_profiles",
        "register_network_profile", "register_tls_layer", "run_experiment",
    ),
    "._spec": (
        "ArmSpec", "ExperimentSpec", "PlannedRun", "design", "load_spec",
    ),
    # remote (issue 6)
    ".servers._proxy": (
        "NetworkProfile", "get_profile", "profile_names", "pull_recording_proxy_cpu",
        "register_runner_layers", "remote_registry_factory",
    ),
}
_LAZY: dict[str, str] = {
    name: module for module, names in _LAZY_MODULES.items() for name in names
}

__version__ = "0.1.0"

__all__ = [  # noqa: RUF022 -- plain sorted() order (tests/test_public_api.py)
    "ArmSpec", "AuthenticationError", "BatchComparison", "BenchmarkError", "BlobError",
    "CatalogEntry", "Comparison", "CopyStats", "CopyStrategy", "DOCKER_CONFIG",
    "DOCKER_LAYER_GZIP", "DOCKER_MANIFEST", "DOCKER_MANIFEST_LIST", "DegenerateSampleWarning",
    "Descriptor", "Diagnostic", "DigestMismatch", "Endpoint", "EndpointLayer",
    "ExperimentInterrupted", "ExperimentResult", "ExperimentSpec", "FactorialResult",
    "FetchedManifest", "GridResult", "ImageBuildError", "ImageInfo", "ImageLayout",
    "ImageNotFound", "ImageReference", "InvalidReference", "LayerResult", "LayoutDescriptor",
    "MANIFEST_ACCEPT", "Manifest", "ManifestError", "Meter", "MirrorResult", "NetworkProfile",
    "OCI_CONFIG", "OCI_INDEX", "OCI_LAYER_GZIP", "OCI_LAYER_TAR", "OCI_LAYER_ZSTD", "OCI_MANIFEST",
    "PlannedRun", "Platform", "PowerPlan", "ProgramBuildError", "PullResult", "PullbenchError",
    "RESULTS_SCHEMA_VERSION", "RegistryClient", "RegistryError", "RegistryFactory",
    "RegistryUnavailable", "ResultSchemaError", "ResultsStore", "ServerError", "SizeMismatch",
    "StatsInputError", "StatsWarning", "StrategyError", "StrategyInfo", "SummaryComparison",
    "SyntheticImageSpec", "VERDICTS", "adjust_pvalues", "analyze_grid", "analyze_results",
    "bca_interval", "build_image", "capture_environment", "catalog", "compare_all_pairs",
    "compare_batch", "compare_from_summary", "compare_samples", "consolidate_results", "data_path",
    "decide_verdict", "default_cache_dir", "default_registry_factory", "design", "diagnose",
    "diagnose_pair", "drop_page_cache", "factorial_anova", "format_verdict_table", "get_profile",
    "get_strategy", "image_from_directory", "image_from_pip", "import_image", "is_valid_digest",
    "list_catalog", "list_strategies", "load_environment", "load_results", "load_spec",
    "minimum_detectable_effect", "mirror_image", "network_profiles", "parse_reference",
    "plan_from_pilot", "power_at_n", "profile_names", "published_figures", "pull",
    "pull_recording_proxy_cpu", "push_image", "read_hyperfine_json", "register_network_profile",
    "register_runner_layers", "register_strategy", "register_tls_layer", "remote_registry_factory",
    "render_report", "resolve_results_path", "run_experiment", "runs_needed", "servers",
    "sha256_digest", "tar_directory", "verdict_table", "write_hyperfine_json",
]


def __getattr__(name: str) -> _typing.Any:
    if name == "servers":  # the public subpackage
        return _importlib.import_module(".servers", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_logging.getLogger(__name__).addHandler(_logging.NullHandler())
