"""Hostile and flaky peers: each fault is injected by a real local server misbehaving on purpose
(the embedded registry's Misbehavior seam, HostileHost on 127.0.0.2 / 127.0.0.3 as the second and
third host), never by patching the client."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pullbench import (
    AuthenticationError,
    DigestMismatch,
    ImageNotFound,
    ManifestError,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
    ResponseTooLarge,
    RetryPolicy,
    SizeMismatch,
    get_strategy,
    pull,
)
from pullbench.puller._transport import parse_retry_after
from pullbench.servers import HostileHost, HostileReply, Misbehavior

USER, PASSWORD = "alice", "correct horse battery staple"
MiB = 1024 * 1024


def _basic_authorizer(user: str = USER, password: str = PASSWORD):
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def authorize(method, path, headers):
        if headers.get("Authorization") == expected:
            return None
        return 401, {"WWW-Authenticate": 'Basic realm="registry"'}

    return authorize


def _files(dest: Path) -> list[str]:
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- 1 credentials


def test_cdn_challenge_after_redirect_never_gets_the_credentials(fresh_pushed_image, tmp_path):
    """Registry (Basic) → 307 to a CDN on 127.0.0.2 → 401 Bearer with a realm on 127.0.0.3."""
    reg = fresh_pushed_image.registry
    with HostileHost({"/token": HostileReply(200, {}, b'{"token": "t"}')},
                     host="127.0.0.3") as third, HostileHost(host="127.0.0.2") as cdn:
        cdn.routes["/blobs/*"] = HostileReply(
            401, {"WWW-Authenticate": f'Bearer realm="{third.url}/token",service="cdn"'})
        reg.authorizer = _basic_authorizer()
        reg.blob_redirect = lambda name, digest: f"{cdn.url}/blobs/{digest}"
        with pytest.raises(AuthenticationError) as info:
            pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True,
                 credentials=(USER, PASSWORD))
    message = str(info.value)
    assert cdn.requests, "the blob request never reached the CDN"
    assert cdn.credentials_seen() == [], "credentials were forwarded to the CDN"
    assert third.requests == [], "the CDN's realm on a third host was contacted"
    # the error says which host asked for what
    assert cdn.netloc in message
    assert reg.host in message
    assert f"{third.url}/token" in message
    assert "Bearer" in message
    assert PASSWORD not in message


def test_registry_named_realm_redirecting_elsewhere_loses_the_credentials(fresh_pushed_image,
                                                                           tmp_path):
    """The registry's own realm (127.0.0.2) redirects the token request to 127.0.0.3: the
    redirect is followed, the Basic credentials are not."""
    reg = fresh_pushed_image.registry
    with HostileHost({"/token": HostileReply(401, {"WWW-Authenticate": 'Basic realm="x"'})},
                     host="127.0.0.3") as third, HostileHost(host="127.0.0.2") as realm:
        realm.routes["/token"] = HostileReply(307, {"Location": f"{third.url}/token"})
        reg.authorizer = lambda m, p, h: (
            401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token",service="registry"'})
        with pytest.raises(AuthenticationError, match="token request to realm"):
            pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True,
                 credentials=(USER, PASSWORD))
    assert [r.authorization for r in realm.requests] == ["Basic"]  # the realm it named: yes
    assert third.requests, "the realm's redirect was not followed"
    assert third.credentials_seen() == [], "credentials followed the realm's redirect"


# ----------------------------------------------------------------------------- 2 memory


def test_endless_error_body_is_read_only_up_to_its_cap(fresh_pushed_image, tmp_path):
    mis = Misbehavior(error_body_bytes=200 * MiB)
    fresh_pushed_image.registry.misbehavior = mis
    ref = f"{fresh_pushed_image.registry.host}/fixtures/small:absent"
    with pytest.raises(ImageNotFound, match=r"error body passed pullbench's 64 KiB cap"):
        pull(ref, "go-iocopy", tmp_path / "out", plain_http=True)
    # the client hung up after the cap: the server could not push the 200 MiB
    assert mis.seen.filler_bytes < 32 * MiB


def test_endless_token_answer_is_refused_at_its_cap(fresh_pushed_image, tmp_path):
    reg = fresh_pushed_image.registry
    with HostileHost(host="127.0.0.2") as realm:
        realm.routes["/token"] = HostileReply(
            200, {"Content-Type": "application/json"}, b'{"token": "', endless_bytes=200 * MiB)
        reg.authorizer = lambda m, p, h: (
            401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token",service="registry"'})
        with pytest.raises(ResponseTooLarge, match=r"1 MiB cap for a token body") as info:
            pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True,
                 credentials=(USER, PASSWORD))
    assert info.value.cap_bytes == MiB
    assert realm.filler_bytes < 32 * MiB


def test_endless_manifest_is_refused_at_its_cap():
    with HostileHost(host="127.0.0.2") as host:
        host.routes["/v2/app/manifests/big"] = HostileReply(
            200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, b'{"layers": [',
            endless_bytes=200 * MiB)
        client = RegistryClient(host.netloc, plain_http=True)
        with pytest.raises(ResponseTooLarge, match=r"manifest .*4 MiB cap"):
            client.fetch_manifest("app", "big")
    assert host.filler_bytes < 32 * MiB


@pytest.mark.parametrize("step", ["POST", "PUT"])
def test_endless_error_body_during_a_push_is_read_only_up_to_a_prefix(step, small_image):
    """A registry that answers a push's upload start (POST) or upload (PUT) with 500 and an
    endless body: the push fails at once with the status and the body's first bytes, and the
    client hangs up instead of reading the body into memory."""
    from pullbench import push_image

    with HostileHost(host="127.0.0.2") as host:
        reply = HostileReply(500, {"Content-Type": "application/json"},
                             b'{"errors": [{"code": "UNKNOWN", "message": "',
                             endless_bytes=200 * MiB)
        host.routes["/v2/app/blobs/uploads/"] = (
            reply if step == "POST" else
            HostileReply(202, {"Location": "/v2/app/blobs/uploads/session-1"}))
        host.routes["/v2/app/blobs/uploads/session-1"] = reply
        expected = rf'\({step}\) to 127\.0\.0\.2:\d+/app failed: HTTP 500 \{{"errors": \[\{{"code"'
        with pytest.raises(RegistryUnavailable, match=expected):
            push_image(small_image, f"{host.netloc}/app:v1", plain_http=True)
    assert host.filler_bytes < 32 * MiB
    assert [r.method for r in host.requests][-1] == step


def test_upload_accepted_without_a_location_is_a_clear_error(small_image):
    from pullbench import push_image

    with HostileHost({"/v2/app/blobs/uploads/": HostileReply(202, {})}, host="127.0.0.2") as host:
        with pytest.raises(RegistryError, match="without a Location header"):
            push_image(small_image, f"{host.netloc}/app:v1", plain_http=True)


# ----------------------------------------------------------------------------- 3 digests


@pytest.mark.parametrize("algorithm", ["md5", "shake_128", "sha1"])
def test_unregistered_layer_digest_algorithm_is_a_manifest_error(fresh_pushed_image, tmp_path,
                                                                 algorithm):
    fresh_pushed_image.registry.misbehavior = Misbehavior(digest_algorithm=algorithm)
    dest = tmp_path / "out"
    with pytest.raises(ManifestError, match=rf"digest algorithm '{algorithm}'.*sha256 and sha512"):
        pull(fresh_pushed_image.reference, "go-iocopy", dest, plain_http=True)
    assert not (dest / "blobs" / algorithm).exists()
    assert not any(p.startswith(f"blobs/{algorithm}") for p in _files(dest)) if dest.exists() \
        else True


def test_unregistered_content_digest_header_is_a_manifest_error(fresh_pushed_image, tmp_path):
    fresh_pushed_image.registry.misbehavior = Misbehavior(content_digest="shake_256:" + "ab" * 32)
    with pytest.raises(ManifestError, match=r"digest algorithm 'shake_256'"):
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True)


def test_cli_reports_an_unregistered_algorithm_without_a_traceback(fresh_pushed_image, tmp_path):
    from pullbench.cli import main

    fresh_pushed_image.registry.misbehavior = Misbehavior(digest_algorithm="shake_128")
    result = CliRunner().invoke(main, ["pull", "--plain-http", "--dest", str(tmp_path / "o"),
                                       fresh_pushed_image.reference])
    assert result.exit_code == 1, result.output
    assert "ManifestError" in result.output
    assert "shake_128" in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, TypeError)


def test_sha512_layers_are_still_accepted_by_the_descriptor_check():
    from pullbench import Descriptor

    data = b"layer"
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    desc = Descriptor.from_json({"digest": digest, "size": len(data), "mediaType": "x"})
    assert desc.digest == digest


# ----------------------------------------------------------------------------- 8 redirects


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.2/blob"])
def test_redirect_to_another_scheme_names_the_refused_scheme(fresh_pushed_image, tmp_path,
                                                             target):
    reg = fresh_pushed_image.registry
    reg.blob_redirect = lambda name, digest: target
    with pytest.raises(RegistryError) as info:
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True)
    message = str(info.value)
    scheme = target.split(":")[0]
    assert f"redirected to a {scheme}: URL" in message
    assert "only http and https" in message
    assert "is the registry running" not in message
    assert "plain-http" not in message


def test_redirect_loop_names_the_chain(fresh_pushed_image, tmp_path):
    reg = fresh_pushed_image.registry
    with HostileHost(host="127.0.0.2") as a, HostileHost(host="127.0.0.3") as b:
        a.routes["/a"] = HostileReply(302, {"Location": f"{b.url}/b"})
        b.routes["/b"] = HostileReply(302, {"Location": f"{a.url}/a"})
        reg.blob_redirect = lambda name, digest: f"{a.url}/a"
        with pytest.raises(RegistryError, match="redirect loop") as info:
            pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True)
    message = str(info.value)
    assert f"{a.url}/a → {b.url}/b → {a.url}/a" in message
    assert "is the registry running" not in message


def test_too_many_redirects_names_the_chain(fresh_pushed_image, tmp_path):
    reg = fresh_pushed_image.registry
    with HostileHost(host="127.0.0.2") as a:
        for i in range(20):
            a.routes[f"/hop/{i}"] = HostileReply(302, {"Location": f"/hop/{i + 1}"})
        reg.blob_redirect = lambda name, digest: f"{a.url}/hop/0"
        with pytest.raises(RegistryError, match=r"too many redirects \(more than 10\)") as info:
            pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True)
    assert f"{a.url}/hop/9 → {a.url}/hop/10" in str(info.value)


# ----------------------------------------------------------------------------- 4 retries

FAST = RetryPolicy(backoff_initial_s=0.01, backoff_max_s=0.05)


def _stored_blobs_verify(dest: Path) -> int:
    blobs = [p for p in (dest / "blobs" / "sha256").iterdir() if p.is_file()]
    for path in blobs:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    return len(blobs)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_status_is_retried(fresh_pushed_image, tmp_path, status, caplog):
    mis = Misbehavior(fail_status=status, fail_times=2, fail_plain_body=True, retry_after="")
    fresh_pushed_image.registry.misbehavior = mis
    with caplog.at_level(logging.WARNING, logger="pullbench"):
        result = pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out",
                      plain_http=True, retry=FAST)
    assert mis.seen.failed == 2
    assert result.retries == 2
    assert result.backoff_s > 0
    waits = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(waits) == 2, waits  # every wait is logged
    assert f"answered {status}" in waits[0]
    assert _stored_blobs_verify(tmp_path / "out") == 5  # manifest, config, 3 layers


def test_retry_after_seconds_is_honoured(fresh_pushed_image, tmp_path, caplog):
    mis = Misbehavior(fail_status=429, fail_times=1, retry_after="1", fail_on="manifests")
    fresh_pushed_image.registry.misbehavior = mis
    with caplog.at_level(logging.WARNING, logger="pullbench"):
        result = pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out",
                      plain_http=True, retry=FAST)
    assert result.retries == 1
    assert result.backoff_s == pytest.approx(1.0)  # what the registry asked, not the backoff
    assert any("Retry-After: 1" in r.getMessage() for r in caplog.records)


def test_retry_after_http_date_is_honoured(fresh_pushed_image, tmp_path, caplog):
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    mis = Misbehavior(fail_status=503, fail_times=1, retry_after=when, fail_on="manifests")
    fresh_pushed_image.registry.misbehavior = mis
    with caplog.at_level(logging.WARNING, logger="pullbench"):
        result = pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out",
                      plain_http=True, retry=FAST)
    assert result.retries == 1
    assert 1.0 < result.backoff_s <= 3.0  # until that date (1 s resolution), not the backoff
    assert any(f"Retry-After: {when}" in r.getMessage() for r in caplog.records)


def test_parse_retry_after_forms():
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_long_retry_after_is_capped(fresh_pushed_image, tmp_path):
    mis = Misbehavior(fail_status=429, fail_times=1, retry_after="3600", fail_on="manifests")
    fresh_pushed_image.registry.misbehavior = mis
    result = pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True,
                  retry=RetryPolicy(retry_after_max_s=0.2))
    assert result.backoff_s == pytest.approx(0.2)


def test_retry_after_past_the_deadline_gives_up_at_once(fresh_pushed_image, tmp_path):
    mis = Misbehavior(fail_status=429, retry_after="60")
    fresh_pushed_image.registry.misbehavior = mis
    with pytest.raises(RegistryError, match=r"asked to wait 60 s \(Retry-After\), past the "
                                            r"deadline"):
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True,
             retry=RetryPolicy(deadline_s=5, retry_after_max_s=120))
    assert mis.seen.failed == 1


@pytest.mark.parametrize("attempts", [1, 3])
def test_attempts_are_configurable(fresh_pushed_image, tmp_path, attempts):
    mis = Misbehavior(fail_status=503, fail_plain_body=True)
    fresh_pushed_image.registry.misbehavior = mis
    with pytest.raises(RegistryUnavailable, match="answered 503") as info:
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True,
             retry=RetryPolicy(attempts=attempts, backoff_initial_s=0.01, backoff_max_s=0.02))
    assert mis.seen.failed == attempts
    if attempts > 1:
        assert f"{attempts} times" in str(info.value)


def test_connection_closed_before_the_answer_is_retried(fresh_pushed_image, tmp_path):
    mis = Misbehavior(fail_status=500, fail_by_closing=True, fail_times=2, fail_on="blobs")
    fresh_pushed_image.registry.misbehavior = mis
    result = pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True,
                  retry=FAST)
    assert mis.seen.failed == 2
    assert result.retries == 2


# ----------------------------------------------------------------------------- 5 resume

STRATEGIES = [
    "go-iocopy",
    "pr48602",
    "containerd-1m",
    "requests-iter-content",
    "copyfileobj",
    "splice",
    "tunable:read_path=read1,hash_mode=thread",
    "tunable:read_path=recv_into,hash_mode=after",
    "tunable:write_mode=fill,hash_mode=on-read",
]


def _strategy(spec: str):
    name, _, rest = spec.partition(":")
    params = dict(pair.split("=") for pair in filter(None, rest.split(",")))
    return get_strategy(name, **params)


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("spec", STRATEGIES)
def test_interrupted_body_resumes_with_range_for_every_strategy(fresh_pushed_image, tmp_path,
                                                                spec, reset):
    # only the 2 MiB layer is longer than the cut; by 1.2 MB even a 1 MiB-buffer strategy has
    # written something, so every strategy resumes from a byte > 0
    mis = Misbehavior(drop_after_bytes=1_200_000, drop_reset=reset, body_fault_times=1)
    fresh_pushed_image.registry.misbehavior = mis
    dest = tmp_path / "out"
    result = pull(fresh_pushed_image.reference, _strategy(spec), dest, plain_http=True,
                  retry=FAST)
    assert mis.seen.body_faults == 1
    assert result.resumes == 1
    ranges = mis.seen.range_requests
    assert len(ranges) == 1
    first, last = (int(x) for x in ranges[0].removeprefix("bytes=").split("-"))
    assert 0 < first <= 1_200_000 < last  # a closed range from where the copy was cut
    assert _stored_blobs_verify(dest) == 5
    assert not list(dest.rglob("*.partial"))


def test_corruption_is_still_caught_over_a_resumed_blob(fresh_pushed_image, tmp_path):
    """The 2 MiB layer is cut at 1.5 MB and every response flips a byte: the digest check over
    the whole resumed blob fails, a restart from zero (once) fails too, nothing is stored."""
    layout = fresh_pushed_image.layout
    layer = max(layout.read_json(layout.manifest_digest)["layers"], key=lambda d: d["size"])
    mis = Misbehavior(drop_after_bytes=1_500_000, body_fault_times=1, corrupt_blobs=True)
    fresh_pushed_image.registry.misbehavior = mis
    client = RegistryClient(fresh_pushed_image.registry.host, plain_http=True)
    dest = tmp_path / "blobs" / "sha256" / layer["digest"][7:]
    with pytest.raises(DigestMismatch):
        get_strategy("go-iocopy").copy(
            None, dest, expected_size=layer["size"], expected_digest=layer["digest"],
            reopen=lambda offset: client.open_blob_range("fixtures/small", layer, offset),
            policy=FAST)
    assert len(mis.seen.range_requests) == 1  # resumed, then checked over the whole blob
    assert not dest.exists()
    assert not list(tmp_path.rglob("*.partial"))


def test_strategy_that_cannot_resume_restarts_from_zero(fresh_pushed_image, tmp_path):
    base = get_strategy("go-iocopy")

    class Restarting(type(base)):  # type: ignore[misc]
        resumable = False

    strategy = Restarting(**base.params)
    mis = Misbehavior(drop_after_bytes=300_000, body_fault_times=2)
    fresh_pushed_image.registry.misbehavior = mis
    result = pull(fresh_pushed_image.reference, strategy, tmp_path / "out", plain_http=True,
                  retry=FAST)
    assert result.resumes == 2
    assert mis.seen.range_requests == []  # whole-blob GETs again
    assert _stored_blobs_verify(tmp_path / "out") == 5


def test_registry_ignoring_range_makes_the_copy_start_over(fresh_pushed_image, tmp_path):
    mis = Misbehavior(drop_after_bytes=300_000, body_fault_times=1, ignore_range=True)
    fresh_pushed_image.registry.misbehavior = mis
    result = pull(fresh_pushed_image.reference, "containerd-1m", tmp_path / "out",
                  plain_http=True, retry=FAST)
    assert result.resumes == 1
    assert len(mis.seen.range_requests) == 1  # asked for a range, got the whole blob (200)
    assert _stored_blobs_verify(tmp_path / "out") == 5


def test_a_body_cut_every_time_gives_up_with_a_clear_error(fresh_pushed_image, tmp_path):
    mis = Misbehavior(drop_after_bytes=0)  # every body cut before its first byte: no progress
    fresh_pushed_image.registry.misbehavior = mis
    with pytest.raises(SizeMismatch, match=r"gave up \(RetryPolicy attempts=3"):
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True,
             retry=RetryPolicy(attempts=3, backoff_initial_s=0.01, backoff_max_s=0.02))


# ----------------------------------------------------------------------------- 6 stalls


def test_stalled_body_is_cut_and_resumed(fresh_pushed_image, tmp_path):
    mis = Misbehavior(stall_after_bytes=300_000, body_fault_times=1, stall_s=30)
    fresh_pushed_image.registry.misbehavior = mis
    result = pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True,
                  retry=RetryPolicy(speed_time_s=0.5, backoff_initial_s=0.01))
    assert result.resumes == 1
    assert mis.seen.stalls_ended_by_client == 1  # the client hung up, not the server's timer
    assert mis.seen.stalls_timed_out == 0


@pytest.mark.parametrize("spec", ["go-iocopy", "containerd-1m", "splice"])
def test_slow_trickle_is_caught_by_the_low_speed_limit(fresh_pushed_image, tmp_path, spec):
    """20 bytes/s: each byte beats the read timeout, only the low-speed limit catches it."""
    mis = Misbehavior(stall_after_bytes=300_000, trickle_bytes_s=20, body_fault_times=1,
                      stall_s=6)
    fresh_pushed_image.registry.misbehavior = mis
    result = pull(fresh_pushed_image.reference, _strategy(spec), tmp_path / "out",
                  plain_http=True,
                  retry=RetryPolicy(speed_time_s=0.5, speed_limit_bytes_s=1024,
                                    backoff_initial_s=0.01))
    assert result.resumes == 1
    assert mis.seen.stalls_ended_by_client == 1
    assert mis.seen.stalls_timed_out == 0


def test_endless_trickle_fails_naming_the_speed_limit(fresh_pushed_image, tmp_path):
    mis = Misbehavior(stall_after_bytes=300_000, trickle_bytes_s=20, stall_s=6)
    fresh_pushed_image.registry.misbehavior = mis
    with pytest.raises(SizeMismatch, match=r"under the low-speed limit of 1024 bytes/s"):
        pull(fresh_pushed_image.reference, "go-iocopy", tmp_path / "out", plain_http=True,
             retry=RetryPolicy(attempts=2, speed_time_s=0.3, backoff_initial_s=0.01))
    assert not list((tmp_path / "out").rglob("*.partial"))


def _cli_pull(reference: str, dest: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from pullbench.cli import main; main()", "pull", "--plain-http",
         "--dest", str(dest),
         "-j", "1", *extra, reference],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_die_with_parent,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _partial_bytes(dest: Path) -> int:
    total = 0
    for path in dest.rglob("*.partial") if dest.exists() else ():
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # a small temp file renamed into place meanwhile
            pass
    return total


def _wait_for(predicate, proc: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(600):
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"pull exited before {what}: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}")


def test_ctrl_c_stops_a_stalled_pull_at_once_and_leaves_no_temp_file(fresh_pushed_image,
                                                                       tmp_path):
    # the stall lasts 120 s and the low-speed window is 120 s: only Ctrl-C can end it sooner
    mis = Misbehavior(stall_after_bytes=300_000, body_fault_times=1, stall_s=120)
    fresh_pushed_image.registry.misbehavior = mis
    dest = tmp_path / "out"
    proc = _cli_pull(fresh_pushed_image.reference, dest, "--speed-time", "120")
    _wait_for(lambda: mis.seen.stalls_started == 1 and _partial_bytes(dest) == 300_000, proc,
              "the stall, with every byte sent before it written to the temp file")
    proc.send_signal(signal.SIGINT)
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert b"Traceback" not in err
    assert mis.seen.stalls_ended_by_client == 1  # the client hung up mid-stall
    assert mis.seen.stalls_timed_out == 0
    assert not list(dest.rglob("*.partial"))
    assert not (dest / "index.json").exists()


def test_partial_left_by_a_killed_pull_is_resumed_and_strays_are_removed(fresh_pushed_image,
                                                                          tmp_path):
    mis = Misbehavior(stall_after_bytes=300_000, body_fault_times=1, stall_s=120)
    reg = fresh_pushed_image.registry
    reg.misbehavior = mis
    dest = tmp_path / "out"
    proc = _cli_pull(fresh_pushed_image.reference, dest, "--speed-time", "120")
    _wait_for(lambda: mis.seen.stalls_started == 1 and _partial_bytes(dest) == 300_000, proc,
              "the stall, with every byte sent before it written to the temp file")
    proc.kill()  # SIGKILL: no clean-up can run
    proc.wait()
    left = list(dest.rglob("*.partial"))
    assert len(left) == 1
    resumable = left[0]
    kept = resumable.stat().st_size
    assert kept == 300_000
    stray = resumable.with_name(".%s.partial" % ("0" * 64))  # a killed pull of another blob
    stray.write_bytes(b"half a blob")
    after = Misbehavior()
    reg.misbehavior = after
    result = pull(fresh_pushed_image.reference, "go-iocopy", dest, plain_http=True)
    assert after.seen.range_requests == [f"bytes={kept}-{after_size(resumable)}"]
    assert not list(dest.rglob("*.partial"))  # reused one renamed into place, stray removed
    assert _stored_blobs_verify(dest) == 5
    assert result.resumes == 0  # reusing a leftover is not a fault of this run


def after_size(partial: Path) -> int:
    """The last byte index of the blob a ``.<hex>.partial`` file belongs to."""
    blob = partial.with_name(partial.name[1:].removesuffix(".partial"))
    return blob.stat().st_size - 1


# ----------------------------------------------------------------------------- 7 index.json


def test_failed_pull_writes_no_index_json(fresh_pushed_image, tmp_path):
    fresh_pushed_image.registry.misbehavior = Misbehavior(corrupt_blobs=True)
    dest = tmp_path / "out"
    with pytest.raises(DigestMismatch):
        pull(fresh_pushed_image.reference, "go-iocopy", dest, plain_http=True)
    assert not (dest / "index.json").exists()


def test_index_json_comes_last_and_skopeo_reads_the_layout(fresh_pushed_image, tmp_path):
    dest = tmp_path / "out"
    result = pull(fresh_pushed_image.reference, "go-iocopy", dest, plain_http=True)
    index = json.loads((dest / "index.json").read_text())
    top = index["manifests"][0]["digest"]
    assert top == result.manifest_digest
    newest_blob = max(p.stat().st_mtime_ns for p in (dest / "blobs" / "sha256").iterdir())
    assert (dest / "index.json").stat().st_mtime_ns >= newest_blob
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        if os.environ.get("CI"):
            pytest.fail("skopeo is required in CI")
        pytest.skip("skopeo not installed")
    out = tmp_path / "copy"
    done = subprocess.run([skopeo, "--insecure-policy", "copy", f"oci:{dest}:latest",
                           f"dir:{out}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (out / "manifest.json").is_file()


# ----------------------------------------------------------------------------- honest measurements


def test_runs_that_needed_retries_are_recorded_and_left_out_of_verdicts(tmp_path):
    import contextlib

    from pullbench.cli import main
    from pullbench.experiment._analysis import analyze_folder
    from pullbench.experiment._endpoints import Endpoint
    from pullbench.experiment._report import format_analysis
    from pullbench.experiment._results import load_results
    from pullbench.experiment._runner import run_experiment
    from pullbench.experiment._spec import ExperimentSpec
    from pullbench.servers import EmbeddedRegistry

    # the first two blob requests of the experiment get 503, the first long body is cut once
    flaky = Misbehavior(fail_status=503, fail_times=2, fail_on="GET blobs", retry_after="0",
                        drop_after_bytes=1_200_000, body_fault_times=1)

    @contextlib.contextmanager
    def flaky_registry(spec, work_dir):
        with EmbeddedRegistry(work_dir / "r", misbehavior=flaky) as reg:
            yield Endpoint(host=reg.host, url=reg.url, kind=reg.kind, version=reg.version)

    spec = ExperimentSpec(name="t-flaky", isolation="inprocess", images=("synthetic-small",),
                          arms=("go-iocopy", "containerd-1m"), blocks=3, warmup_blocks=0,
                          seed=5)
    result = run_experiment(spec, tmp_path / "res", progress=False,
                            registry_factory=flaky_registry)
    assert result.error_runs == 0
    df = load_results(tmp_path / "res")
    assert {"retries", "resumes", "backoff_s"} <= set(df.columns)  # per-run columns
    assert int(df["retries"].sum()) == 2
    assert int(df["resumes"].sum()) == 1
    faulty = df[(df["retries"] > 0) | (df["resumes"] > 0)]
    assert 1 <= len(faulty) <= 2

    analysis = analyze_folder(tmp_path / "res", n_resamples=200, save=False)
    assert analysis.n_retried == len(faulty)
    assert sum(analysis.retried_by_arm.values()) == len(faulty)
    assert analysis.n_runs == len(df) - len(faulty)
    text = format_analysis(analysis)
    assert f"{len(faulty)} run(s) that needed retries or resumes excluded" in text
    assert "--include-retried" in text

    kept = analyze_folder(tmp_path / "res", n_resamples=200, save=False, include_retried=True)
    assert kept.n_runs == len(df)
    assert kept.n_retried == len(faulty)

    out = CliRunner().invoke(main, ["analyze", str(tmp_path / "res"), "--include-retried"])
    assert out.exit_code == 0, out.output
    assert "included (--include-retried)" in out.output
