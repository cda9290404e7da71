"""Image reference parsing: Docker Hub defaults, hosts with ports, digests, clear errors."""

from __future__ import annotations

import pytest

from pullbench import ImageReference, InvalidReference, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("debian", "docker.io", "library/debian", "latest", None),
        ("debian:bookworm", "docker.io", "library/debian", "bookworm", None),
        ("docker.io/debian", "docker.io", "library/debian", "latest", None),
        ("index.docker.io/library/debian:12", "docker.io", "library/debian", "12", None),
        ("someone/tool:v1.2", "docker.io", "someone/tool", "v1.2", None),
        (
            "127.0.0.1:5000/fixtures/small:latest",
            "127.0.0.1:5000",
            "fixtures/small",
            "latest",
            None,
        ),
        ("localhost/a/b", "localhost", "a/b", "latest", None),
        ("localhost:5000/a", "localhost:5000", "a", "latest", None),
        ("ghcr.io/o/r@" + DIGEST, "ghcr.io", "o/r", None, DIGEST),
        ("ghcr.io/o/r:t@" + DIGEST, "ghcr.io", "o/r", "t", DIGEST),
        ("[::1]:5000/x", "[::1]:5000", "x", "latest", None),
        ("reg.example:443/a__b/c-d.e", "reg.example:443", "a__b/c-d.e", "latest", None),
    ],
)
def test_parse_valid(text, registry, repository, tag, digest):
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    # str() round-trips to the same normalized reference
    assert parse_reference(str(ref)) == ref


def test_api_host_and_ref():
    hub = parse_reference("debian")
    assert hub.api_host == "registry-1.docker.io"
    assert str(hub) == "docker.io/library/debian:latest"
    local = parse_reference("127.0.0.1:5000/a@" + DIGEST)
    assert local.api_host == "127.0.0.1:5000"
    assert local.ref == DIGEST
    assert parse_reference("a:t").ref == "t"


def test_reference_is_frozen():
    ref = parse_reference("a/b")
    assert isinstance(ref, ImageReference)
    with pytest.raises(AttributeError):
        ref.tag = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("  ", "empty"),
        ("Debian", "invalid repository 'library/Debian'"),
        ("a/b:", "invalid tag ''"),
        ("a/b:-bad", "invalid tag '-bad'"),
        ("a/b@sha256:xyz", "invalid digest 'sha256:xyz'"),
        ("a/b@" + "sha256:" + "AB" * 32, "invalid digest"),
        ("a b", "whitespace"),
        ("bad_host.:5000/x", "invalid registry host"),
        ("127.0.0.1:5000/", "invalid repository ''"),
        ("a//b", "invalid repository"),
        ("x.io/" + "a" * 260, "longer than 255"),
    ],
)
def test_parse_invalid_names_the_problem(text, fragment):
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)
