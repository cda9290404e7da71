"""The referrers API of the embedded registry (distribution-spec v1.1 "Listing Referrers").

A manifest (image manifest or index) whose ``subject`` field names another manifest is a
*referrer* of that subject (a signature, an SBOM, an attestation). The registry records the link
when the referrer is pushed (answering ``OCI-Subject: <subject digest>`` on the ``PUT``, which tells
the client that the registry keeps the list itself) and forgets it when the referrer is deleted.
``GET /v2/<name>/referrers/<digest>`` answers an OCI image index listing one descriptor per
referrer, optionally filtered by ``?artifactType=`` (then ``OCI-Filters-Applied: artifactType``).
The subject need not exist: referrers may be pushed before it, and an unknown subject answers an
empty index, not 404.

Behaviour follows opencontainers/distribution-spec:spec.md@v1.1.1 ("Pushing Manifests with
Subject", "Listing Referrers"); the descriptor's ``artifactType`` rule (the manifest's
``artifactType``, else its config's ``mediaType``; an index without one has none) and the
``annotations`` copy come from there too.

Storage (below the registry root, beside the repository's manifests; every name validated)::

    repositories/<name>/_manifests/referrers/<algorithm>/<encoded>/<referrer hex>   empty marker
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from .._media import INDEX_MEDIA_TYPES, OCI_INDEX, is_valid_digest

__all__ = ["ReferrersStore", "referrer_descriptor", "subject_digest"]

#: Media type of the answer to a referrers request (an OCI image index).
REFERRERS_MEDIA_TYPE = OCI_INDEX
#: Value of ``OCI-Filters-Applied`` when the ``artifactType`` filter was applied.
ARTIFACT_TYPE_FILTER = "artifactType"


def subject_digest(doc: dict[str, Any]) -> str | None:
    """Return the digest a manifest's ``subject`` descriptor names, or None without a subject.

    Raises
    ------
    ValueError
        ``subject`` is present but is not a descriptor with a grammatical digest (the caller
        answers 400 MANIFEST_INVALID).
    """
    subject = doc.get("subject")
    if subject is None:
        return None
    digest = subject.get("digest") if isinstance(subject, dict) else None
    if not isinstance(digest, str) or not is_valid_digest(digest):
        raise ValueError(f"subject is not a descriptor with a valid digest: {str(subject)[:200]}")
    return digest


def referrer_descriptor(doc: dict[str, Any], media_type: str, digest: str,
                        size_bytes: int) -> dict[str, Any]:
    """The descriptor listing a referrer in a referrers index.

    Parameters
    ----------
    doc : dict
        The referrer manifest, parsed.
    media_type : str
        Its media type as stored.
    digest : str
        Its digest.
    size_bytes : int
        Its size in bytes.

    Returns
    -------
    dict
        ``mediaType``, ``digest``, ``size``; ``artifactType`` (the manifest's own, else its
        config's ``mediaType`` for an image manifest; omitted when neither exists);
        ``annotations`` when the manifest has any.
    """
    desc: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size_bytes}
    artifact_type = doc.get("artifactType")
    if not artifact_type and media_type not in INDEX_MEDIA_TYPES:
        config = doc.get("config")
        artifact_type = config.get("mediaType") if isinstance(config, dict) else None
    if isinstance(artifact_type, str) and artifact_type:
        desc["artifactType"] = artifact_type
    annotations = doc.get("annotations")
    if isinstance(annotations, dict) and annotations:
        desc["annotations"] = annotations
    return desc


class ReferrersStore:
    """Subject → referrer links of one registry's repositories, kept as empty marker files.

    Parameters
    ----------
    repos : Path
        The registry's ``repositories/`` directory. Repository names and digests handed to
        the methods were validated by the caller (distribution-spec grammar).
    """

    def __init__(self, repos: Path) -> None:
        self.repos = repos

    def _subject_dir(self, name: str, subject: str) -> Path:
        algorithm, _, encoded = subject.partition(":")
        return self.repos / name / "_manifests" / "referrers" / algorithm / encoded

    def link(self, name: str, subject: str, referrer: str) -> None:
        """Record that the manifest ``referrer`` (a sha256 digest) refers to ``subject``."""
        d = self._subject_dir(name, subject)
        d.mkdir(parents=True, exist_ok=True)
        (d / referrer.partition(":")[2]).touch()

    def unlink(self, name: str, subject: str, referrer: str) -> None:
        """Forget the link (no error when it does not exist)."""
        with contextlib.suppress(FileNotFoundError):
            (self._subject_dir(name, subject) / referrer.partition(":")[2]).unlink()

    def referrers(self, name: str, subject: str) -> list[str]:
        """Digests (``sha256:…``) of the manifests recorded as referring to ``subject``, sorted."""
        d = self._subject_dir(name, subject)
        try:
            return sorted("sha256:" + p.name for p in d.iterdir() if not p.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []


def parse_manifest(data: bytes) -> dict[str, Any] | None:
    """``data`` parsed as a JSON object, or None when it is not one."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None
