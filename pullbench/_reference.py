"""Image references: ``[registry[:port]/]repository[:tag][@digest]`` with Docker Hub defaults.

The grammar follows distribution/distribution:reference/reference.go (the "normalized named"
rules Docker uses): the first path component is a registry host only when it contains a ``.`` or a
``:`` or is ``localhost``; otherwise the reference names a Docker Hub repository, and a Hub
repository without a ``/`` lives under ``library/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import InvalidReference
from ._media import is_valid_digest

__all__ = ["DOCKER_HUB", "DOCKER_HUB_API_HOST", "ImageReference", "parse_reference"]

#: The registry name Docker uses for Docker Hub in normalized references.
DOCKER_HUB = "docker.io"
#: The host that actually serves Docker Hub's registry API.
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

# distribution-spec v1.1.1 "Pulling manifests": repository name and tag grammar.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
# host: DNS labels or an IPv4 address, or a bracketed IPv6 literal, then an optional port.
_HOST_RE = re.compile(
    r"^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[0-9a-fA-F:.]+\])"
    r"(?::[0-9]{1,5})?$"
)
_MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A parsed, normalized image reference.

    Attributes
    ----------
    registry : str
        ``host[:port]`` as written (``docker.io`` for Docker Hub).
    repository : str
        Repository path, e.g. ``library/debian``.
    tag : str or None
        Tag; ``"latest"`` when neither tag nor digest was given.
    digest : str or None
        ``algorithm:encoded`` digest, when the reference pins one.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def api_host(self) -> str:
        """``host[:port]`` serving the registry API (Docker Hub: ``registry-1.docker.io``)."""
        return DOCKER_HUB_API_HOST if self.registry in _HUB_ALIASES else self.registry

    @property
    def ref(self) -> str:
        """What to put after ``/manifests/``: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> ImageReference:
    """Parse an image reference.

    Parameters
    ----------
    text : str
        ``[registry[:port]/]repository[:tag][@digest]``, e.g. ``debian``,
        ``127.0.0.1:5000/fixtures/debian:minbase``, ``ghcr.io/o/r@sha256:<64 hex>``.

    Returns
    -------
    ImageReference
        Normalized: Docker Hub references get registry ``docker.io`` and, for one-component
        repositories, the ``library/`` prefix; a reference with neither tag nor digest gets tag
        ``latest``.

    Raises
    ------
    InvalidReference
        Empty text, an invalid host, repository, tag or digest, or a name over 255 characters;
        the message names the offending part and the expected grammar.

    Examples
    --------
    >>> str(parse_reference("debian"))
    'docker.io/library/debian:latest'
    >>> parse_reference("localhost:5000/a/b@sha256:" + "0" * 64).registry
    'localhost:5000'
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidReference(
            "empty image reference; expected [registry[:port]/]repo[:tag][@digest]"
        )
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReference(f"image reference {text!r} contains whitespace")
    rest = text
    digest: str | None = None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if not is_valid_digest(digest):
            raise InvalidReference(
                f"invalid digest {digest!r} in {text!r}; expected e.g. 'sha256:' + 64 lowercase hex"
            )
    registry = DOCKER_HUB
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        if not _HOST_RE.match(first):
            raise InvalidReference(
                f"invalid registry host {first!r} in {text!r}; expected host[:port]"
            )
        registry = first
        rest = remainder
    tag: str | None = None
    # A ':' after the last '/' separates the tag (a ':' before it would belong to a host).
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidReference(
                f"invalid tag {tag!r} in {text!r}; tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}"
            )
    repository = rest
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    if not repository or not _REPO_RE.match(repository):
        raise InvalidReference(
            f"invalid repository {repository!r} in {text!r}; repository components are lowercase "
            "letters and digits separated by '.', '_', '__' or '-', joined by '/'"
        )
    if len(registry) + 1 + len(repository) > _MAX_NAME:
        raise InvalidReference(f"image name in {text!r} is longer than {_MAX_NAME} characters")
    if tag is None and digest is None:
        tag = "latest"
    return ImageReference(registry=registry, repository=repository, tag=tag, digest=digest)
