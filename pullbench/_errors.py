"""The one exception tree of pullbench.

::

    PullbenchError
    ├── InvalidReference               (an image reference that does not parse; also ValueError)
    ├── RegistryError                  (context: registry, image_ref)
    │   ├── RegistryUnavailable        (cannot connect / 5xx)
    │   ├── AuthenticationError        (401/403 without usable credentials; names the realm)
    │   ├── ImageNotFound              (404 on a manifest or blob; names the reference)
    │   ├── ManifestError              (malformed JSON, unknown media type, no matching platform,
    │   │                               a digest algorithm other than sha256/sha512)
    │   ├── ResponseTooLarge           (a body read into memory passed its cap; names the cap)
    │   ├── ClientConfigError          (unusable client settings; also ValueError)
    │   └── BlobError
    │       ├── DigestMismatch         (bytes do not hash to the descriptor's digest)
    │       └── SizeMismatch           (short or long body vs the descriptor's size)
    │           └── CopyCancelled      (a copy stopped on purpose: the pull was cancelled)
    ├── StrategyError                  (unknown strategy or parameter; also ValueError)
    ├── ImageBuildError                (fixture images: unknown catalog entry, missing tool,
    │                                   no root)
    ├── ServerError                    (a server pullbench starts could not start; names the fix)
    │   └── DaemonError                (a daemon started for an arm failed; context: kind, log)
    │       ├── DaemonDied             (it exited while an experiment still needed it)
    │       └── ColdStateError         (an arm's state was not cold before a run)
    ├── ProgramBuildError              (a program pullbench builds — a dockerd variant, the Go
    │                                   copy harness — cannot be built: missing toolchain or
    │                                   source, unknown variant or parameter, failed compile)
    ├── BenchmarkError                 (experiment spec / runner problems)
    │   ├── ArmError                   (an external arm's kind or parameters; also ValueError)
    │   ├── NetworkProfileError        (unknown or invalid network profile; also ValueError)
    │   └── ExperimentInterrupted      (Ctrl-C; context: the result so far, for --resume)
    ├── ResultSchemaError              (results files; also ValueError)
    ├── StatsInputError                (degenerate statistical input; also ValueError)
    └── LayerError                     (context: layer digest, member, media type)
        ├── DecompressionError         (unknown media type, corrupt or truncated stream,
        │   │                           decompressor tool failed)
        │   └── DecompressionBomb      (a ratio or size cap was exceeded; names the cap)
        ├── DiffIdMismatch             (uncompressed digest ≠ the config's rootfs.diff_ids)
        ├── CorruptLayerError          (bad tar header, truncated tar, parent not a directory)
        └── UnsafeLayerError           (a member would act outside the root: ``../``, absolute
                                        names, symlinked parents, hard links or whiteouts
                                        that leave the root)

Warnings (``warnings.warn``, not errors: the run goes ahead)::

    RuntimeWarning
    └── StatsWarning                   (the statistics' warnings)
        └── DegenerateSampleWarning    (e.g. a constant sample; the analysis still runs)

    UserWarning
    └── ParameterWarning               (a strategy parameter cannot take effect given the others;
                                        an arm-less --param went to several arms)

Every error carries its context as attributes and a message that says what, where, and how to
fix it. No error message ever contains a credential.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArmError",
    "AuthenticationError",
    "BenchmarkError",
    "BlobError",
    "ClientConfigError",
    "ColdStateError",
    "CopyCancelled",
    "CorruptLayerError",
    "DaemonDied",
    "DaemonError",
    "DecompressionBomb",
    "DecompressionError",
    "DegenerateSampleWarning",
    "DiffIdMismatch",
    "DigestMismatch",
    "ExperimentInterrupted",
    "ImageBuildError",
    "ImageNotFound",
    "InvalidReference",
    "LayerError",
    "ManifestError",
    "NetworkProfileError",
    "ParameterWarning",
    "ProgramBuildError",
    "PullbenchError",
    "RegistryError",
    "RegistryUnavailable",
    "ResponseTooLarge",
    "ResultSchemaError",
    "ServerError",
    "SizeMismatch",
    "StatsInputError",
    "StatsWarning",
    "StrategyError",
    "UnsafeLayerError",
]


class PullbenchError(Exception):
    """Root of every error pullbench raises on purpose."""


class InvalidReference(PullbenchError, ValueError):
    """An image reference could not be parsed or violates the distribution-spec grammar."""


class RegistryError(PullbenchError):
    """A registry answered in a way the puller cannot use.

    Attributes
    ----------
    registry : str or None
        ``host[:port]`` of the registry.
    image_ref : str or None
        The reference being pulled.
    """

    def __init__(self, message: str, *, registry: str | None = None,
                 image_ref: str | None = None) -> None:
        super().__init__(message)
        self.registry = registry
        self.image_ref = image_ref


class RegistryUnavailable(RegistryError):
    """The registry could not be reached, or answered with a server error."""


class AuthenticationError(RegistryError):
    """The registry asked for credentials that pullbench does not have or that were refused."""


class ImageNotFound(RegistryError):
    """The manifest or blob named by a reference does not exist (HTTP 404)."""


class ManifestError(RegistryError):
    """A manifest or index is malformed, of an unknown media type, or has no matching platform."""


class ResponseTooLarge(RegistryError):
    """A body pullbench reads into memory (token, error body, manifest, list) passed its cap.

    Attributes
    ----------
    cap_bytes : int
        The cap that was passed (see ``pullbench.BODY_CAPS``).
    """

    def __init__(self, message: str, *, cap_bytes: int, registry: str | None = None,
                 image_ref: str | None = None) -> None:
        super().__init__(message, registry=registry, image_ref=image_ref)
        self.cap_bytes = cap_bytes


class ClientConfigError(RegistryError, ValueError):
    """The client was configured with something unusable (a CA bundle that does not exist, a
    retry policy out of range)."""


class BlobError(RegistryError):
    """A blob body could not be stored."""


class DigestMismatch(BlobError):
    """The bytes received do not hash to the digest that was asked for."""

    def __init__(self, message: str, *, expected: str, actual: str, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.expected = expected
        self.actual = actual


class SizeMismatch(BlobError):
    """The number of bytes received differs from the descriptor's ``size``."""

    def __init__(self, message: str, *, expected: int, actual: int, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.expected = expected
        self.actual = actual


class CopyCancelled(SizeMismatch):
    """A copy was stopped on purpose (the pull was cancelled, e.g. by Ctrl-C)."""


class StrategyError(PullbenchError, ValueError):
    """Unknown copy strategy, or a parameter it does not take or cannot accept."""


class ImageBuildError(PullbenchError):
    """A fixture image could not be built, imported or pushed."""


class ServerError(PullbenchError):
    """A server pullbench starts (embedded registry, Distribution, proxy, token server) failed."""


class DaemonError(ServerError):
    """A daemon pullbench starts for an arm (containerd, dockerd) could not start or failed.

    Attributes
    ----------
    kind : str
        ``containerd`` or ``dockerd``.
    log_tail : str
        The end of the daemon's log.
    """

    def __init__(self, message: str, *, kind: str = "", log_tail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.log_tail = log_tail


class DaemonDied(DaemonError):
    """A daemon exited while an experiment still needed it."""


class ColdStateError(DaemonError):
    """An arm's state was not cold before a run (something the last run stored is still there)."""


class ProgramBuildError(PullbenchError):
    """A program pullbench builds from source (a dockerd variant, the Go copy harness) cannot be
    built: the toolchain, the source or its build dependencies are missing, the variant or a
    parameter is unknown, the source lacks the code a variant edits, or the compiler failed.

    Attributes
    ----------
    commands : tuple of str
        The exact lines that would fix it (e.g. ``apt-get install golang-go``), when known.
    """

    def __init__(self, message: str, *, commands: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.commands = commands


class BenchmarkError(PullbenchError):
    """An experiment spec is invalid or an experiment cannot run."""


class ArmError(BenchmarkError, ValueError):
    """An external arm's kind or parameters are invalid (raised before any run)."""


class NetworkProfileError(BenchmarkError, ValueError):
    """An unknown network profile name or an invalid custom profile value."""


class ExperimentInterrupted(BenchmarkError):
    """Ctrl-C stopped an experiment; every finished row was kept (continue with ``--resume``).

    Attributes
    ----------
    result : ExperimentResult
        What the experiment had done when it stopped (``pullbench.ExperimentResult``).
    """

    def __init__(self, message: str, *, result: Any) -> None:
        super().__init__(message)
        self.result = result


class ResultSchemaError(PullbenchError, ValueError):
    """A results file does not match the results schema."""


class StatsInputError(PullbenchError, ValueError):
    """Statistical input is degenerate (too few values, NaN, negative durations, ...)."""


class LayerError(PullbenchError):
    """A layer could not be decompressed or applied to a root filesystem.

    Attributes
    ----------
    layer : str or None
        The layer's (compressed) digest, or another label of the layer when it has none.
    member : str or None
        The tar member concerned, when there is one.
    media_type : str or None
        The layer's media type.
    """

    def __init__(self, message: str, *, layer: str | None = None, member: str | None = None,
                 media_type: str | None = None) -> None:
        super().__init__(message)
        self.layer = layer
        self.member = member
        self.media_type = media_type


class DecompressionError(LayerError):
    """Unknown layer media type, corrupt or truncated compressed stream, or a failed tool."""


class DecompressionBomb(DecompressionError):
    """Decompressed output exceeded a cap (ratio to the compressed size, or absolute bytes).

    Attributes
    ----------
    cap : str
        ``"ratio"`` or ``"bytes"``.
    limit : float
        The cap in force.
    compressed_bytes, uncompressed_bytes : int
        What had been read and produced when the cap tripped.
    """

    def __init__(self, message: str, *, cap: str, limit: float, compressed_bytes: int,
                 uncompressed_bytes: int, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.cap = cap
        self.limit = limit
        self.compressed_bytes = compressed_bytes
        self.uncompressed_bytes = uncompressed_bytes


class DiffIdMismatch(LayerError):
    """The uncompressed layer does not hash to the diff_id the image config lists for it."""

    def __init__(self, message: str, *, expected: str, actual: str, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.expected = expected
        self.actual = actual


class CorruptLayerError(LayerError):
    """The layer's tar stream is damaged: a bad header, truncated data, an impossible tree."""


class UnsafeLayerError(LayerError):
    """A layer member would create, link or delete something outside the root filesystem."""


class StatsWarning(RuntimeWarning):
    """Base class of the warnings pullbench's statistics emit."""


class DegenerateSampleWarning(StatsWarning):
    """A sample is degenerate (e.g. constant) but the analysis can still run; read the message."""


class ParameterWarning(UserWarning):
    """A strategy parameter the user set cannot take effect given the other parameters (e.g.
    ``pr48602.write_size=64k`` with 512 KiB reads: Go's ``bufio.Writer`` passes larger writes
    straight through), or a ``--param`` without an arm prefix was applied to several arms."""
