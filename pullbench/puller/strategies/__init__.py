"""Copy strategies: how one blob body moves from an HTTP response into a file.

A strategy reads the body, writes it to a temp file beside its final place, counting every read
and write (:class:`~pullbench.puller._probes.Meter`) and hashing the bytes;
:meth:`CopyStrategy.copy` then checks size and digest and renames the temp file into place.
On any mismatch the temp file is removed and :class:`~pullbench.SizeMismatch` /
:class:`~pullbench.DigestMismatch` is raised.

The dimensions (``pullbench strategies`` lists the presets built from them):

read path (``read_path``)
    ``readinto``: ``readinto1`` on http.client's socket stream (the ``io.BufferedReader`` over
    the socket that ``http.client`` reads from, ``response.raw._fp.fp``): first whatever the 8 KiB
    buffer already holds, then **one** ``recv`` into the caller's buffer. This is the Go-like short
    read: ``Read`` returns what one read of the socket gives (golang/go:src/io/io.go). Note that
    ``readinto`` on the *response* (http.client ``HTTPResponse.readinto``) keeps reading until the
    whole buffer is full, so it is not Go-like and is not offered as a short read.
    ``read1``: ``HTTPResponse.read1(n)`` on ``response.raw._fp``; also one socket read, but it
    allocates a new ``bytes`` per read and pullbench copies it into the buffer.
    ``recv_into``: after draining what http.client already buffered, ``socket.recv_into`` on the
    connection's socket, bounded by ``Content-Length``.
    urllib3 ``read(amt)`` / ``iter_content(N)`` accumulate until exactly ``N`` bytes are there
    (strategy ``requests-iter-content``); ``shutil.copyfileobj`` reads ``r.raw.read(N)``
    (``copyfileobj``); ``os.splice`` moves socket → pipe → file in the kernel (``splice``).
read size (``read_size``)
    The copy buffer: the most one read may return.
write coalescing (``write_mode``, ``write_size``)
    ``per-read``: one ``write`` per read (Go ``io.Copy``); ``bufio``: a ``write_size`` buffer with
    Go ``bufio.Writer`` semantics (a write larger than the free space goes straight to the file
    when the buffer is empty; golang/go:src/bufio/bufio.go); ``fill``: read until the
    ``write_size`` buffer is full, then write it (containerd's ``io.ReadAtLeast`` loop,
    containerd/containerd:core/content/helpers.go ``copyWithBuffer``).
hash location (``hash_mode``)
    ``inline`` (in the copy loop, as ``io.TeeReader`` into the digester; with ``fill`` each full
    buffer is hashed when it is written, as containerd's content writer does), ``on-read`` (each
    read is hashed as soon as it lands, while it is still in the CPU cache; differs from
    ``inline`` only for ``fill``), ``thread`` (a helper thread; ``hashlib`` releases the GIL for
    large updates, so hashing overlaps the socket read and the file write), or ``after``
    (re-read the finished file; what ``splice`` has to do).

Every strategy's reads must come from real reads: nothing is simulated. Counts are made by the
strategy itself as it calls the OS, so the write-size histogram of a pull equals what
``strace -e trace=write`` sees for the destination file (tests/test_probes.py checks it).

Registering your own strategy does not touch the puller::

    >>> from pullbench import CopyStrategy, register_strategy, get_strategy
    >>> class EightK(CopyStrategy):
    ...     '''Reads 8 KiB with urllib3, writes each chunk.'''
    ...     name = "eight-k"
    ...     mirrors = "nothing in particular"
    ...     defaults = {"chunk_size": 8192}
    ...     def transfer(self, response, fd, meter, *, limit, hasher):
    ...         for chunk in response.raw.stream(self.params["chunk_size"], decode_content=False):
    ...             meter.read(len(chunk)); hasher.update(chunk); meter.write(fd, chunk)
    ...         return hasher
    >>> _ = register_strategy(EightK, replace=True)
    >>> get_strategy("eight-k", chunk_size=4096).params["chunk_size"]
    4096
Modules: ``_base`` (records, :class:`CopyStrategy`, the hashing thread), ``_readpaths`` (the one
module that reaches into private ``http.client``/urllib3 internals), ``_copiers`` (the strategy
classes), ``_registry`` (presets by name and their parameters).
"""

from __future__ import annotations

from ..._sizes import SIZE_FORMATS as SIZE_FORMATS
from ._base import CopyStats as CopyStats
from ._base import CopyStrategy as CopyStrategy
from ._base import StrategyInfo as StrategyInfo
from ._registry import get_strategy as get_strategy
from ._registry import list_strategies as list_strategies
from ._registry import parse_strategy_param as parse_strategy_param
from ._registry import register_strategy as register_strategy

__all__ = ["SIZE_FORMATS", "CopyStats", "CopyStrategy", "StrategyInfo", "get_strategy",
           "list_strategies", "parse_strategy_param", "register_strategy"]
