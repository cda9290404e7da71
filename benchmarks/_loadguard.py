"""Load-average guard shared by the serving benchmarks: a speed target is only called met on a
quiet machine (1-minute load below one per core, before and after the measurement)."""

from __future__ import annotations

import os


def load_text() -> str:
    """``"load 1.23 0.98 0.77 (2 cores)"``: the 1/5/15-minute load averages."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


def quiet() -> bool:
    """True when the 1-minute load average is below one per core."""
    return os.getloadavg()[0] < (os.cpu_count() or 1)


def verdict(met: bool, quiet_before: bool) -> str:
    """``met`` / ``NOT met`` on a quiet machine; otherwise no verdict, with the reason."""
    if not (quiet_before and quiet()):
        return (f"not judged: machine loaded ({load_text()}; needs < 1 per core before and "
                "after) -- rerun on a quiet machine")
    return "met" if met else "NOT met"
