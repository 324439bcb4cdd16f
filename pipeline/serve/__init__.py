"""Scoring: ``predict()``, streaming batch files, the MLflow model and the Dask engine, one path."""

# rows per chunk: about five chunks are alive at once (read ahead, scored on two threads, written),
# so the chunk sets the peak memory; measured on a 1M-row CSV with two scoring threads, 16k rows:
# 290-340 MiB (with jemalloc, see pipeline.serve.reading.lean_memory_pool; the spread is the
# machine's mapped libraries), 12k: 25 MiB less, 0.2-0.5 s slower; 8k: 50 MiB less, 1 s slower
CHUNK_ROWS = 16_384
