"""Figures of converted samples and benchmark results (matplotlib, ``ml`` extra): scale bars in µm, titles with
id, technology and pixel size, legends and colour bars, written atomically."""

from hestdata.plot.sample import plot_sample

__all__ = ["plot_sample"]
