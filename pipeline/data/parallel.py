"""Generating many cases on a Dask cluster, in partitions with independent seeds."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.core.cluster import gather, remove_temp_folder, temp_folder
from pipeline.core.files import numbered, sha256_file, tmp_path, write_json_atomic
from pipeline.core.schema import ID_COLUMN

if TYPE_CHECKING:
    from distributed import Client

    from pipeline.core.knowledge import KnowledgeBase

__all__ = ["POPULATIONS", "generate_dask"]

POPULATIONS = ("default", "shift")


def _generate_part(kb: "KnowledgeBase", n: int, seed: np.random.SeedSequence, index: int, tmp_dir: str,
                   last: int = 0) -> dict:
    """Task: draw one partition and write it as ``part-<index>.parquet`` (in as many digits as the
    highest index, ``last``, takes, at least five: the names sort in order); return its manifest entry."""
    from pipeline.data.generate import generate_cases

    frame = generate_cases(kb, n, seed=seed)
    frame.insert(0, ID_COLUMN, [f"p{index:05d}-{j:07d}" for j in range(n)])
    path = Path(tmp_dir) / f"part-{numbered(index, last)}.parquet"
    tmp = tmp_path(path)
    frame.to_parquet(tmp, index=False, compression="zstd")
    os.replace(tmp, path)
    return {"file": path.name, "n": n, "sha256": sha256_file(path)}


def generate_dask(kb: "KnowledgeBase", n: int, *, seed: int, partitions: int, out_dir: str | Path,
                  client: "Client", population: str = "default", retries: int = 2) -> dict:
    """Generate ``n`` labelled cases in ``partitions`` Parquet files, drawn in parallel on a cluster.

    Partition ``i`` holds ``generate_cases(kb, n_i, seed=SeedSequence(seed).spawn(partitions)[i])``
    (sizes differ by at most one) with ``case_id`` ``p<i>-<j>``. The same ``seed`` and
    ``partitions`` give byte-identical files whatever the number of workers; another partition
    count gives other cases.

    Parameters
    ----------
    kb : KnowledgeBase
        The knowledge base; ``population="shift"`` draws from ``kb.shifted()``.
    n : int
        Total cases, >= 0.
    seed : int
        Base seed; each partition gets an independent child seed.
    partitions : int
        Number of part files, 1 <= partitions <= max(n, 1).
    out_dir : path
        A new folder (it must not exist): ``part-00000.parquet``, ... and ``manifest.json``.
    client : distributed.Client
        The cluster to run on.
    population : {"default", "shift"}, default="default"
    retries : int, default=2
        Retries of a failed task.

    Returns
    -------
    dict
        The manifest, also written to ``out_dir/manifest.json``: ``n``, ``seed``, ``partitions``,
        ``population`` and ``files`` (``file``, ``n``, ``sha256`` per part, in order).

    Raises
    ------
    FileExistsError
        If ``out_dir`` exists.
    DaskJobError
        If a partition failed after its retries; nothing is left behind.
    """
    for name, value, low in (("n", n, 0), ("seed", seed, 0), ("partitions", partitions, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} == {value!r}, must be an integer >= {low}.")
    if partitions > max(n, 1):
        raise ValueError(f"partitions == {partitions}, must be <= n == {n} (no empty partitions).")
    if population not in POPULATIONS:
        raise ValueError(f"population == {population!r}, must be one of {POPULATIONS}.")
    base = kb.shifted() if population == "shift" else kb
    sizes = [n // partitions + (i < n % partitions) for i in range(partitions)]
    seeds = np.random.SeedSequence(int(seed)).spawn(partitions)
    target = Path(out_dir)
    if target.exists():
        raise FileExistsError(f"{target}: already exists; generate into a new folder (remove it or choose another).")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_folder(target).absolute()  # workers may not share the driver's working directory
    run = uuid.uuid4().hex[:8]
    try:
        futures = {client.submit(_generate_part, base, int(size), child, i, str(tmp), partitions - 1, retries=retries,
                                 key=f"kneepain-generate-{run}-{i:05d}"): f"partition {i}"
                   for i, (size, child) in enumerate(zip(sizes, seeds))}
        files = sorted(gather(client, futures), key=lambda entry: entry["file"])
        manifest = {"n": int(n), "seed": int(seed), "partitions": int(partitions), "population": population,
                    "files": files}
        write_json_atomic(tmp / "manifest.json", manifest)
        keep = {entry["file"] for entry in files} | {"manifest.json"}
        for entry in tmp.iterdir():
            if entry.name not in keep:
                entry.unlink()
        os.rename(tmp, target)
    except BaseException:
        remove_temp_folder(tmp)
        raise
    return manifest
