"""Adapters for the peer job queues, driven only through their public, documented APIs.

Imported lazily by ``systems.make_system`` so that the benchmarks run (and skip peers with
a note) when the ``bench`` extra is not installed.
"""
