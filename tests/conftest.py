"""Shared test fixtures. Each area keeps its fixtures inside its own marked section."""

from __future__ import annotations

import os

import pytest

# The machine sets REQUESTS_CA_BUNDLE; tests that care set or unset it themselves.


def _is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture(scope="session")
def is_root() -> bool:
    return _is_root()


# --- section: registries and images (issue 2) ---
# --- end section: registries and images ---

# --- section: puller (issue 3) ---
# --- end section: puller ---

# --- section: experiments (issue 5) ---
# --- end section: experiments ---

# --- section: remote (issue 6) ---
# --- end section: remote ---
