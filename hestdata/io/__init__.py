"""Leaf I/O helpers: URL -> fsspec filesystem. Imports nothing from hestdata."""
