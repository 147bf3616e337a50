"""Cohort descriptors and registration (validate, convert on Dask, publish)."""
