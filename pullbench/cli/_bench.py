"""CLI commands of the experiments area: ``bench``, ``analyze``, ``report``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from .._errors import ParameterWarning
from ..stats._defaults import DEFAULT_MARGIN
from ._common import echo_warnings, export_options, handle_errors, write_exports
from ._gate import analysis_verdicts, check_gates, gate_options, parse_gates, require_gate_arms

logger = logging.getLogger(__name__)

#: ``--quick``: about a minute on a 2-core machine (default arms, the default image).
QUICK = {"blocks": 4, "warmup_blocks": 1}


def _parse_param(text: str) -> tuple[str | None, str, str]:
    """``ARM.KEY=VALUE`` or ``KEY=VALUE`` (all arms)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r}: expected [ARM.]KEY=VALUE, e.g. pr48602.write_size=64k",
                                 param_hint="--param")
    arm, dot, name = key.rpartition(".")
    return (arm if dot else None), name, value


def _named_commands(option: str, texts: tuple[str, ...]) -> dict[str, str]:
    """``NAME=COMMAND`` (repeatable option) -> ``{NAME: COMMAND}``."""
    out: dict[str, str] = {}
    for text in texts:
        name, sep, command = text.partition("=")
        if not sep or not name.strip() or not command.strip():
            raise click.BadParameter(f"{text!r}: expected NAME='shell command', e.g. "
                                     "curl='curl -sfo {dest}/m {url}/v2/{repo}/manifests/{tag}'",
                                     param_hint=option)
        out[name.strip()] = command
    return out


def _command_arms(commands: tuple[str, ...], setups: tuple[str, ...], prepares: tuple[str, ...],
                  cleanups: tuple[str, ...]) -> list[dict[str, Any]]:
    """The ``command`` arms of ``--command NAME=...`` with their --setup/--prepare/--cleanup."""
    arms = _named_commands("--command", commands)
    extra = {key: _named_commands(f"--{key}", texts)
             for key, texts in (("setup", setups), ("prepare", prepares), ("cleanup", cleanups))}
    for key, by_name in extra.items():
        unknown = sorted(set(by_name) - set(arms))
        if unknown:
            raise click.BadParameter(f"no --command arm named {', '.join(unknown)}",
                                     param_hint=f"--{key}")
    return [{"kind": "command", "name": name,
             "params": {"command": command, **{k: v[name] for k, v in extra.items() if name in v}}}
            for name, command in arms.items()]


def _tables_only_note() -> str:
    """`` (tables only; <why, and the extra to install>)`` when reports cannot hold plots."""
    from ..experiment._report import plots_unavailable

    reason = plots_unavailable()
    return f" (tables only; {reason})" if reason else ""


@click.command("bench")
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Run a saved spec (YAML/TOML/JSON); other options override its keys.")
@click.option("--image", "images", multiple=True,
              help="Fixture image (catalog name) or, with a URL registry, repo:tag. Repeatable. "
                   "Default synthetic-256m.")
@click.option("--registry", help="embedded (default), distribution, or a URL http://host:port.")
@click.option("--arms", help="Comma-separated strategy presets and real pullers (docker, ctr-pull, "
                             "ctr-fetch, skopeo); the first is the baseline unless --baseline. "
                             "Default: go-iocopy,pr48602,pools-bufio32k,containerd-1m,"
                             "requests-iter-content,splice.")
@click.option("--command", "commands", multiple=True,
              help="An arm running a shell command, NAME='COMMAND' (placeholders {ref} {registry} "
                   "{repo} {tag} {digest} {dest} {url} {ca}); only COMMAND is timed. Repeatable.")
@click.option("--setup", "setups", multiple=True,
              help="NAME='COMMAND' run once before the runs of command arm NAME.")
@click.option("--prepare", "prepares", multiple=True,
              help="NAME='COMMAND' run (untimed) before every run of command arm NAME.")
@click.option("--cleanup", "cleanups", multiple=True,
              help="NAME='COMMAND' run (untimed) after every run of command arm NAME.")
@click.option("--trace", is_flag=True,
              help="Trace the real pullers with strace (write/read-size histograms of the layer "
                   "files); traced arms are named ARM[trace=True], never pooled with untraced.")
@click.option("--baseline", help="Arm to compare against (default: first arm).")
@click.option("--param", "params", multiple=True,
              help="Strategy parameter override [ARM.]KEY=VALUE (e.g. pr48602.write_size=64k). "
                   "Without ARM. it goes to every arm whose strategy has KEY (a warning lists "
                   "them). A parameter that cannot take effect given the others is warned "
                   "about. Repeatable.")
@click.option("--blocks", type=click.IntRange(min=1),
              help="Blocks, each running every arm once in random order (default 20).")
@click.option("--warmup-blocks", type=click.IntRange(min=0),
              help="Warm-up blocks, recorded but not analysed (default 1).")
@click.option("--seed", type=int, help="Seed of the randomized run order.")
@click.option("--margin", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help=f"Equivalence margin as a fraction (default {DEFAULT_MARGIN}).")
@click.option("--concurrency", type=click.IntRange(min=1), help="Concurrent layer downloads.")
@click.option("--quick", is_flag=True, help="A short run (about a minute): 4 blocks + 1 warm-up.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Results folder (default results/<timestamp>-<name>).")
@click.option("--resume", "resume_dir",
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Continue the interrupted experiment in this results folder.")
@click.option("--network-profile",
              help="Network between puller and registry: loopback (default) or a shaping-proxy "
                   "profile (list them with `pullbench net profiles`, e.g. lan-1g, wan-200m).")
@click.option("--tls", is_flag=True, help="The registry serves TLS itself (trustme certificates).")
@click.option("--drop-caches", is_flag=True,
              help="Drop the page cache before every run (root only): cache_state=cold.")
@click.option("--in-process", is_flag=True, help="Run pulls in this process, not a fresh worker.")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path),
              help="Where content stores are written (default: inside the results folder).")
@click.option("--no-probes", is_flag=True,
              help="Pull without the puller's probes: no per-thread CPU time, /proc I/O "
                   "counters, peak RSS or read/write-size counts are taken (those columns are "
                   "empty, and CPU metrics such as cpu_ns_per_byte are skipped in the analysis "
                   "with a note). Wall times, sizes and digest checks are unchanged.")
@click.option("--cpus",
              help="CPU affinity of the roles: auto (default: on 2+ CPUs the registry and proxy "
                   "get the lower half, the puller the rest), off, or e.g. puller=1,registry=0 "
                   "(roles puller, registry, proxy, daemons). Recorded in environment.json.")
@click.option("--wait-quiet", "wait_quiet_s", type=click.FloatRange(min=0), is_flag=False,
              flag_value=300.0, default=None, metavar="[SECONDS]",
              help="Before the first run, wait until the machine has been quiet for 5 s "
                   "(at most SECONDS, default 300); see `pullbench system check`.")
@click.option("--require-quiet", is_flag=True,
              help="Refuse to start unless the machine is quiet (after --wait-quiet, if given).")
@click.option("--no-report", is_flag=True, help="Skip the HTML report.")
@click.option("--progress/--no-progress", default=True, help="Progress bar with ETA.")
@export_options
@click.option("--include-retried", is_flag=True,
              help="Analyse runs that needed retries or resumes too (default: they are left out "
                   "of the verdicts, counted and reported: they measured the faults as well as "
                   "the copy).")
@gate_options
@handle_errors
@echo_warnings(ParameterWarning)
def bench(spec_file: Path | None, images: tuple[str, ...], registry: str | None,
          arms: str | None, baseline: str | None, params: tuple[str, ...], blocks: int | None,
          warmup_blocks: int | None, seed: int | None, margin: float | None,
          concurrency: int | None, quick: bool, out: Path | None, resume_dir: Path | None,
          network_profile: str | None, tls: bool, drop_caches: bool, in_process: bool,
          dest: Path | None, no_probes: bool, cpus: str | None, wait_quiet_s: float | None,
          require_quiet: bool, no_report: bool, progress: bool, include_retried: bool,
          fail_on: tuple[str, ...], fail_if_not: tuple[str, ...], export_json: Path | None,
          export_csv: Path | None, export_markdown: Path | None, commands: tuple[str, ...] = (),
          setups: tuple[str, ...] = (), prepares: tuple[str, ...] = (),
          cleanups: tuple[str, ...] = (), trace: bool = False) -> None:
    """Run an experiment and print verdicts (the main job).

    Without options: starts the embedded registry, builds and pushes synthetic-256m if it is not
    cached, runs the default arms in randomized blocks (each pull in a fresh worker process),
    prints the verdict tables for wall time and CPU time per byte, and writes
    results/<timestamp>-bench/ with rows.jsonl, rows.parquet, rows.csv, environment.json,
    analysis.json and report.html.
    """
    from ..experiment._analysis import analyze_folder
    from ..experiment._report import format_analysis, render_report
    from ..experiment._runner import ExperimentInterrupted, preflight, run_experiment
    from ..experiment._spec import ExperimentSpec, load_spec

    parsed_params = [_parse_param(p) for p in params]
    gates = parse_gates(fail_on, fail_if_not)
    if resume_dir is not None:
        given = [n for n, v in (("--spec", spec_file), ("--image", images), ("--arms", arms),
                                ("--param", params), ("--blocks", blocks), ("--quick", quick),
                                ("--out", out), ("--command", commands),
                                ("--trace", trace)) if v]
        if given:
            raise click.UsageError(f"--resume continues the saved spec; drop {', '.join(given)}")
        spec = None
        out = resume_dir
    else:
        spec = load_spec(spec_file) if spec_file else ExperimentSpec()
        overrides: dict[str, Any] = {
            "images": tuple(images) or None, "registry": registry, "blocks": blocks,
            "warmup_blocks": warmup_blocks, "seed": seed, "margin": margin,
            "concurrency": concurrency, "baseline": baseline,
            "network_profile": network_profile, "tls": True if tls else None,
        }
        if quick:
            overrides.update({k: v for k, v in QUICK.items() if overrides.get(k) is None})
            if spec_file is None:
                overrides["name"] = "quick"
        if arms:
            overrides["arms"] = tuple(a.strip() for a in arms.split(",") if a.strip())
        command_arms = _command_arms(commands, setups, prepares, cleanups)
        if command_arms:
            overrides["arms"] = (*(overrides.get("arms") or [a.to_dict() for a in spec.arms]),
                                 *command_arms)
        if drop_caches:
            overrides["cache_policy"] = "drop"
        if in_process:
            overrides["isolation"] = "inprocess"
        if no_probes:
            overrides["probes"] = False
        if dest is not None:
            overrides["dest_dir"] = str(dest)
        if cpus is not None:
            overrides["cpus"] = cpus
        spec = spec.with_overrides(**overrides)
        if parsed_params:
            spec = spec.with_params(parsed_params)
        if trace:
            if not any(a.external for a in spec.arms):
                raise click.UsageError("--trace traces the real pullers (docker, ctr-pull, "
                                       "ctr-fetch, skopeo, --command); no arm is one")
            spec = spec.with_params([(a.name, "trace", True) for a in spec.arms if a.external])
        preflight(spec, check_registry=True)  # arms, profile, images, registry: before announcing
        require_gate_arms(gates, ((a.name, a.strategy) for a in spec.arms), spec.baseline)
        click.echo(f"experiment {spec.name}: {len(spec.arms)} arms x {spec.blocks} blocks "
                   f"(+{spec.warmup_blocks} warm-up) x {len(spec.images)} image(s) = "
                   f"{spec.total_runs} runs on the {spec.registry} registry "
                   f"({spec.network_profile}{', TLS' if spec.tls else ''})", err=True)
    check = _preflight_machine(wait_quiet_s, require_quiet)
    try:
        result = run_experiment(spec, out, resume=resume_dir is not None, progress=progress,
                                system_check=check)
    except ExperimentInterrupted as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        click.echo("interrupted before a new run finished; rows already written are kept", err=True)
        raise SystemExit(130) from None
    click.echo(f"{result.completed_runs} runs ({result.error_runs} failed) in {result.directory}",
               err=True)
    analysis = analyze_folder(result.directory, include_retried=include_retried)
    click.echo(format_analysis(analysis))
    if not no_report:
        path = render_report(result.directory)
        click.echo(f"\nreport: {path}{_tables_only_note()}")
    write_exports(analysis, export_json, export_csv, export_markdown)
    click.echo(f"results: {result.directory}")
    check_gates(gates, analysis_verdicts(analysis, result.spec.metrics[0]))


def _preflight_machine(wait_quiet_s: float | None, require_quiet: bool) -> dict[str, Any]:
    """The machine check before the first run (waiting with --wait-quiet); its record."""
    from ..experiment._system import system_check, wait_quiet

    record: dict[str, Any]
    if wait_quiet_s is not None:
        click.echo(f"waiting (at most {wait_quiet_s:.0f} s) for the machine to be quiet ...",
                   err=True)
        waited = wait_quiet(wait_quiet_s)
        check = waited.last
        record = {**check.to_dict(), "wait": {k: v for k, v in waited.to_dict().items()
                                              if k != "last"}}
        click.echo(f"{'quiet' if waited.quiet else 'still not quiet'} after "
                   f"{waited.waited_s:.0f} s", err=True)
    else:
        check = system_check(0.5)
        record = check.to_dict()
    click.echo(check.summary(), err=True)
    for problem in check.problems:
        click.echo(f"  to fix: {problem}", err=True)
    if require_quiet and not check.quiet:
        from .._errors import BenchmarkError

        raise BenchmarkError(
            "--require-quiet: the machine is not quiet (" + "; ".join(check.problems[:2])
            + "); fix that, or wait for it with --wait-quiet[=SECONDS], or drop --require-quiet"
        )
    return record


@click.command("analyze")
@click.argument("results", type=click.Path(exists=True, path_type=Path))
@click.option("--baseline", help="Baseline arm (default: the spec's).")
@click.option("--metric", "metrics", multiple=True,
              help="Column to analyse (repeatable); default: the spec's (duration_s, "
                   "cpu_ns_per_byte). Analyses add up: the metrics analysis.json already holds "
                   "are kept (analysed again with these settings); only these are printed.")
@click.option("--margin", type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--alpha", type=click.FloatRange(0, 0.5, min_open=True, max_open=True))
@click.option("--include-retried", is_flag=True,
              help="Analyse runs that needed retries or resumes too (default: they are left out "
                   "of the verdicts, counted and reported: they measured the faults as well as "
                   "the copy).")
@click.option("--exclude-disturbed", is_flag=True,
              help="Verdicts on the quiet blocks only: leave out the blocks with a run the "
                   "interference probes flag as disturbed.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the analysis as JSON on stdout (what analysis.json holds), nothing "
                   "else; messages go to stderr.")
@export_options
@gate_options
@handle_errors
def analyze(results: Path, baseline: str | None, metrics: tuple[str, ...],
            margin: float | None, alpha: float | None, include_retried: bool,
            exclude_disturbed: bool, as_json: bool, export_json: Path | None,
            export_csv: Path | None, export_markdown: Path | None, fail_on: tuple[str, ...],
            fail_if_not: tuple[str, ...]) -> None:
    """Re-run the statistics on a results folder (failed runs, and runs that needed retries or
    resumes, excluded and counted).

    With --fail-on / --fail-if-not it exits 3 when a gate fails (judged on the first --metric,
    else the first analysed metric), after analysis.json is written.
    """
    from ..experiment._analysis import analyze_folder, save_analysis
    from ..experiment._report import format_analysis
    from ..experiment._results import consolidate_results

    gates = parse_gates(fail_on, fail_if_not)
    directory = results if results.is_dir() else results.parent
    analysis = analyze_folder(directory, baseline=baseline, metrics=metrics or None,
                              margin=margin, alpha=alpha, save=False,
                              exclude_disturbed=exclude_disturbed,
                              include_retried=include_retried)
    written = save_analysis(directory, analysis)
    if (directory / "rows.jsonl").exists():
        consolidate_results(directory)
    if as_json:
        import json

        from ..experiment._results import _jsonable

        click.echo(json.dumps(_jsonable(analysis.to_dict()), indent=2, allow_nan=False))
    else:
        click.echo(format_analysis(analysis, metrics or None))
    if written:
        click.echo(f"\nanalysis: {directory / 'analysis.json'}", err=as_json)
    else:
        click.echo(f"\nanalysis unchanged: {directory / 'analysis.json'} (not rewritten)",
                   err=as_json)
    write_exports(analysis, export_json, export_csv, export_markdown)
    if gates:
        arms_seen = {(a.arm, a.strategy) for block in analysis.images.values() for a in block.arms}
        require_gate_arms(gates, sorted(arms_seen), analysis.baseline)
        check_gates(gates, analysis_verdicts(analysis, metrics[0] if metrics else None))


@click.command("report")
@click.argument("results", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="HTML file to write (default RESULTS/report.html).")
@handle_errors
def report(results: Path, output: Path | None) -> None:
    """Render an HTML report (plots embedded) for a results folder."""
    from ..experiment._report import render_report

    path = render_report(results, output)
    click.echo(str(path))
    note = _tables_only_note()
    if note:
        click.echo(f"{path.name}{note}", err=True)


@click.command("compare")
@click.argument("run_a", type=click.Path(exists=True, path_type=Path))
@click.argument("run_b", type=click.Path(exists=True, path_type=Path))
@click.option("--metric", "metrics", multiple=True,
              help="Column to compare (repeatable); default: RUN_A's spec metrics (duration_s, "
                   "cpu_ns_per_byte). Gates are judged on the first.")
@click.option("--arm", "arms", multiple=True,
              help="Arm to compare (repeatable); default: every arm both runs have.")
@click.option("--margin", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Equivalence margin as a fraction (default: RUN_A's spec).")
@click.option("--alpha", type=click.FloatRange(0, 0.5, min_open=True, max_open=True))
@click.option("--json", "as_json", is_flag=True,
              help="Print the comparison as JSON on stdout, nothing else.")
@export_options
@gate_options
@handle_errors
def compare(run_a: Path, run_b: Path, metrics: tuple[str, ...], arms: tuple[str, ...],
            margin: float | None, alpha: float | None, as_json: bool,
            export_json: Path | None, export_csv: Path | None, export_markdown: Path | None,
            fail_on: tuple[str, ...], fail_if_not: tuple[str, ...]) -> None:
    """Compare the same arms across two results folders: RUN_A (before) vs RUN_B (after).

    Each arm of RUN_B against the same arm of RUN_A, unpaired (the runs were not interleaved:
    Welch's test, Fieller's CI of the ratio B/A, TOST; Holm across arms), with every difference
    of the two environment records listed (machine, load, packages, commit, registry, network,
    spec). With --fail-on / --fail-if-not it exits 3 when an arm's verdict (B vs A, on the
    first metric) trips a gate.
    """
    import json

    from ..experiment._compare import compare_runs, format_run_comparison
    from ._gate import GateInput

    gates = parse_gates(fail_on, fail_if_not)
    comparison = compare_runs(run_a, run_b, metrics=metrics or None, arms=arms or None,
                              margin=margin, alpha=alpha)
    if as_json:
        from ..experiment._results import _jsonable

        click.echo(json.dumps(_jsonable(comparison.to_dict()), indent=2, allow_nan=False))
    else:
        click.echo(format_run_comparison(comparison))
    write_exports(comparison, export_json, export_csv, export_markdown)
    if gates:
        primary = comparison.metrics[0]
        compared = sorted({(r.arm, r.arm) for r in comparison.rows})
        require_gate_arms(gates, compared, baseline="")
        check_gates(gates, [GateInput(f"{r.image} (B vs A)", r.metric, r.arm, r.arm, r.verdict)
                            for r in comparison.rows if r.metric == primary])


COMMANDS: list[click.Command] = [bench, analyze, report, compare]
