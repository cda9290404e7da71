"""Fixture images: the catalog, synthetic and directory/pip/debootstrap sources, OCI image
layouts, import of ``docker save`` archives and OCI layouts, push and mirror.

Public names are re-exported by :mod:`pullbench`.
"""
