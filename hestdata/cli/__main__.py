"""``python -m hestdata.cli``."""

from hestdata.cli import main

main()
