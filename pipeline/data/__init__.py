"""Synthetic data: the generator, the splits, generation on Dask, vignettes as prose."""
