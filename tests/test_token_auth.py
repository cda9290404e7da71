"""Auth as real registries do it: token server (Docker token spec), JWT + x5c for Distribution,
htpasswd (bcrypt); refresh of an expiring token; wrong credentials name the realm; no credential
in logs or results."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jwt
import pytest
import requests

from pullbench import AuthenticationError, RegistryError, pull, push_image
from pullbench.servers import (
    DistributionRegistry,
    EmbeddedRegistry,
    Misbehavior,
    TokenServer,
    htpasswd_config,
    write_htpasswd,
)
from pullbench.servers._token import parse_scope

USER, PASSWORD = "alice", "correct horse battery staple"
REPO = "team/app"


@pytest.fixture
def protected(small_image, tmp_path):
    """A token server on 127.0.0.2 (another host) guarding an embedded registry with one image."""
    tokens = TokenServer(users={USER: PASSWORD}, anonymous_pull=["public/app"],
                         style="dockerhub", host="127.0.0.2", directory=tmp_path / "tok").start()
    reg = EmbeddedRegistry(tmp_path / "reg").start()
    push_image(small_image, f"{reg.host}/{REPO}:v1")
    push_image(small_image, f"{reg.host}/public/app:v1")
    reg.authorizer = tokens.authorizer()
    try:
        yield tokens, reg
    finally:
        reg.close()
        tokens.close()


def _blobs(dest: Path) -> list[Path]:
    return sorted(p for p in (dest / "blobs").rglob("*") if p.is_file())


def test_parse_scope_keeps_ports_in_names():
    assert parse_scope("repository:127.0.0.1:5000/app:pull,push") == (
        "repository", "127.0.0.1:5000/app", ("pull", "push"))
    assert parse_scope("repository(plugin):x/y:pull") == ("repository", "x/y", ("pull",))
    assert parse_scope("registry:catalog:*") == ("registry", "catalog", ("*",))
    assert parse_scope("garbage") is None


def test_challenges_are_docker_hub_shaped(protected):
    tokens, reg = protected
    with requests.Session() as s:
        s.trust_env = False
        ping = s.get(f"{reg.url}/v2/")
        manifest = s.get(f"{reg.url}/v2/{REPO}/manifests/v1")
    assert ping.status_code == 401
    # Hub: /v2/ is challenged without a scope; repository requests name the scope
    assert ping.headers["WWW-Authenticate"] == (
        f'Bearer realm="{tokens.realm}",service="{tokens.service}"')
    assert manifest.status_code == 401
    assert f'scope="repository:{REPO}:pull"' in manifest.headers["WWW-Authenticate"]
    assert json.loads(manifest.content)["errors"][0]["code"] == "UNAUTHORIZED"
    assert tokens.realm.startswith("http://127.0.0.2:")


def test_token_answer_and_jwt_claims(protected):
    tokens, _ = protected
    with requests.Session() as s:
        s.trust_env = False
        answer = s.get(tokens.realm, params={"service": tokens.service,
                                             "scope": f"repository:{REPO}:pull,push"},
                       auth=(USER, PASSWORD)).json()
    assert answer["token"] == answer["access_token"]
    assert answer["expires_in"] == 300
    assert answer["issued_at"].endswith("Z")
    header = jwt.get_unverified_header(answer["token"])
    assert header["alg"] == "ES256"
    assert header["x5c"]
    claims = tokens.verify(answer["token"])
    assert claims["iss"] == tokens.issuer
    assert claims["aud"] == tokens.service
    assert claims["sub"] == USER
    assert claims["access"] == [{"type": "repository", "name": REPO, "actions": ["pull", "push"]}]


def test_anonymous_pull_token_for_public_repository(protected, tmp_path):
    tokens, reg = protected
    result = pull(f"{reg.host}/public/app:v1", "containerd-1m", tmp_path / "out", plain_http=True)
    assert len(result.layers) >= 1
    assert any(t.subject == "" and t.access[0][2] == ("pull",) for t in tokens.issued)


def test_private_repository_refuses_anonymous_and_admits_the_user(protected, tmp_path):
    tokens, reg = protected
    with pytest.raises(AuthenticationError):
        pull(f"{reg.host}/{REPO}:v1", "go-iocopy", tmp_path / "anon", plain_http=True)
    assert tokens.counters.insufficient_rejections >= 1
    assert not (tmp_path / "anon" / "blobs").exists() or not _blobs(tmp_path / "anon")
    result = pull(f"{reg.host}/{REPO}:v1", "go-iocopy", tmp_path / "user", plain_http=True,
                  credentials=(USER, PASSWORD))
    assert result.total_bytes > 0
    assert any(t.subject == USER for t in tokens.issued)


def test_wrong_credentials_name_the_realm(protected, tmp_path):
    tokens, reg = protected
    with pytest.raises(AuthenticationError) as info:
        pull(f"{reg.host}/{REPO}:v1", "go-iocopy", tmp_path / "out", plain_http=True,
             credentials=(USER, "wrong"))
    assert tokens.realm in str(info.value)
    assert "wrong" not in str(info.value)
    assert tokens.counters.bad_credentials >= 1


def test_temporary_directory_is_removed_on_close_given_one_kept(tmp_path):
    tokens = TokenServer()
    bundle = tokens.rootcertbundle
    assert bundle.is_file()
    with tokens:
        pass
    assert not tokens.directory.exists()
    with tokens:  # started again: the bundle is written again, the same CA
        assert bundle.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        session = requests.Session()
        session.trust_env = False
        assert session.get(tokens.realm, timeout=10).status_code == 200
        session.close()
    assert not tokens.directory.exists()
    never_started = TokenServer()
    folder = never_started.directory
    del never_started  # garbage: its temporary directory goes with it
    assert not folder.exists()
    with TokenServer(directory=tmp_path / "tok") as kept:
        pass
    assert kept.rootcertbundle.is_file()


def test_expiring_token_is_refreshed_mid_pull(small_image, tmp_path):
    """ghcr-shaped answers carry no expires_in (clients assume 60 s), but the token lives 2 s and
    the registry enforces exp exactly: the puller must take the 401 invalid_token and refresh."""
    tokens = TokenServer(style="ghcr", expires_in_s=2, directory=tmp_path / "tok").start()
    reg = EmbeddedRegistry(tmp_path / "reg").start()
    try:
        push_image(small_image, f"{reg.host}/slow/app:v1")
        reg.authorizer = tokens.authorizer()
        # ≥ 5 requests at concurrency 1: > 3 s, so a 2 s token expires mid-pull; each request
        # takes 0.6 s, so a fresh token (≥ 2 s) always outlives the request it is sent with
        reg.misbehavior = Misbehavior(latency_s=0.6)
        result = pull(f"{reg.host}/slow/app:v1", "containerd-1m", tmp_path / "out",
                      plain_http=True, concurrency=1)
    finally:
        reg.close()
        tokens.close()
    assert len(result.layers) >= 1
    assert tokens.counters.expired_rejections >= 1, "the registry never saw an expired token"
    assert len(tokens.issued) >= 2, "the puller did not fetch a fresh token"


def test_no_credential_in_logs_or_results(protected, tmp_path, caplog, scan_for_secrets):
    _tokens, reg = protected
    caplog.set_level(logging.DEBUG)
    result = pull(f"{reg.host}/{REPO}:v1", "go-iocopy", tmp_path / "ok", plain_http=True,
                  credentials=(USER, PASSWORD))
    with pytest.raises(AuthenticationError) as info:
        pull(f"{reg.host}/{REPO}:v1", "go-iocopy", tmp_path / "bad", plain_http=True,
             credentials=(USER, PASSWORD + "x"))
    text = "\n".join([caplog.text, json.dumps(result.to_row(), default=str),
                      json.dumps(result.to_dict(), default=str), str(info.value), repr(info.value)])
    assert caplog.records, "nothing was logged: the scan would be vacuous"
    scan_for_secrets(text, PASSWORD, PASSWORD + "x", f"{USER}:{PASSWORD}",
                     f"{USER}:{PASSWORD}x")


# --- Distribution 2.8.2 ----------------------------------------------------------------------


def _distribution_with(root: Path, small_image, repo: str, extra: dict) -> DistributionRegistry:
    """Push into a plain Distribution on ``root``, then restart it on the same root with auth."""
    with DistributionRegistry(root) as plain:
        push_image(small_image, f"{plain.host}/{repo}:v1")
    return DistributionRegistry(root, extra_config=extra).start()


@pytest.mark.peers
def test_distribution_accepts_our_jwts_via_x5c_and_rootcertbundle(
        distribution_binary, small_image, tmp_path):
    tokens = TokenServer(users={USER: PASSWORD}, anonymous_pull=False,
                         directory=tmp_path / "tok").start()
    reg = _distribution_with(tmp_path / "root", small_image, REPO, tokens.distribution_config())
    try:
        with requests.Session() as s:
            s.trust_env = False
            challenge = s.get(f"{reg.url}/v2/{REPO}/manifests/v1").headers["WWW-Authenticate"]
            # a token signed by a key that does NOT chain to the rootcertbundle is refused
            with TokenServer(users={USER: PASSWORD}, directory=tmp_path / "other") as other:
                forged = s.get(other.realm, params={"service": tokens.service,
                                                    "scope": f"repository:{REPO}:pull"},
                               auth=(USER, PASSWORD)).json()["token"]
            refused = s.get(f"{reg.url}/v2/{REPO}/manifests/v1",
                            headers={"Authorization": f"Bearer {forged}"})
        assert tokens.realm in challenge
        assert f'service="{tokens.service}"' in challenge
        assert refused.status_code == 401
        with pytest.raises(AuthenticationError):  # anonymous tokens grant nothing here
            pull(f"{reg.host}/{REPO}:v1", "go-iocopy", tmp_path / "anon", plain_http=True)
        result = pull(f"{reg.host}/{REPO}:v1", "containerd-1m", tmp_path / "out",
                      plain_http=True, credentials=(USER, PASSWORD))
        assert result.total_bytes > 0
    finally:
        reg.close()
        tokens.close()


@pytest.mark.peers
def test_distribution_htpasswd_basic_auth(distribution_binary, small_image, tmp_path,
                                          caplog, scan_for_secrets):
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {USER: PASSWORD})
    assert htpasswd.read_text().startswith(f"{USER}:$2b$")
    reg = _distribution_with(tmp_path / "root", small_image, REPO,
                             htpasswd_config(htpasswd, realm="pullbench-basic"))
    caplog.set_level(logging.DEBUG)
    try:
        result = pull(f"{reg.host}/{REPO}:v1", "go-iocopy", tmp_path / "out", plain_http=True,
                      credentials=(USER, PASSWORD))
        with pytest.raises(RegistryError) as info:
            pull(f"{reg.host}/{REPO}:v1", "go-iocopy", tmp_path / "bad", plain_http=True,
                 credentials=(USER, "nope"))
    finally:
        reg.close()
    assert result.total_bytes > 0
    assert isinstance(info.value, AuthenticationError)
    assert "pullbench-basic" in str(info.value)
    scan_for_secrets("\n".join([caplog.text, json.dumps(result.to_row(), default=str),
                                str(info.value)]), PASSWORD, f"{USER}:{PASSWORD}", f"{USER}:nope")
