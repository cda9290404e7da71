"""pullbench: measure, explain and decide whether a change to how an image pull copies bytes is faster.

Public API by topic
-------------------
Errors
    PullbenchError and its subclasses (see ``pullbench._errors``).
Media types and digests
    OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST, ..., sha256_digest, is_valid_digest.
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

import logging

from ._errors import (
    AuthenticationError,
    BenchmarkError,
    BlobError,
    DigestMismatch,
    ImageBuildError,
    ImageNotFound,
    InvalidReference,
    ManifestError,
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

# --- section: images (issue 2) ---
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
from ._oci import ImageLayout, LayoutDescriptor, import_image, push_image

# --- end section: images ---

# --- section: puller (issue 3) ---
from ._client import Descriptor, FetchedManifest, Manifest, Platform, RegistryClient
from ._probes import Meter
from ._puller import LayerResult, PullResult, pull
from ._reference import ImageReference, parse_reference
from ._strategies import (
    CopyStats,
    CopyStrategy,
    StrategyInfo,
    get_strategy,
    list_strategies,
    register_strategy,
)

# --- end section: puller ---

# --- section: stats (issue 4) ---
from ._diagnostics import DegenerateSampleWarning, Diagnostic, StatsWarning, diagnose, diagnose_pair
from ._hyperfine import read_hyperfine_json, write_hyperfine_json
from ._power import (
    PowerPlan,
    minimum_detectable_effect,
    plan_from_pilot,
    power_at_n,
    runs_needed,
)
from ._published import data_path, published_figures
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

# --- end section: stats ---

# --- section: experiments (issue 5) ---
from ._env import capture_environment
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

# --- end section: experiments ---

# --- section: remote (issue 6) ---
from .servers._proxy import (
    NetworkProfile,
    get_profile,
    profile_names,
    pull_recording_proxy_cpu,
    register_runner_layers,
    remote_registry_factory,
)

register_runner_layers()  # network_profile="lan-1g" etc. work in experiment specs
# --- end section: remote ---

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = sorted(
    name for name in dir() if not name.startswith("_") and name not in {"annotations", "logging"}
)
