"""The one parser for byte sizes written by people: ``--param``, spec files, CLI options.

``64k`` = ``64K`` = ``64Ki`` = ``64KiB`` = ``64kb`` = 65536; ``1m`` = ``1MiB`` = 1048576;
``1.5MiB`` = 1572864; ``1g`` = 1073741824; also plain ``32768`` and ``0x8000``. Every suffix is a
power of 1024 (as in Go's and containerd's buffer sizes); ``kb``/``mb``/``gb`` are read the same
way because that is what people mean when they type them for buffer sizes.
"""

from __future__ import annotations

import re

__all__ = ["SIZE_FORMATS", "looks_like_size", "parse_size"]

#: The forms :func:`parse_size` accepts, quoted in every error message about a size.
SIZE_FORMATS = ("32768, 0x8000, or a number with a binary suffix: 64k = 64Ki = 64KiB = 64kb = "
                "65536, 1.5m = 1.5MiB = 1572864, 1g = 1GiB = 1073741824")

_SUFFIX_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg])(?:i?b|i)?$", re.IGNORECASE)
_FACTORS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def looks_like_size(text: str) -> bool:
    """Whether ``text`` is a number with a size suffix (``64k``, ``1.5MiB``), not a plain number."""
    return _SUFFIX_RE.match(text.strip()) is not None


def parse_size(text: str | int) -> int:
    """A byte count from ``text``.

    Parameters
    ----------
    text : str or int
        ``"65536"``, ``"0x10000"``, ``"64k"``, ``"64KiB"``, ``"1.5m"``, ``"1g"`` … (see
        :data:`SIZE_FORMATS`); an ``int`` is returned unchanged.

    Returns
    -------
    int
        Bytes.

    Raises
    ------
    ValueError
        Not a size, or a fraction of a byte (``0.3k``); the message lists the accepted forms.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a size; accepted: {SIZE_FORMATS}")
    if isinstance(text, int):
        return text
    t = text.strip()
    match = _SUFFIX_RE.match(t)
    if match:
        number, unit = match.groups()
        value = float(number) * _FACTORS[unit.lower()]
        if value != int(value):
            raise ValueError(f"{text!r} is not a whole number of bytes; accepted: {SIZE_FORMATS}")
        return int(value)
    try:
        return int(t, 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a size; accepted: {SIZE_FORMATS}") from None
