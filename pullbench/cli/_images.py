"""CLI commands for registries and fixture images (registered by pullbench.cli).

``pullbench registry serve``, ``pullbench image build|push|import|list``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .._errors import ImageBuildError
from ._common import handle_errors

if TYPE_CHECKING:
    from ..images._oci import ImageLayout

logger = logging.getLogger(__name__)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _resolve_image(name: str) -> ImageLayout:
    from ..images._catalog import build_image, catalog
    from ..images._oci import ImageLayout

    if name in catalog:
        return build_image(name)
    path = Path(name)
    if (path / "index.json").is_file():
        return ImageLayout(path, path.name)
    raise ImageBuildError(f"{name!r} is neither a catalog image (see `pullbench image list`) nor "
                          "an OCI image layout directory")


@click.group("registry")
def registry_group() -> None:
    """Run a registry to pull from."""


@registry_group.command("serve")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Storage directory (created if missing, kept afterwards).")
@click.option("--port", type=click.IntRange(0, 65535), default=5000, show_default=True,
              help="TCP port (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (embedded only; Distribution binds 127.0.0.1).")
@click.option("--kind", type=click.Choice(["embedded", "distribution"]), default="embedded",
              show_default=True,
              help="The embedded Python registry, or Debian's docker-registry (Distribution).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="PEM certificate chain: serve HTTPS (with --tls-key).")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="PEM private key for --tls-cert.")
@click.option("--push", "push_names", multiple=True, metavar="NAME",
              help="Catalog image (or OCI layout dir) to load as NAME:latest before serving "
                   "(repeatable; the embedded registry loads it directly, Distribution gets a "
                   "push).")
@click.option("--ca-bundle", type=click.Path(dir_okay=False, exists=True), default=None,
              help="CA bundle for --push into a TLS Distribution registry.")
@click.option("--idle-timeout", "idle_timeout_s", type=click.FloatRange(0, min_open=True),
              default=60.0, show_default=True, metavar="SECONDS",
              help="Embedded: drop a connection when one read or write waits this long (idle "
                   "keep-alive, stalled upload body, client not reading).")
@click.option("--request-timeout", "request_timeout_s", type=click.FloatRange(0, min_open=True),
              default=30.0, show_default=True, metavar="SECONDS",
              help="Embedded: drop a connection whose request line and headers are not complete "
                   "this long after their first byte (slowloris).")
@handle_errors
def serve(root: Path, port: int, host: str, kind: str, tls_cert: Path | None,
          tls_key: Path | None, push_names: tuple[str, ...], ca_bundle: str | None,
          idle_timeout_s: float, request_timeout_s: float) -> None:
    """Serve a registry from ROOT until Ctrl-C."""
    import ssl
    import time

    from ..images._catalog import catalog
    from ..images._oci import push_image
    from ..servers._distribution import DistributionRegistry
    from ..servers._embedded import EmbeddedRegistry

    if (tls_cert is None) != (tls_key is None):
        raise click.BadParameter("pass both --tls-cert and --tls-key, or neither",
                                 param_hint="--tls-cert/--tls-key")
    reg: EmbeddedRegistry | DistributionRegistry
    if kind == "embedded":
        ctx = None
        if tls_cert is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(tls_cert, tls_key)
        reg = EmbeddedRegistry(root, host=host, port=port, ssl_context=ctx,
                               idle_timeout_s=idle_timeout_s, request_timeout_s=request_timeout_s)
    else:
        reg = DistributionRegistry(root, port=port, tls_cert=tls_cert, tls_key=tls_key)
    try:
        reg.start()
        for name in push_names:
            layout = _resolve_image(name)
            repo = Path(name).name if "/" in name and name not in catalog else name
            if isinstance(reg, EmbeddedRegistry):
                digest = reg.load_image(layout, repo, "latest")
            else:
                digest = push_image(layout, f"{reg.host}/{repo}:latest",
                                    plain_http=tls_cert is None, ca_bundle=ca_bundle)
            click.echo(f"pushed {reg.host}/{repo}:latest {digest}")
        click.echo(f"{kind} registry serving {reg.url} from {reg.root} (Ctrl-C stops)",
                   nl=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        reg.close()


@click.group("image")
def image_group() -> None:
    """Build, import, push and list fixture images."""


@image_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def list_cmd(as_json: bool) -> None:
    """List the catalog images."""
    from ..images._catalog import list_catalog

    entries = list_catalog()
    if as_json:
        click.echo(json.dumps([{"name": e.name, "source": e.source,
                                "approx_size_bytes": e.approx_size_bytes,
                                "needs_root": e.needs_root, "description": e.description}
                               for e in entries], indent=2))
        return
    for e in entries:
        root = " (root)" if e.needs_root else ""
        click.echo(f"{e.name:<22} ~{_mib(e.approx_size_bytes):>11}{root}  {e.description}")


@image_group.command("build")
@click.argument("name")
@handle_errors
def build_cmd(name: str) -> None:
    """Build catalog image NAME (cached: instant the second time) and print its layout."""
    from ..images._catalog import build_image

    layout = build_image(name)
    click.echo(f"{name} {layout.manifest_digest} {_mib(layout.total_size_bytes)} {layout.path}")


@image_group.command("push")
@click.argument("name")
@click.argument("target")
@click.option("--plain-http/--https", default=True, show_default=True,
              help="Talk plain HTTP (default) or HTTPS to the registry.")
@click.option("--ca-bundle", type=click.Path(dir_okay=False, exists=True), default=None,
              help="CA bundle to verify an HTTPS registry.")
@click.option("--user", default=None, help="USER:PASSWORD for basic auth.")
@handle_errors
def push_cmd(name: str, target: str, plain_http: bool, ca_bundle: str | None,
             user: str | None) -> None:
    """Push image NAME (catalog name or OCI layout dir) to TARGET (REGISTRY/REPO:TAG)."""
    from ..images._oci import push_image

    auth = None
    if user is not None:
        if ":" not in user:
            raise click.BadParameter("expected USER:PASSWORD", param_hint="--user")
        auth = tuple(user.split(":", 1))
    digest = push_image(_resolve_image(name), target, plain_http=plain_http,
                        ca_bundle=ca_bundle, auth=auth)
    click.echo(f"{target} {digest}")


@image_group.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--name", default=None, help="Label for the image (default: file name).")
@handle_errors
def import_cmd(path: Path, name: str | None) -> None:
    """Import an OCI layout (dir or tar) or a `docker save` tarball into the image cache."""
    from ..images._oci import import_image

    layout = import_image(path, name=name)
    click.echo(f"{layout.name} {layout.manifest_digest} {_mib(layout.total_size_bytes)} "
               f"{layout.path}")


COMMANDS: list[click.Command] = [registry_group, image_group]
