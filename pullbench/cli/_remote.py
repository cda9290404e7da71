"""Remote registries on the command line: ``pullbench image mirror``, ``pullbench net ...``.

``image mirror SRC DEST`` pulls an image through pullbench's own registry client (token flow,
redirects, CA bundles) and pushes it with the image push code, so a report measured on a public
image (``docker.io/library/debian:bookworm``) can be replicated on exactly that image from a local
registry. ``net profiles`` lists the network profiles; ``net selftest`` measures what the shaping
proxy achieves.

Real public registries (needs internet; anonymous pull tokens from each registry's realm)::

    pullbench pull docker.io/library/debian:bookworm -s containerd-1m     # Hub: library/ prefix
    pullbench pull quay.io/prometheus/busybox:latest -s go-iocopy
    pullbench pull ghcr.io/OWNER/IMAGE:TAG -s go-iocopy
    pullbench registry serve --root /tmp/mirror --port 5000 &
    pullbench image mirror docker.io/library/debian:bookworm \
        127.0.0.1:5000/mirror/debian:bookworm --dest-plain-http
    pullbench pull --plain-http 127.0.0.1:5000/mirror/debian@sha256:...   # digest printed above
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace

import click

from ..images._mirror import mirror_image
from ._common import handle_errors

__all__ = ["COMMANDS"]

logger = logging.getLogger(__name__)


def _split_creds(text: str | None, what: str) -> tuple[str, str] | None:
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise click.BadParameter(f"{what} must look like USER:PASSWORD", param_hint=what)
    return user, password


@click.command("mirror")
@click.argument("source")
@click.argument("destination")
@click.option("--platform", default=None, help="os/arch[/variant] to select from an index.")
@click.option("--src-plain-http", is_flag=True, help="Plain HTTP to the source registry.")
@click.option("--src-ca-bundle", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CA bundle (PEM) for the source registry.")
@click.option("--src-creds", envvar="PULLBENCH_SRC_CREDS", default=None, metavar="USER:PASS",
              help="Source credentials (or env PULLBENCH_SRC_CREDS; never logged).")
@click.option("--dest-plain-http", is_flag=True, help="Plain HTTP to the destination registry.")
@click.option("--dest-ca-bundle", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CA bundle (PEM) for the destination registry.")
@click.option("--dest-creds", envvar="PULLBENCH_DEST_CREDS", default=None, metavar="USER:PASS",
              help="Destination credentials (or env PULLBENCH_DEST_CREDS; never logged).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def mirror_cmd(source: str, destination: str, platform: str | None, src_plain_http: bool,
               src_ca_bundle: str | None, src_creds: str | None, dest_plain_http: bool,
               dest_ca_bundle: str | None, dest_creds: str | None, as_json: bool) -> None:
    """Copy SOURCE to DESTINATION through pullbench's client (one platform, digests kept).

    SOURCE is e.g. docker.io/library/debian:bookworm. One platform is copied byte for byte
    (digests preserved), so a report can be replicated on exactly that image from a local
    registry.
    """
    result = mirror_image(
        source, destination, platform=platform, src_plain_http=src_plain_http,
        src_ca_bundle=src_ca_bundle, src_credentials=_split_creds(src_creds, "--src-creds"),
        dest_plain_http=dest_plain_http, dest_ca_bundle=dest_ca_bundle,
        dest_credentials=_split_creds(dest_creds, "--dest-creds"),
    )
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2))
    else:
        click.echo(f"{result.source} -> {result.destination}\n"
                   f"  manifest {result.manifest_digest}\n"
                   f"  {result.total_bytes / 1e6:.1f} MB of blobs\n"
                   f"  pull it by digest: {result.destination.rsplit(':', 1)[0]}"
                   f"@{result.manifest_digest}")


@click.group("net")
def net_group() -> None:
    """Network profiles and the shaping proxy."""


@net_group.command("profiles")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def profiles_cmd(as_json: bool) -> None:
    """List the named network profiles (use them as network_profile in experiment specs)."""
    from ..servers._proxy import PROFILES

    if as_json:
        click.echo(json.dumps({n: p.to_dict() for n, p in PROFILES.items()}, indent=2))
        return
    click.echo(f"{'name':<14}{'rtt_ms':>8}{'Mbit/s':>10}  proxy")
    for name, p in PROFILES.items():
        rate = f"{p.bandwidth_mbit_s:g}" if p.bandwidth_mbit_s else "-"
        click.echo(f"{name:<14}{p.rtt_ms:>8g}{rate:>10}  {'yes' if p.use_proxy else 'no'}")
    click.echo("custom: --profile 'custom:rtt_ms=5,bandwidth_mbit_s=100' "
               "(keys: rtt_ms, bandwidth_mbit_s, per_connection_mbit_s, jitter_ms, "
               "max_send_bytes, seed)")


@net_group.command("selftest")
@click.option("--profile", "profiles", multiple=True,
              help="Profile(s) to check (repeatable); default: one per --rate.")
@click.option("--rate", "rates", multiple=True, type=click.FloatRange(min=0.001),
              help="Target Mbit/s (repeatable; default 10, 100, 1000).")
@click.option("--rtt-ms", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Added RTT for --rate targets.")
@click.option("--duration-s", type=click.FloatRange(min=0.05, max=30), default=1.0,
              show_default=True, help="Length of each bulk transfer at the target rate.")
@click.option("--json", "as_json", is_flag=True, help="Print rows as JSON.")
@handle_errors
def selftest_cmd(profiles: tuple[str, ...], rates: tuple[float, ...], rtt_ms: float,
                 duration_s: float, as_json: bool) -> None:
    """Measure the shaping proxy: throughput within ±5 % and added RTT within ±1 ms?"""
    from ..servers._proxy import NetworkProfileError, selftest

    try:
        rows = selftest(list(profiles) or None, rates_mbit_s=rates or (10.0, 100.0, 1000.0),
                        rtt_ms=rtt_ms, duration_s=duration_s)
    except NetworkProfileError as exc:
        raise click.BadParameter(str(exc), param_hint="--profile") from exc
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        click.echo(f"{'profile':<40}{'target':>9}{'achieved':>10}{'err%':>7}"
                   f"{'rtt':>8}{'added':>8}{'err':>7}{'cpu_s':>7}  ok")
        for r in rows:
            click.echo(f"{r.profile[:39]:<40}{r.target_mbit_s:>9.1f}{r.achieved_mbit_s:>10.1f}"
                       f"{r.throughput_error_pct:>7.2f}{r.target_rtt_ms:>8.2f}"
                       f"{r.added_rtt_ms:>8.2f}{r.rtt_error_ms:>7.2f}{r.proxy_cpu_s:>7.2f}"
                       f"  {'yes' if r.passed else 'NO'}")
    if not all(r.passed for r in rows):
        raise click.ClickException("the shaping proxy missed its targets (see the table); the "
                                   "machine may be busy: retry, or use lower rates")


@net_group.command("proxy")
@click.option("--upstream", required=True, metavar="HOST:PORT",
              help="The registry to shape traffic to (e.g. 127.0.0.1:5000).")
@click.option("--profile", default="wan-50m", show_default=True,
              help="Network profile name or custom spec (see `pullbench net profiles`).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port to listen on (0 picks a free one).")
@click.option("--for-s", "for_s", type=click.FloatRange(min=0.1), default=None,
              help="Stop after this many seconds (default: until Ctrl-C).")
@handle_errors
def proxy_cmd(upstream: str, profile: str, port: int, for_s: float | None) -> None:
    """Run a shaping proxy in front of a registry, e.g. for skopeo, ctr or curl pulls.

    Pull from the printed address instead of the registry's; TLS passes through unchanged.
    """
    import time

    from ..servers._proxy import NetworkProfileError, ShapingProxy, get_profile

    try:
        prof = get_profile(profile)
    except NetworkProfileError as exc:
        raise click.BadParameter(str(exc), param_hint="--profile") from exc
    if ":" not in upstream:
        raise click.BadParameter("expected HOST:PORT", param_hint="--upstream")
    with ShapingProxy(upstream, replace(prof, use_proxy=True), listen_port=port) as proxy:
        click.echo(f"shaping {proxy.address} -> {upstream} ({prof.name}); pull from "
                   f"{proxy.address}", err=True)
        end = None if for_s is None else time.monotonic() + for_s
        try:
            while end is None or time.monotonic() < end:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        stats = proxy.stats()
        click.echo(f"{stats['connections']} connections, {stats['bytes_to_client']} bytes to "
                   f"clients, proxy CPU {proxy.cpu_s():.2f} s", err=True)


def _attach_mirror() -> None:
    """``mirror`` lives in the ``image`` group owned by the images CLI."""
    from ._images import image_group

    if "mirror" not in image_group.commands:
        image_group.add_command(mirror_cmd)


_attach_mirror()

COMMANDS: list[click.Command] = [net_group]
