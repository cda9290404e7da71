"""What pullbench does against a hostile or flaky registry, and how long it takes.

Every fault is injected by a real local server that misbehaves on purpose (the embedded
registry's Misbehavior seam; HostileHost on 127.0.0.2 / 127.0.0.3 as second and third hosts).
Prints one table row per fault: the fault, what pullbench did, the wall time of the pull (or of
the exit after Ctrl-C), and for the endless bodies the peak RSS of a pull in a fresh process next
to a clean pull's (a ratio, measured side by side in this run). The load average is printed: times
on a loaded machine are longer, ratios hold better.

Run: ``PYTHONPATH=. python benchmarks/bench_faults.py``
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadguard import load_text

from pullbench import PullbenchError, RetryPolicy, build_image, pull, push_image
from pullbench.servers import (
    EmbeddedRegistry,
    HostileHost,
    HostileReply,
    Misbehavior,
)

MiB = 1024 * 1024
USER, PASSWORD = "alice", "correct horse battery staple"
ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import resource, sys, tempfile
from pullbench import pull, PullbenchError
try:
    pull(sys.argv[1], "go-iocopy", tempfile.mkdtemp(), plain_http=True,
         credentials=tuple(sys.argv[2:4]) if len(sys.argv) > 3 else None)
    outcome = "ok"
except PullbenchError as exc:
    outcome = type(exc).__name__
print(outcome, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def child_pull(reference: str, *creds: str) -> tuple[str, int]:
    """Pull in a fresh interpreter; (outcome, peak RSS bytes)."""
    done = subprocess.run([sys.executable, "-c", CHILD, reference, *creds], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    outcome, rss = done.stdout.split()[-2:]
    return outcome, int(rss)


def timed(fn: Callable[[], Any]) -> tuple[str, float]:
    t0 = time.perf_counter()
    try:
        result = fn()
        outcome = "ok" if result is None else str(result)
    except PullbenchError as exc:
        text = re.sub(r"^(blob|manifest) \S+?: ", "", str(exc))
        text = re.sub(r"sha256:[0-9a-f]{64}", "sha256:…", text)
        outcome = f"{type(exc).__name__}: {text[:150]}{'…' if len(text) > 150 else ''}"
    return outcome, time.perf_counter() - t0


@contextlib.contextmanager
def registry(layout: Any) -> Iterator[tuple[EmbeddedRegistry, str]]:
    with EmbeddedRegistry() as reg:
        push_image(layout, f"{reg.host}/bench/app:v1")
        yield reg, f"{reg.host}/bench/app:v1"


def basic_authorizer() -> Callable[..., Any]:
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return lambda m, p, h: None if h.get("Authorization") == expected else (
        401, {"WWW-Authenticate": 'Basic realm="registry"'})


def fast(**kw: Any) -> RetryPolicy:
    return RetryPolicy(backoff_initial_s=0.05, backoff_max_s=0.2, **kw)


def main() -> None:
    layout = build_image("synthetic-small")
    rows: list[tuple[str, str, float, str]] = []
    print(f"# bench_faults ({load_text()} at start)")

    def run(fault: str, mis: Misbehavior | None, what: Callable[[str, Path], Any],
            setup: Callable[[EmbeddedRegistry], Any] | None = None, extra: str = "") -> None:
        with registry(layout) as (reg, ref), tempfile.TemporaryDirectory() as tmp:
            if setup is not None:
                setup(reg)
            reg.misbehavior = mis
            outcome, took = timed(lambda: what(ref, Path(tmp)))
            rows.append((fault, outcome, took, extra(reg) if callable(extra) else extra))

    def plain(policy: RetryPolicy | None = None, **kw: Any) -> Callable[[str, Path], Any]:
        def go(ref: str, dest: Path) -> str:
            r = pull(ref, "go-iocopy", dest / "s", plain_http=True, retry=policy, **kw)
            return (f"ok: {r.retries} retries, {r.resumes} resumes, {r.backoff_s:.2f} s backoff"
                    if r.retries or r.resumes else "ok")
        return go

    run("clean pull (baseline)", None, plain())

    # --- security
    with HostileHost({"/token": HostileReply(200, {}, b'{"token":"t"}')},
                     host="127.0.0.3") as third, HostileHost(host="127.0.0.2") as cdn:
        cdn.routes["/blobs/*"] = HostileReply(
            401, {"WWW-Authenticate": f'Bearer realm="{third.url}/token",service="cdn"'})

        def cdn_setup(reg: EmbeddedRegistry) -> None:
            reg.authorizer = basic_authorizer()
            reg.blob_redirect = lambda n, d: f"{cdn.url}/blobs/{d}"
        run("307 to CDN (127.0.0.2) → 401 Bearer, realm on 127.0.0.3", None,
            plain(credentials=(USER, PASSWORD)), cdn_setup,
            extra=lambda reg: f"3rd host requests: {len(third.requests)}, credentials at CDN: "
                              f"{len(cdn.credentials_seen())}")

    with registry(layout) as (reg, ref):
        t0 = time.perf_counter()
        clean_outcome, clean_rss = child_pull(ref)
        rows.append(("clean pull in a fresh process (baseline of the next two)", clean_outcome,
                     time.perf_counter() - t0, f"peak RSS {clean_rss / MiB:.0f} MiB; the time "
                                               "includes starting Python"))
    with registry(layout) as (reg, ref):
        mis = Misbehavior(error_body_bytes=200 * MiB)
        reg.misbehavior = mis
        absent = ref.replace(":v1", ":absent")
        t0 = time.perf_counter()
        outcome, rss = child_pull(absent)
        rows.append(("404 with a 200 MiB JSON error body", outcome, time.perf_counter() - t0,
                     f"peak RSS {rss / MiB:.0f} MiB vs clean pull {clean_rss / MiB:.0f} MiB "
                     f"(×{rss / clean_rss:.2f}); server got {mis.seen.filler_bytes / MiB:.1f} "
                     "MiB out"))
    with registry(layout) as (reg, ref), HostileHost(host="127.0.0.2") as realm:
        realm.routes["/token"] = HostileReply(200, {}, b'{"token": "', endless_bytes=200 * MiB)
        reg.authorizer = lambda m, p, h: (
            401, {"WWW-Authenticate": f'Bearer realm="{realm.url}/token",service="r"'})
        t0 = time.perf_counter()
        outcome, rss = child_pull(ref, USER, PASSWORD)
        rows.append(("token endpoint streaming 200 MiB", outcome, time.perf_counter() - t0,
                     f"peak RSS {rss / MiB:.0f} MiB vs clean pull {clean_rss / MiB:.0f} MiB "
                     f"(×{rss / clean_rss:.2f}); realm got {realm.filler_bytes / MiB:.1f} MiB "
                     "out"))
    run("md5: layer digest", Misbehavior(digest_algorithm="md5"), plain())
    run("Docker-Content-Digest: shake_256:…", Misbehavior(content_digest="shake_256:" + "ab" * 32),
        plain())

    # --- faults real registries produce
    run("bare 429 (text body, no Retry-After) ×2",
        Misbehavior(fail_status=429, fail_times=2, fail_plain_body=True, retry_after=""),
        plain())
    run("429 Retry-After: 1", Misbehavior(fail_status=429, fail_times=1, retry_after="1"),
        plain())
    run("503 Retry-After: <HTTP-date +2 s>",
        Misbehavior(fail_status=503, fail_times=1,
                    retry_after=email.utils.formatdate(time.time() + 2, usegmt=True)), plain())
    run("503 for ever (attempts=4)", Misbehavior(fail_status=503, retry_after=""), plain())
    run("connection closed before the answer ×2",
        Misbehavior(fail_status=500, fail_by_closing=True, fail_times=2), plain())
    for strategy in ("go-iocopy", "containerd-1m", "splice"):
        for reset in (False, True):
            run(f"body cut at 1.2 MB ({'RST' if reset else 'FIN'}), {strategy}",
                Misbehavior(drop_after_bytes=1_200_000, drop_reset=reset, body_fault_times=1),
                lambda ref, dest, s=strategy: (lambda r: f"ok: {r.resumes} resume(s)")(
                    pull(ref, s, dest / "s", plain_http=True)))
    run("server ignores Range (200 on resume)",
        Misbehavior(drop_after_bytes=1_200_000, body_fault_times=1, ignore_range=True), plain())
    run("body stalls at 300 kB (speed_time 2 s)",
        Misbehavior(stall_after_bytes=300_000, body_fault_times=1, stall_s=60),
        plain(fast(speed_time_s=2.0)))
    run("body trickles 20 B/s at 300 kB (limit 1 KiB/s over 2 s)",
        Misbehavior(stall_after_bytes=300_000, trickle_bytes_s=20, body_fault_times=1,
                    stall_s=60), plain(fast(speed_time_s=2.0)))
    run("failed pull (corrupt layer)", Misbehavior(corrupt_blobs=True),
        lambda ref, dest: (pull(ref, "go-iocopy", dest / "s", plain_http=True), None)[1],
        extra="index.json written: no (checked by tests)")
    run("redirect to file:///etc/passwd", None, plain(),
        lambda reg: setattr(reg, "blob_redirect", lambda n, d: "file:///etc/passwd"))
    with HostileHost(host="127.0.0.2") as a, HostileHost(host="127.0.0.3") as b:
        a.routes["/a"] = HostileReply(302, {"Location": f"{b.url}/b"})
        b.routes["/b"] = HostileReply(302, {"Location": f"{a.url}/a"})
        run("redirect loop 127.0.0.2 ↔ 127.0.0.3", None, plain(),
            lambda reg: setattr(reg, "blob_redirect", lambda n, d: f"{a.url}/a"))

    # --- Ctrl-C and SIGKILL of a CLI pull stalled mid-body
    for sig in (signal.SIGINT, signal.SIGKILL):
        with registry(layout) as (reg, ref), tempfile.TemporaryDirectory() as tmp:
            mis = Misbehavior(stall_after_bytes=300_000, body_fault_times=1, stall_s=120)
            reg.misbehavior = mis
            dest = Path(tmp) / "s"
            proc = subprocess.Popen(
                [sys.executable, "-c", "from pullbench.cli import main; main()", "pull",
                 "--plain-http", "-j", "1", "--dest", str(dest), "--speed-time", "120", ref],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
            while mis.seen.stalls_started == 0 and proc.poll() is None:
                time.sleep(0.02)
            time.sleep(0.3)
            t0 = time.perf_counter()
            proc.send_signal(sig)
            proc.wait(timeout=150)
            took = time.perf_counter() - t0
            left = len(list(dest.rglob("*.partial")))
            if sig == signal.SIGINT:
                rows.append(("Ctrl-C during a 120 s stall", f"exit {proc.returncode}", took,
                             f"temp files left: {left}; stall ended by client: "
                             f"{mis.seen.stalls_ended_by_client}"))
                continue
            reg.misbehavior = after = Misbehavior()
            outcome, again = timed(lambda d=dest: plain()(ref, d.parent) and None)
            rows.append(("next pull after a SIGKILLed one (partial left)", outcome, again,
                         f"partials before: {left}, Range sent: {after.seen.range_requests}"))

    print(f"# {load_text()} at end\n")
    print("| fault | what pullbench does | time (s) | notes |")
    print("|---|---|---:|---|")
    for fault, outcome, took, extra in rows:
        print(f"| {fault} | {outcome} | {took:.2f} | {extra} |")


if __name__ == "__main__":
    main()
