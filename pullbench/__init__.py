"""pullbench: measure, explain and decide whether a change to how an image pull copies bytes
is faster.

Public API by topic
-------------------
Errors
    PullbenchError and its subclasses (see ``pullbench._errors``); ParameterWarning.
Media types and digests
    OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST, ..., sha256_digest,
    is_valid_digest.
Registries (servers to pull from) -- ``pullbench.servers``
    EmbeddedRegistry, DistributionRegistry, Misbehavior.
Fixture images
    build_image, push_image, catalog.
Puller and copy strategies
    parse_reference, RegistryClient, pull, PullResult, strategies, RetryPolicy (retries, resume,
    low-speed limit), BODY_CAPS (what is read into memory at most).
Decompress and unpack (the stages after the download)
    list_decompressors, get_decompressor, Decompressor, DecompressionLimits, open_layer,
    LayerReader; RootfsUnpacker, unpack_image, image_layers, LayerUnpackResult, UnpackResult;
    UnpackPlan (``pull(..., unpack=UnpackPlan(...))``: the stages inside a pull);
    stage_breakdown and what_if_free (where the time goes, per arm).
Statistics
    compare, verdicts, power and planning.
Experiments
    ExperimentSpec, run_experiment, load_results.
Analysis and report
    analyze_folder (a results folder with its spec's settings), analyze_results, the typed
    result Analysis -> ImageAnalysis -> MetricAnalysis -> VerdictRow (and ArmSummary,
    ArmDescriptives), load_analysis, save_analysis, verdict_table, format_verdict_table,
    render_report; compare_runs (the same arms across two results folders, unpaired) ->
    RunComparison -> RunComparisonRow, EnvironmentDifference, format_run_comparison.
Interference, isolation and unstable verdicts
    system_check / SystemCheck and wait_quiet / QuietWait (the preflight), InterferenceProbe
    and INTERFERENCE_COLUMNS (per-run interference columns), CpuPlan / plan_cpus (CPU affinity
    per role), CpuBurner (bounded injected load); disturbance_threshold, interference_dependence,
    unstable_reason, blocks_to_settle and their records; StabilityRow and InterferenceSummary in
    the analysis.
"""

from __future__ import annotations

import importlib as _importlib
import logging as _logging
import typing as _typing

# Cheap (standard library only): imported with the package.
from ._errors import (
    ArmError,
    AuthenticationError,
    BenchmarkError,
    BlobError,
    ClientConfigError,
    ColdStateError,
    CopyCancelled,
    CorruptLayerError,
    DaemonDied,
    DaemonError,
    DecompressionBomb,
    DecompressionError,
    DegenerateSampleWarning,
    DiffIdMismatch,
    DigestMismatch,
    ExperimentInterrupted,
    ImageBuildError,
    ImageNotFound,
    InvalidReference,
    LayerError,
    ManifestError,
    NetworkProfileError,
    ParameterWarning,
    ProgramBuildError,
    PullbenchError,
    RegistryError,
    RegistryUnavailable,
    ResponseTooLarge,
    ResultSchemaError,
    ServerError,
    SizeMismatch,
    StatsInputError,
    StatsWarning,
    StrategyError,
    UnsafeLayerError,
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
from ._version import __version__ as __version__

# Everything else is imported on first use (PEP 562 ``__getattr__``), so ``import pullbench`` and
# the CLI start fast without numpy, pandas, scipy, statsmodels or matplotlib (style guide rule 12).
# The names, ``__all__`` and the objects are the same as with eager imports.
if _typing.TYPE_CHECKING:  # the same names for type checkers and IDEs (a test compares)
    from . import servers
    from ._reference import (
        ImageReference,
        parse_reference,
    )
    from .experiment._analysis import (
        analyze_folder,
        analyze_results,
        save_analysis,
        verdict_table,
    )
    from .experiment._analysis_result import (
        ANALYSIS_SCHEMA_VERSION,
        Analysis,
        ArmDescriptives,
        ArmSummary,
        ImageAnalysis,
        InterferenceSummary,
        MetricAnalysis,
        StabilityRow,
        VerdictRow,
        load_analysis,
    )
    from .experiment._arms import arm_resource_table
    from .experiment._burner import (
        CpuBurner,
    )
    from .experiment._compare import (
        EnvironmentDifference,
        RunComparison,
        RunComparisonRow,
        compare_runs,
        format_run_comparison,
    )
    from .experiment._endpoints import (
        Endpoint,
        EndpointLayer,
        RegistryFactory,
        default_registry_factory,
        network_profiles,
        pull_recording_proxy_cpu,
        register_network_profile,
        register_runner_layers,
        register_tls_layer,
        remote_registry_factory,
    )
    from .experiment._env import (
        capture_environment,
    )
    from .experiment._hyperfine import (
        read_hyperfine_json,
        write_hyperfine_json,
    )
    from .experiment._interference import (
        INTERFERENCE_COLUMNS,
        InterferenceProbe,
    )
    from .experiment._isolation import (
        CpuPlan,
        plan_cpus,
    )
    from .experiment._published import (
        data_path,
        published_figures,
    )
    from .experiment._report import (
        format_analysis,
        format_verdict_table,
        render_report,
        styled_table,
    )
    from .experiment._results import (
        RESULTS_SCHEMA_VERSION,
        ResultsStore,
        consolidate_results,
        load_environment,
        load_results,
        resolve_results_path,
    )
    from .experiment._runner import (
        ExperimentResult,
        ImageInfo,
        drop_page_cache,
        run_experiment,
    )
    from .experiment._spec import (
        ArmSpec,
        ExperimentSpec,
        PlannedRun,
        design,
        load_spec,
    )
    from .experiment._system import (
        QuietWait,
        SystemCheck,
        system_check,
        wait_quiet,
    )
    from .images._cache import (
        default_cache_dir,
    )
    from .images._catalog import (
        CatalogEntry,
        SyntheticImageSpec,
        build_image,
        catalog,
        image_from_directory,
        image_from_pip,
        list_catalog,
        recompress_image,
        tar_directory,
    )
    from .images._mirror import (
        MirrorResult,
        mirror_image,
    )
    from .images._oci import (
        ImageLayout,
        LayoutDescriptor,
        import_image,
        push_image,
    )
    from .puller._client import (
        Descriptor,
        FetchedManifest,
        Manifest,
        Platform,
        RegistryClient,
    )
    from .puller._decompress import (
        DecompressionLimits,
        Decompressor,
        LayerReader,
        get_decompressor,
        list_decompressors,
        open_layer,
    )
    from .puller._pipeline import (
        LayerResult,
        PullResult,
        pull,
    )
    from .puller._probes import (
        Meter,
    )
    from .puller._stages import (
        UnpackPlan,
    )
    from .puller._transport import (
        BODY_CAPS,
        RetryPolicy,
        TransferCounters,
    )
    from .puller._unpack import (
        LayerUnpackResult,
        RootfsUnpacker,
        UnpackResult,
        image_layers,
        unpack_image,
    )
    from .puller.strategies import (
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
    )
    from .stats._breakdown import (
        stage_breakdown,
        what_if_free,
    )
    from .stats._defaults import (
        DEFAULT_ALPHA,
        DEFAULT_MARGIN,
        DEFAULT_POWER,
    )
    from .stats._diagnostics import (
        Diagnostic,
        diagnose,
        diagnose_pair,
    )
    from .stats._interference import (
        DisturbanceThreshold,
        InterferenceDependence,
        SettlePlan,
        blocks_to_settle,
        disturbance_threshold,
        interference_dependence,
        unstable_reason,
    )
    from .stats._power import (
        PowerPlan,
        minimum_detectable_effect,
        plan_from_pilot,
        power_at_n,
        runs_needed,
    )
    from .stats._stats import (
        VERDICTS,
        BatchComparison,
        Comparison,
        FactorialResult,
        GridResult,
        MedianEstimates,
        PairedTest,
        RatioEstimates,
        SummaryComparison,
        TostTest,
        WelchTest,
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

#: submodule (relative to this package) -> the public names it provides
_LAZY_MODULES: dict[str, tuple[str, ...]] = {
    # images
    ".images._cache": (
        "default_cache_dir",
    ),
    ".images._catalog": (
        "CatalogEntry", "SyntheticImageSpec", "build_image", "catalog",
        "image_from_directory", "image_from_pip", "list_catalog", "recompress_image",
        "tar_directory",
    ),
    ".images._oci": (
        "ImageLayout", "LayoutDescriptor", "import_image", "push_image",
    ),
    # puller
    ".puller._client": (
        "Descriptor", "FetchedManifest", "Manifest", "Platform", "RegistryClient",
    ),
    ".images._mirror": (
        "MirrorResult", "mirror_image",
    ),
    ".puller._probes": (
        "Meter",
    ),
    ".puller._pipeline": (
        "LayerResult", "PullResult", "pull",
    ),
    "._reference": (
        "ImageReference", "parse_reference",
    ),
    ".puller._decompress": (
        "DecompressionLimits", "Decompressor", "LayerReader", "get_decompressor",
        "list_decompressors", "open_layer",
    ),
    ".puller._stages": (
        "UnpackPlan",
    ),
    ".puller._unpack": (
        "LayerUnpackResult", "RootfsUnpacker", "UnpackResult", "image_layers", "unpack_image",
    ),
    ".puller._transport": (
        "BODY_CAPS", "RetryPolicy", "TransferCounters",
    ),
    ".puller.strategies": (
        "CopyStats", "CopyStrategy", "StrategyInfo", "get_strategy", "list_strategies",
        "register_strategy",
    ),
    # stats
    ".stats._diagnostics": (
        "Diagnostic", "diagnose", "diagnose_pair",
    ),
    ".experiment._hyperfine": (
        "read_hyperfine_json", "write_hyperfine_json",
    ),
    ".stats._breakdown": (
        "stage_breakdown", "what_if_free",
    ),
    ".stats._power": (
        "PowerPlan", "minimum_detectable_effect", "plan_from_pilot", "power_at_n", "runs_needed",
    ),
    ".experiment._published": (
        "data_path", "published_figures",
    ),
    ".stats._defaults": (
        "DEFAULT_ALPHA", "DEFAULT_MARGIN", "DEFAULT_POWER",
    ),
    ".stats._stats": (
        "BatchComparison", "Comparison", "FactorialResult", "GridResult", "MedianEstimates",
        "PairedTest", "RatioEstimates", "SummaryComparison", "TostTest", "WelchTest",
        "VERDICTS", "adjust_pvalues", "analyze_grid", "bca_interval", "compare_all_pairs",
        "compare_batch", "compare_from_summary", "compare_samples", "decide_verdict",
        "factorial_anova",
    ),
    # experiments
    ".experiment._env": (
        "capture_environment",
    ),
    ".experiment._analysis": (
        "analyze_folder", "analyze_results", "save_analysis", "verdict_table",
    ),
    ".experiment._analysis_result": (
        "ANALYSIS_SCHEMA_VERSION", "Analysis", "ArmDescriptives", "ArmSummary", "ImageAnalysis",
        "InterferenceSummary", "MetricAnalysis", "StabilityRow", "VerdictRow", "load_analysis",
    ),
    # interference, isolation, preflight
    ".experiment._interference": (
        "INTERFERENCE_COLUMNS", "InterferenceProbe",
    ),
    ".experiment._isolation": (
        "CpuPlan", "plan_cpus",
    ),
    ".experiment._system": (
        "QuietWait", "SystemCheck", "system_check", "wait_quiet",
    ),
    ".experiment._burner": (
        "CpuBurner",
    ),
    ".stats._interference": (
        "DisturbanceThreshold", "InterferenceDependence", "SettlePlan", "blocks_to_settle",
        "disturbance_threshold", "interference_dependence", "unstable_reason",
    ),
    ".experiment._compare": (
        "EnvironmentDifference", "RunComparison", "RunComparisonRow", "compare_runs",
        "format_run_comparison",
    ),
    ".experiment._report": (
        "format_analysis", "format_verdict_table", "render_report", "styled_table",
    ),
    ".experiment._results": (
        "RESULTS_SCHEMA_VERSION", "ResultsStore", "consolidate_results", "load_environment",
        "load_results", "resolve_results_path",
    ),
    ".experiment._runner": (
        "ExperimentResult", "ImageInfo", "drop_page_cache",
        "run_experiment",
    ),
    ".experiment._endpoints": (
        "Endpoint", "EndpointLayer", "RegistryFactory", "default_registry_factory",
        "network_profiles", "pull_recording_proxy_cpu", "register_network_profile",
        "register_runner_layers", "register_tls_layer", "remote_registry_factory",
    ),
    ".experiment._spec": (
        "ArmSpec", "ExperimentSpec", "PlannedRun", "design", "load_spec",
    ),
    # real pullers as arms (issue 11)
    ".experiment._arms": (
        "arm_resource_table",
    ),
    # remote
    ".servers._proxy": (
        "NetworkProfile", "get_profile", "profile_names",
    ),
}
_LAZY: dict[str, str] = {
    name: module for module, names in _LAZY_MODULES.items() for name in names
}


__all__ = [  # noqa: RUF022 -- plain sorted() order (tests/test_public_api.py)
    "ANALYSIS_SCHEMA_VERSION", "Analysis", "ArmDescriptives", "ArmError", "ArmSpec", "ArmSummary",
    "AuthenticationError", "BODY_CAPS", "BatchComparison", "BenchmarkError", "BlobError",
    "CatalogEntry", "ClientConfigError", "ColdStateError", "Comparison", "CopyCancelled",
    "CopyStats", "CopyStrategy", "CorruptLayerError", "CpuBurner", "CpuPlan", "DEFAULT_ALPHA",
    "DEFAULT_MARGIN", "DEFAULT_POWER", "DOCKER_CONFIG", "DOCKER_LAYER_GZIP", "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST", "DaemonDied", "DaemonError", "DecompressionBomb", "DecompressionError",
    "DecompressionLimits", "Decompressor", "DegenerateSampleWarning", "Descriptor", "Diagnostic",
    "DiffIdMismatch", "DigestMismatch", "DisturbanceThreshold", "Endpoint", "EndpointLayer",
    "EnvironmentDifference", "ExperimentInterrupted", "ExperimentResult", "ExperimentSpec",
    "FactorialResult", "FetchedManifest", "GridResult", "INTERFERENCE_COLUMNS", "ImageAnalysis",
    "ImageBuildError", "ImageInfo", "ImageLayout", "ImageNotFound", "ImageReference",
    "InterferenceDependence", "InterferenceProbe", "InterferenceSummary", "InvalidReference",
    "LayerError", "LayerReader", "LayerResult", "LayerUnpackResult", "LayoutDescriptor",
    "MANIFEST_ACCEPT", "Manifest", "ManifestError", "MedianEstimates", "Meter", "MetricAnalysis",
    "MirrorResult", "NetworkProfile", "NetworkProfileError", "OCI_CONFIG", "OCI_INDEX",
    "OCI_LAYER_GZIP", "OCI_LAYER_TAR", "OCI_LAYER_ZSTD", "OCI_MANIFEST", "PairedTest",
    "ParameterWarning", "PlannedRun", "Platform", "PowerPlan", "ProgramBuildError", "PullResult",
    "PullbenchError", "QuietWait", "RESULTS_SCHEMA_VERSION", "RatioEstimates", "RegistryClient",
    "RegistryError", "RegistryFactory", "RegistryUnavailable", "ResponseTooLarge",
    "ResultSchemaError", "ResultsStore", "RetryPolicy", "RootfsUnpacker", "RunComparison",
    "RunComparisonRow", "ServerError", "SettlePlan", "SizeMismatch", "StabilityRow",
    "StatsInputError", "StatsWarning", "StrategyError", "StrategyInfo", "SummaryComparison",
    "SyntheticImageSpec", "SystemCheck", "TostTest", "TransferCounters", "UnpackPlan",
    "UnpackResult", "UnsafeLayerError", "VERDICTS", "VerdictRow", "WelchTest", "adjust_pvalues",
    "analyze_folder", "analyze_grid", "analyze_results", "arm_resource_table", "bca_interval",
    "blocks_to_settle", "build_image", "capture_environment", "catalog", "compare_all_pairs",
    "compare_batch", "compare_from_summary", "compare_runs", "compare_samples",
    "consolidate_results", "data_path", "decide_verdict", "default_cache_dir",
    "default_registry_factory", "design", "diagnose", "diagnose_pair", "disturbance_threshold",
    "drop_page_cache", "factorial_anova", "format_analysis", "format_run_comparison",
    "format_verdict_table", "get_decompressor", "get_profile", "get_strategy",
    "image_from_directory", "image_from_pip", "image_layers", "import_image",
    "interference_dependence", "is_valid_digest", "list_catalog", "list_decompressors",
    "list_strategies", "load_analysis", "load_environment", "load_results", "load_spec",
    "minimum_detectable_effect", "mirror_image", "network_profiles", "open_layer",
    "parse_reference", "plan_cpus", "plan_from_pilot", "power_at_n", "profile_names",
    "published_figures", "pull", "pull_recording_proxy_cpu", "push_image", "read_hyperfine_json",
    "recompress_image", "register_network_profile", "register_runner_layers", "register_strategy",
    "register_tls_layer", "remote_registry_factory", "render_report", "resolve_results_path",
    "run_experiment", "runs_needed", "save_analysis", "servers", "sha256_digest",
    "stage_breakdown", "styled_table", "system_check", "tar_directory", "unpack_image",
    "unstable_reason", "verdict_table", "wait_quiet", "what_if_free", "write_hyperfine_json",
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
