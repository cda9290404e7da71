"""TLS material for pullbench's servers, made by ``trustme``: a private CA, server certificates.

The client is given the CA bundle file (``ca_bundle``); verification is never switched off.
Certificates cover ``127.0.0.1``, ``127.0.0.2``, ``::1`` and ``localhost`` by default, so the
same material serves a registry, the shaping proxy in front of it (TLS passes through the proxy
end to end), a token server and a blob host on another loopback address.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trustme

from .._errors import ServerError

__all__ = ["TLSMaterial", "make_tls_material"]

logger = logging.getLogger(__name__)

DEFAULT_HOSTS: tuple[str, ...] = ("127.0.0.1", "127.0.0.2", "::1", "localhost")


@dataclass(frozen=True, slots=True)
class TLSMaterial:
    """Files of one CA and one server certificate (PEM).

    Attributes
    ----------
    directory : Path
        Where the files live.
    ca_bundle : Path
        The CA certificate: hand this to the client (``pull(..., ca_bundle=...)``,
        ``curl --cacert``, ``skopeo --src-cert-dir``).
    cert_chain : Path
        Server certificate followed by its chain (for Distribution's ``http.tls.certificate``).
    key : Path
        Server private key (mode 0600; Distribution's ``http.tls.key``).
    hosts : tuple of str
        Identities (IP addresses / DNS names) in the certificate's subjectAltName.
    owns_directory : bool
        True when :func:`make_tls_material` made ``directory`` (a temporary one): :meth:`close`
        (or leaving a ``with`` block) deletes it then, and never a directory the caller gave.
    """

    directory: Path
    ca_bundle: Path
    cert_chain: Path
    key: Path
    hosts: tuple[str, ...]
    owns_directory: bool = False

    def close(self) -> None:
        """Delete ``directory`` if :func:`make_tls_material` created it; else do nothing."""
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> TLSMaterial:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def server_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` for a server (TLS ≥ 1.2) presenting this certificate."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.cert_chain), str(self.key))
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` for a client that trusts only this CA (hostname checked)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_bundle))
        return ctx


def make_tls_material(
    directory: str | Path | None = None,
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    valid_days: int = 30,
    expired: bool = False,
) -> TLSMaterial:
    """Create a CA and a server certificate with ``trustme`` and write them as PEM files.

    Parameters
    ----------
    directory : str or Path, optional
        Where to write ``ca.pem``, ``server-chain.pem`` and ``server-key.pem``; a new temporary
        directory when omitted, deleted by :meth:`TLSMaterial.close` (or use the result as a
        context manager: ``with make_tls_material() as tls: ...``).
    hosts : sequence of str
        subjectAltName identities (IP addresses or DNS names).
    valid_days : int
        Validity of the server certificate from now.
    expired : bool
        Make a certificate that expired yesterday (to test that errors name the problem).

    Returns
    -------
    TLSMaterial

    Raises
    ------
    ServerError
        The directory cannot be written or ``hosts`` is empty.
    """
    if not hosts:
        raise ServerError("make_tls_material needs at least one host (IP address or DNS name)")
    owns = directory is None
    root = Path(directory) if directory is not None else Path(
        tempfile.mkdtemp(prefix="pullbench-tls-"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name="pullbench test CA")
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            not_before = now - datetime.timedelta(days=2)
            not_after = now - datetime.timedelta(days=1)
        else:
            not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(
                days=valid_days)
        leaf = ca.issue_cert(*hosts, organization_name="pullbench server",
                             not_before=not_before, not_after=not_after)
        ca_path = root / "ca.pem"
        chain_path = root / "server-chain.pem"
        key_path = root / "server-key.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        chain_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key_path.touch(mode=0o600)
        key_path.write_bytes(leaf.private_key_pem.bytes())
    except OSError as exc:
        if owns:
            shutil.rmtree(root, ignore_errors=True)
        raise ServerError(f"cannot write TLS material to {root}: {exc}") from exc
    except BaseException:
        if owns:
            shutil.rmtree(root, ignore_errors=True)
        raise
    logger.info("TLS material for %s in %s", ", ".join(hosts), root)
    return TLSMaterial(directory=root, ca_bundle=ca_path, cert_chain=chain_path, key=key_path,
                       hosts=tuple(hosts), owns_directory=owns)
