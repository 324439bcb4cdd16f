"""Scoring: ``predict()``, streaming batch files, the MLflow model and the Dask engine, one path."""

# rows per chunk: about five chunks are alive at once (read ahead, parsed, scored, written), so the
# chunk sets the peak memory; measured on a 1M-row CSV, 16k rows: 335 MB (with jemalloc, see
# pipeline.serve.reading.lean_memory_pool), 50k: 520 MB, for the same time
CHUNK_ROWS = 16_384
