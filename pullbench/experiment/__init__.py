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
_analysis, _analysis_result
    :func:`analyze_folder` (a folder with its spec's settings), :func:`analyze_results`, and
    the typed result :class:`Analysis` that ``analysis.json`` stores.
_report
    The verdict tables as text and the HTML report.
_hyperfine, _published
    Reading hyperfine JSON and the published figures shipped with the package.

Public names are re-exported by :mod:`pullbench`.
"""
