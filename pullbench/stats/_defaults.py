"""The analysis settings every statistics function, the spec and the CLI default to."""

from __future__ import annotations

__all__ = ["DEFAULT_ALPHA", "DEFAULT_MARGIN", "DEFAULT_POWER"]

#: Equivalence margin, relative to the baseline (0.02 = +-2 %): the smallest effect of interest.
DEFAULT_MARGIN = 0.02
#: Significance level of the two-sided test and of each one-sided TOST test.
DEFAULT_ALPHA = 0.05
#: Target power of the planning figures (runs needed, minimum detectable effect).
DEFAULT_POWER = 0.8
