"""Scoring: ``predict()``, streaming batch files, the MLflow model and the Dask engine, one path."""

# rows per chunk: about five chunks are alive at once (read ahead, scored on two threads, written),
# so the chunk sets the peak memory. Measured on a 1M-row CSV with two scoring threads (with
# jemalloc, see pipeline.serve.reading.lean_memory_pool) on an AMD EPYC, peak RSS over five runs
# and median wall time of the last three (alternating): 16k rows 318-336 MiB (one run past the 350
# MB = 333.8 MiB target), 7.75 s; 12k 299-307 MiB, 7.91 s; 8k 269-273 MiB (three runs), 8.76 s. The peak
# also moves by about 30 MiB between machines and hours (the mapped share of shared libraries)
CHUNK_ROWS = 12_288
