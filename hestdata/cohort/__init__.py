"""Cohort descriptors and registration (validate, convert on Dask, publish)."""

DEFAULT_TIMEOUT_S = 6 * 3600.0  # one sample's conversion; a hung reader never blocks a registration for ever
