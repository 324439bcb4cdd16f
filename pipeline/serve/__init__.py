"""Scoring: ``predict()``, streaming batch files, the MLflow model and the Dask engine, one path."""

# rows per chunk: about five chunks are alive at once (read ahead, scored on two threads, written),
# so the chunk sets the peak memory; measured on a 1M-row CSV with two scoring threads, 16k rows:
# 340 MB (with jemalloc, see pipeline.serve.reading.lean_memory_pool), 12k: as much, 0.5 s slower
CHUNK_ROWS = 16_384
