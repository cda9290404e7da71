"""The puller: a registry client over ``requests`` and the pull pipeline.

Modules
-------
_client
    References → manifests and blobs: ``/v2/`` ping, auth challenges, manifest negotiation,
    platform selection (:class:`RegistryClient`).
_pipeline
    :func:`pull`: resolve, fetch config and layers concurrently into an OCI content store,
    timings and probes (:class:`PullResult`).
_transport
    HTTP plumbing: body caps (``BODY_CAPS``), the retry policy (backoff, ``Retry-After``,
    deadline, resume and low-speed limits; :class:`RetryPolicy`), redirect checks.
_probes
    What a pull measures about itself: CPU, /proc I/O counters, read/write-size histograms.
strategies/
    Copy strategies: how bytes move from a response into a file.
_decompress
    Decompressor strategies (zlib, isal, zlib-ng, unpigz; zstd via zstandard) behind
    :func:`open_layer`: media type → codec, diff_id hashing, bomb caps, truncation checks.
_stages
    The unpack stage inside a pull (:class:`UnpackPlan`: decompressor, schedule after/stream/
    end, order in-order/serial, decompression concurrency) and its coordinator thread.
_unpack
    Layer tar → root filesystem with OCI semantics (whiteouts, opaque dirs, links, modes),
    refusing hostile layers (:class:`RootfsUnpacker`, :func:`unpack_image`).

This package imports nothing from ``experiment``, ``servers`` or ``cli``. The public names are
re-exported by :mod:`pullbench`.
"""
