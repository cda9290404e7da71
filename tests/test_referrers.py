"""The embedded registry's referrers API and ``OCI-Subject``, with requests on 127.0.0.1."""

from __future__ import annotations

import json

import pytest

from pullbench import OCI_INDEX, OCI_MANIFEST, sha256_digest
from pullbench.servers import EmbeddedRegistry

EMPTY_JSON = "application/vnd.oci.empty.v1+json"
SBOM = "application/vnd.example.sbom.v1+json"
SIGNATURE = "application/vnd.example.signature.v1"
INDEX_TYPE = "application/vnd.example.bundle.v1"


class _Repo:
    """Push helpers for one repository of a running embedded registry."""

    def __init__(self, reg: EmbeddedRegistry, session, name: str) -> None:
        self.reg, self.s, self.name = reg, session, name
        self.base = f"{reg.url}/v2/{name}"

    def blob(self, data: bytes) -> dict:
        digest = sha256_digest(data)
        r = self.s.post(f"{self.base}/blobs/uploads/?digest={digest}", data=data)
        assert r.status_code == 201, r.text
        return {"digest": digest, "size": len(data)}

    def put(self, doc: dict, reference: str | None = None, media_type: str = OCI_MANIFEST):
        body = json.dumps(doc).encode()
        ref = reference or sha256_digest(body)
        r = self.s.put(f"{self.base}/manifests/{ref}", data=body,
                       headers={"Content-Type": media_type})
        return r, sha256_digest(body), len(body)

    def manifest(self, config_type: str, *, artifact_type: str | None = None,
                 subject: dict | None = None, annotations: dict | None = None,
                 layer: bytes = b"layer") -> dict:
        config = {"mediaType": config_type, **self.blob(b"{}")}
        doc: dict = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                     "layers": [{"mediaType": "application/octet-stream", **self.blob(layer)}]}
        if artifact_type is not None:
            doc["artifactType"] = artifact_type
        if subject is not None:
            doc["subject"] = subject
        if annotations is not None:
            doc["annotations"] = annotations
        return doc

    def referrers(self, digest: str, **params):
        return self.s.get(f"{self.base}/referrers/{digest}", params=params)


@pytest.fixture
def repo(tmp_path, session):
    with EmbeddedRegistry(tmp_path) as reg:
        yield _Repo(reg, session, "art/app")


def _subject(repo: _Repo) -> dict:
    """Push an image manifest tagged ``v1``; return its descriptor."""
    r, digest, size = repo.put(repo.manifest("application/vnd.oci.image.config.v1+json"), "v1")
    assert r.status_code == 201
    assert "OCI-Subject" not in r.headers  # no subject, no header
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": size}


def test_put_with_subject_answers_oci_subject_and_listing_describes_each_referrer(repo):
    subject = _subject(repo)
    # artifactType from the manifest's own field; from its config's mediaType; an index
    sbom = repo.manifest(EMPTY_JSON, artifact_type=SBOM, subject=subject,
                         annotations={"org.example.kind": "sbom"}, layer=b"sbom")
    sig = repo.manifest(SIGNATURE, subject=subject, layer=b"sig")
    got = {}
    for doc in (sbom, sig):
        r, digest, size = repo.put(doc)
        assert r.status_code == 201
        assert r.headers["OCI-Subject"] == subject["digest"]
        got[digest] = size
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": INDEX_TYPE,
             "manifests": [], "subject": subject, "annotations": {"org.example.kind": "bundle"}}
    r, index_digest, index_size = repo.put(index, media_type=OCI_INDEX)
    assert r.status_code == 201
    assert r.headers["OCI-Subject"] == subject["digest"]

    r = repo.referrers(subject["digest"])
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in r.headers
    body = r.json()
    assert (body["schemaVersion"], body["mediaType"]) == (2, OCI_INDEX)
    by_digest = {d["digest"]: d for d in body["manifests"]}
    sbom_digest, sig_digest = list(got)
    assert by_digest == {
        sbom_digest: {"mediaType": OCI_MANIFEST, "digest": sbom_digest, "size": got[sbom_digest],
                      "artifactType": SBOM, "annotations": {"org.example.kind": "sbom"}},
        sig_digest: {"mediaType": OCI_MANIFEST, "digest": sig_digest, "size": got[sig_digest],
                     "artifactType": SIGNATURE},
        index_digest: {"mediaType": OCI_INDEX, "digest": index_digest, "size": index_size,
                       "artifactType": INDEX_TYPE, "annotations": {"org.example.kind": "bundle"}},
    }
    # the subject itself is unchanged and still pullable by tag
    assert repo.s.get(f"{repo.base}/manifests/v1",
                      headers={"Accept": OCI_MANIFEST}).headers["Docker-Content-Digest"] == \
        subject["digest"]


def test_artifact_type_filter(repo):
    subject = _subject(repo)
    sboms = []
    for i in range(2):
        r, digest, _ = repo.put(repo.manifest(EMPTY_JSON, artifact_type=SBOM, subject=subject,
                                              layer=b"sbom%d" % i))
        assert r.status_code == 201
        sboms.append(digest)
    r, sig_digest, _ = repo.put(repo.manifest(SIGNATURE, subject=subject, layer=b"sig"))
    assert r.status_code == 201

    r = repo.referrers(subject["digest"], artifactType=SBOM)
    assert r.status_code == 200
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert sorted(d["digest"] for d in r.json()["manifests"]) == sorted(sboms)
    r = repo.referrers(subject["digest"], artifactType=SIGNATURE)
    assert [d["digest"] for d in r.json()["manifests"]] == [sig_digest]
    r = repo.referrers(subject["digest"], artifactType="application/vnd.example.none")
    assert r.status_code == 200
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert r.json()["manifests"] == []


def test_unknown_subject_is_an_empty_index_and_referrers_may_come_first(repo):
    unknown = "sha256:" + "e" * 64
    r = repo.referrers(unknown)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert r.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    # a referrer pushed before its subject exists is accepted, announced and listed
    r, digest, _ = repo.put(repo.manifest(SIGNATURE, subject={
        "mediaType": OCI_MANIFEST, "digest": unknown, "size": 100}))
    assert r.status_code == 201
    assert r.headers["OCI-Subject"] == unknown
    assert [d["digest"] for d in repo.referrers(unknown).json()["manifests"]] == [digest]


def test_deleting_a_referrer_removes_it_from_the_list(repo):
    subject = _subject(repo)
    r, digest, _ = repo.put(repo.manifest(SIGNATURE, subject=subject), "sig-tag")
    assert r.status_code == 201
    # deleting the tag keeps the manifest, so it stays a referrer
    assert repo.s.delete(f"{repo.base}/manifests/sig-tag").status_code == 202
    assert [d["digest"] for d in repo.referrers(subject["digest"]).json()["manifests"]] == [digest]
    assert repo.s.delete(f"{repo.base}/manifests/{digest}").status_code == 202
    assert repo.referrers(subject["digest"]).json()["manifests"] == []
    # and the stored link is gone, not just hidden (layout: pullbench.servers._referrers)
    links = (repo.reg.root / "repositories" / "art" / "app" / "_manifests" / "referrers"
             / "sha256" / subject["digest"][7:])
    assert list(links.iterdir()) == []


def test_referrers_are_per_repository(repo):
    subject = _subject(repo)
    r, _, _ = repo.put(repo.manifest(SIGNATURE, subject=subject))
    assert r.status_code == 201
    other = _Repo(repo.reg, repo.s, "art/other")
    r = other.referrers(subject["digest"])
    assert r.status_code == 200
    assert r.json()["manifests"] == []


def test_referrers_request_errors(repo):
    r = repo.referrers("sha256:not-a-digest")
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    r = repo.s.post(f"{repo.base}/referrers/sha256:" + "a" * 64)
    assert r.status_code == 405
    r = repo.s.get(f"{repo.reg.url}/v2/Bad_Name/referrers/sha256:" + "a" * 64)
    assert r.status_code == 404  # not a route: the name grammar fails
    # a subject that is not a descriptor with a digest is rejected
    doc = repo.manifest(SIGNATURE)
    doc["subject"] = {"mediaType": OCI_MANIFEST, "size": 3}
    r, _, _ = repo.put(doc)
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    assert "subject" in r.json()["errors"][0]["message"]


def test_repository_with_referrers_in_its_name_still_routes(tmp_path, session):
    with EmbeddedRegistry(tmp_path) as reg:
        r = _Repo(reg, session, "x/referrers/y")
        resp, digest, _ = r.put(r.manifest("application/vnd.oci.image.config.v1+json"), "v1")
        assert resp.status_code == 201
        got = session.get(f"{r.base}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200
        assert got.headers["Docker-Content-Digest"] == digest


def test_invalid_tag_is_404_on_pull_and_400_on_push(repo):
    for method in ("GET", "HEAD", "DELETE"):
        r = repo.s.request(method, f"{repo.base}/manifests/.INVALID_MANIFEST_NAME")
        assert r.status_code == 404, method
    r = repo.s.get(f"{repo.base}/manifests/.INVALID_MANIFEST_NAME")
    assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    r, _, _ = repo.put(repo.manifest(SIGNATURE), ".INVALID_MANIFEST_NAME")
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "TAG_INVALID"
    assert not (repo.reg.root / "repositories" / "art" / "app" / "_manifests" / "tags"
                / ".INVALID_MANIFEST_NAME").exists()
