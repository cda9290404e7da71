"""Shaping accuracy and cost of pullbench's user-space shaping proxy.

Prints two tables:

1. accuracy: target vs achieved throughput and added RTT, per named profile and for 10 Mbit/s to
   1 Gbit/s at 20 ms RTT (the issue's contract: ±5 % and ±1 ms);
2. cost: the proxy process's CPU seconds per GB moved (passthrough and shaped), which on a
   2-core machine is taken from the puller.

Run: ``python benchmarks/bench_shaping.py [--duration-s 2] [--cost-bytes 512]``. The machine is
shared: the load average is printed with the results; rerun when it is high.
"""

from __future__ import annotations

import argparse
import os
import platform

from pullbench.servers import selftest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=2.0,
                        help="length of each accuracy transfer at the target rate")
    parser.add_argument("--cost-bytes", type=int, default=512,
                        help="MiB moved per profile for the CPU-cost table")
    args = parser.parse_args()

    load = os.getloadavg()
    print(f"# pullbench shaping benchmark — {platform.node()} · {os.cpu_count()} CPUs · "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print()
    print("## Accuracy (target vs achieved)")
    rows = selftest(["lan-1g", "wan-200m", "wan-50m"], duration_s=args.duration_s, pings=30)
    rows += selftest(rates_mbit_s=(10.0, 50.0, 100.0, 200.0, 500.0, 1000.0), rtt_ms=20.0,
                     duration_s=args.duration_s, pings=30)
    header = (f"| {'profile':<38} | {'target Mbit/s':>13} | {'achieved':>9} | {'err %':>6} "
              f"| {'target RTT ms':>13} | {'added RTT ms':>12} | {'err ms':>6} | ok  |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        ok = "yes" if r.passed else "NO "
        print(f"| {r.profile[:38]:<38} | {r.target_mbit_s:>13.1f} | {r.achieved_mbit_s:>9.1f} "
              f"| {r.throughput_error_pct:>+6.2f} | {r.target_rtt_ms:>13.2f} "
              f"| {r.added_rtt_ms:>12.2f} | {r.rtt_error_ms:>+6.2f} | {ok:<3} |")
    passed = sum(r.passed for r in rows)
    print(f"\n{passed}/{len(rows)} within ±5 % throughput and ±1 ms RTT")

    print()
    print("## Proxy CPU per GB moved (one connection, bulk transfer)")
    cost_bytes = args.cost_bytes * 1024 * 1024
    cost = selftest(["passthrough", "lan-1g", "wan-200m"], duration_s=60.0,
                    max_transfer_bytes=cost_bytes, pings=5)
    print(f"| {'profile':<12} | {'moved MB':>9} | {'Mbit/s':>8} | {'proxy CPU s':>11} "
          f"| {'CPU s / GB':>10} |")
    print(f"|{'-' * 14}|{'-' * 11}|{'-' * 10}|{'-' * 13}|{'-' * 12}|")
    for r in cost:
        per_gb = r.proxy_cpu_s / (r.transfer_bytes / 1e9)
        print(f"| {r.profile:<12} | {r.transfer_bytes / 1e6:>9.1f} | {r.achieved_mbit_s:>8.1f} "
              f"| {r.proxy_cpu_s:>11.2f} | {per_gb:>10.2f} |")
    load = os.getloadavg()
    print(f"\nload at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
