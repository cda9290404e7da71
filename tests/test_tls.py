"""TLS: both registries over HTTPS with trustme certificates; the record-size mechanism; the user's
CA bundle wins with REQUESTS_CA_BUNDLE set or unset; TLS errors name the certificate problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullbench import RegistryError, pull, push_image
from pullbench.servers import DistributionRegistry, EmbeddedRegistry, make_tls_material

SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TLS_RECORD = 16 * 1024


@pytest.fixture(scope="module")
def tls_embedded(tls_material, small_image, tmp_path_factory):
    with EmbeddedRegistry(tmp_path_factory.mktemp("tls-embedded"),
                          ssl_context=tls_material.server_context()) as reg:
        push_image(small_image, f"{reg.host}/tls/app:v1", plain_http=False,
                   ca_bundle=tls_material.ca_bundle)
        yield reg


@pytest.fixture(scope="module")
def tls_distribution(distribution_binary, tls_material, small_image, tmp_path_factory):
    with DistributionRegistry(tmp_path_factory.mktemp("tls-distribution"),
                              tls_cert=tls_material.cert_chain, tls_key=tls_material.key) as reg:
        push_image(small_image, f"{reg.host}/tls/app:v1", plain_http=False,
                   ca_bundle=tls_material.ca_bundle)
        yield reg


def _max_bucket(hist: dict[int, int]) -> int:
    return max(int(k) for k, v in hist.items() if v)


def test_temporary_material_is_removed_on_close_given_directory_kept(tmp_path):
    with make_tls_material() as made:
        assert made.owns_directory
        assert made.ca_bundle.is_file()
        assert made.key.stat().st_mode & 0o077 == 0
    assert not made.directory.exists()
    given = make_tls_material(tmp_path / "tls")
    assert not given.owns_directory
    given.close()
    assert given.ca_bundle.is_file()  # the caller's directory is the caller's


def test_material_files(tls_material):
    assert tls_material.ca_bundle.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert tls_material.key.stat().st_mode & 0o077 == 0
    assert "127.0.0.1" in tls_material.hosts
    assert "127.0.0.2" in tls_material.hosts


@pytest.mark.parametrize("env", ["set", "unset"])
def test_user_ca_bundle_wins_over_requests_ca_bundle(env, tls_embedded, tls_material, tmp_path,
                                                     monkeypatch):
    if env == "set":  # the machine's trap: a system bundle that does not know our CA
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", SYSTEM_BUNDLE)
        monkeypatch.setenv("CURL_CA_BUNDLE", SYSTEM_BUNDLE)
    else:
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    result = pull(f"{tls_embedded.host}/tls/app:v1", "go-iocopy", tmp_path / "out",
                  ca_bundle=tls_material.ca_bundle)
    assert result.total_bytes > 0
    # Python's ssl server sends full 16 KiB records (no ramp-up as Go's): one record per read
    assert _max_bucket(result.read_size_hist) <= TLS_RECORD


def test_untrusted_certificate_error_names_the_problem(tls_embedded, tmp_path, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", SYSTEM_BUNDLE)
    with pytest.raises(RegistryError) as info:
        pull(f"{tls_embedded.host}/tls/app:v1", "go-iocopy", tmp_path / "out")
    text = str(info.value).lower()
    assert "certificate" in text
    assert any(s in text for s in ("unable to get local issuer", "self-signed", "self signed",
                                   "verify failed"))
    assert not list((tmp_path / "out").rglob("*")) or not (tmp_path / "out" / "blobs").exists()


@pytest.mark.parametrize(("kind", "expect"), [("expired", "expired"),
                                              ("wrong-host", "mismatch")])
def test_bad_certificates_name_the_problem(kind, expect, small_image, tmp_path):
    if kind == "expired":
        material = make_tls_material(tmp_path / "tls", expired=True)
    else:
        material = make_tls_material(tmp_path / "tls", hosts=("registry.invalid",))
    with EmbeddedRegistry(tmp_path / "reg", ssl_context=material.server_context()) as reg:
        with pytest.raises(RegistryError) as info:
            pull(f"{reg.host}/tls/app:v1", "go-iocopy", tmp_path / "out",
                 ca_bundle=material.ca_bundle)
    assert expect in str(info.value).lower()


def test_missing_ca_bundle_file_is_a_clear_error(tls_embedded, tmp_path):
    missing = tmp_path / "nope.pem"
    with pytest.raises(RegistryError) as info:
        pull(f"{tls_embedded.host}/tls/app:v1", "go-iocopy", tmp_path / "out", ca_bundle=missing)
    assert str(missing) in str(info.value)


@pytest.mark.peers
def test_distribution_tls_records_cap_reads_but_not_coalesced_writes(tls_distribution,
                                                                     tls_material, tmp_path):
    """The seed's mechanism against Go's TLS server: with go-iocopy no read exceeds one TLS
    record (16 KiB), whatever the 32 KiB buffer; containerd-1m still writes 1 MiB."""
    ref = f"{tls_distribution.host}/tls/app:v1"
    go = pull(ref, "go-iocopy", tmp_path / "go", ca_bundle=tls_material.ca_bundle)
    ctd = pull(ref, "containerd-1m", tmp_path / "ctd", ca_bundle=tls_material.ca_bundle)
    assert _max_bucket(go.read_size_hist) <= TLS_RECORD
    # Go's dynamic record sizing: ~1.2 KiB records at the start of a connection
    assert min(int(k) for k, v in go.read_size_hist.items() if v) <= 2048
    assert _max_bucket(go.write_size_hist) <= TLS_RECORD  # io.Copy: one write per read
    assert _max_bucket(ctd.write_size_hist) == 1024 * 1024
    assert ctd.write_size_hist.get(1024 * 1024, 0) >= 1
    assert go.write_count > ctd.write_count
    for result in (go, ctd):
        for path in Path(result.dest).joinpath("blobs").rglob("*"):
            assert path.is_dir() or path.stat().st_size > 0
