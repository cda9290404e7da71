"""The Distribution launcher against Debian's real docker-registry binary."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time

import pytest
import yaml

from pullbench import OCI_MANIFEST, ServerError, push_image, sha256_digest
from pullbench.servers import DistributionRegistry
from pullbench.servers._distribution import _deep_merge, find_distribution_binary

pytestmark = pytest.mark.peers


def test_serves_anonymously_with_generated_config(distribution_registry, session):
    reg = distribution_registry
    assert reg.kind == "distribution"
    assert reg.version.startswith("2.")
    r = session.get(reg.url + "/v2/")
    assert r.status_code == 200  # Debian's stock config would answer 401
    config = yaml.safe_load(reg.config_path.read_text())
    assert "auth" not in config
    assert config["storage"]["delete"] == {"enabled": True}
    assert config["log"]["accesslog"] == {"disabled": True}
    assert config["http"]["addr"] == reg.host
    assert config["storage"]["filesystem"]["rootdirectory"] != "/var/lib/docker-registry"
    assert str(reg.config_path) != "/etc/docker/registry/config.yml"


def test_push_and_pull_back(distribution_pushed_image, session):
    reg, layout = distribution_pushed_image.registry, distribution_pushed_image.layout
    r = session.get(f"{reg.url}/v2/fixtures/small/manifests/latest",
                    headers={"Accept": OCI_MANIFEST})
    assert r.content == layout.read_blob(layout.manifest_digest)
    for d in layout.layers:
        r = session.get(f"{reg.url}/v2/fixtures/small/blobs/{d.digest}")
        assert sha256_digest(r.content) == d.digest


def test_extra_config_is_deep_merged_and_auth_applies(tmp_path, small_image, session):
    htpasswd = tmp_path / "htpasswd"
    bcrypt = pytest.importorskip("bcrypt")
    htpasswd.write_text("alice:" + bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode() + "\n")
    extra = {"auth": {"htpasswd": {"realm": "pullbench", "path": str(htpasswd)}},
             "log": {"level": "error"}}
    with DistributionRegistry(tmp_path / "root", extra_config=extra) as reg:
        config = yaml.safe_load(reg.config_path.read_text())
        assert config["log"] == {"level": "error", "formatter": "text",
                                 "accesslog": {"disabled": True}}
        r = session.get(reg.url + "/v2/")
        assert r.status_code == 401
        assert 'realm="pullbench"' in r.headers["WWW-Authenticate"]
        assert session.get(reg.url + "/v2/", auth=("alice", "secret")).status_code == 200
        push_image(small_image, f"{reg.host}/auth/img:v1", auth=("alice", "secret"))
    assert (tmp_path / "root" / "docker").is_dir()  # caller's root is kept


def test_deep_merge_unit():
    base = {"a": {"b": 1, "c": {"d": 2}}, "e": [1]}
    assert _deep_merge(base, {"a": {"c": {"x": 3}}, "e": [2]}) == {
        "a": {"b": 1, "c": {"d": 2, "x": 3}}, "e": [2]}
    assert base == {"a": {"b": 1, "c": {"d": 2}}, "e": [1]}


def test_tls(tmp_path, small_image, session):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    with DistributionRegistry(tls_cert=cert_file, tls_key=key_file) as reg:
        assert reg.url.startswith("https://")
        assert session.get(reg.url + "/v2/", verify=str(ca_file)).status_code == 200
        push_image(small_image, f"{reg.host}/tls/img:v1", plain_http=False, ca_bundle=ca_file)


def test_missing_binary_names_debian_package(tmp_path):
    with pytest.raises(ServerError, match="docker-registry") as info:
        DistributionRegistry(binary=str(tmp_path / "no-such-registry"))
    assert "apt-get install docker-registry" in str(info.value)
    with pytest.raises(ServerError, match="docker-registry"):
        find_distribution_binary("definitely-not-a-registry-binary")


def test_fixed_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        port = blocker.getsockname()[1]
        reg = DistributionRegistry(tmp_path / "r", port=port)
        workdir = reg.config_path.parent
        with pytest.raises(ServerError, match="did not start"):
            reg.start()
    assert not workdir.exists(), "a failed start left its work folder behind"
    assert (tmp_path / "r").is_dir()  # the caller's storage root is kept


def test_binary_that_dies_is_reported(tmp_path):
    fake = tmp_path / "registry-that-fails"
    fake.write_text("#!/bin/sh\necho 'configuration error: boom' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    reg = DistributionRegistry(binary=str(fake))
    workdir = reg.config_path.parent
    with pytest.raises(ServerError, match="boom"):
        reg.start()
    assert not workdir.exists(), "a failed start left its work folder (and storage) behind"
    other = DistributionRegistry(binary=str(fake))
    with pytest.raises(ServerError, match="boom"), other:  # __enter__ cleans up the same way
        pass
    assert not other.config_path.parent.exists()
    with pytest.raises(ServerError, match="boom"):  # start() again: same clear error, no crash
        reg.start()
    assert not workdir.exists()


def test_registry_does_not_outlive_a_killed_parent(tmp_path, process_running):
    """A test run killed before close(): the kernel stops the registry (setpriv --pdeathsig)."""
    if shutil.which("docker-registry") is None and not os.environ.get("CI"):
        pytest.skip("docker-registry not installed")
    if shutil.which("setpriv") is None and not os.environ.get("CI"):
        pytest.skip("setpriv (util-linux) not installed")
    code = ("import sys\nfrom pullbench.servers import DistributionRegistry\n"
            f"reg = DistributionRegistry({str(tmp_path / 'root')!r}).start()\n"
            "print(reg.pid, reg.config_path.parent, flush=True)\nsys.stdin.read()\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid_text, workdir = parent.stdout.readline().split()
        pid = int(pid_text)
        assert process_running(pid)
    finally:
        parent.kill()
        parent.wait(timeout=30)
        for stream in (parent.stdin, parent.stdout):
            if stream is not None:
                stream.close()
    deadline = time.monotonic() + 30  # a bound on waiting, not a speed claim
    while process_running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_running(pid), "the registry outlived the process that started it"
    shutil.rmtree(workdir)  # the killed parent could not remove its work folder


def test_close_stops_the_process_and_cleans_up():
    if shutil.which("docker-registry") is None and not os.environ.get("CI"):
        pytest.skip("docker-registry not installed")
    reg = DistributionRegistry().start()
    pid, workdir = reg.pid, reg.config_path.parent
    assert reg.running
    reg.close()
    assert not reg.running
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not workdir.exists()
