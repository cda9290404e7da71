"""Experiments: spec → randomized blocks → worker processes → tidy rows → analysis → report.

Modules
-------
_spec
    :class:`ExperimentSpec` (the keys papermill and ``--spec`` files pass) and the design.
_endpoints
    Where the puller connects: registry factories, network-profile and TLS layers.
_runner
    :func:`run_experiment`: preflight, registry and images, one worker process per pull.
_results, _env
    The results folder (``rows.jsonl`` …) and ``environment.json`` provenance.
_analysis, _report
    :func:`analyze_results` (the typed analysis) and the HTML report.
_hyperfine, _published
    Reading hyperfine JSON and the published figures shipped with the package.

Public names are re-exported by :mod:`pullbench`.
"""
