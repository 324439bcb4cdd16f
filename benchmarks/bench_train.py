"""Training: the real ``kneepain train`` command, and each candidate's CV fit time and predict speed.

The command runs in a subprocess on the default 100k-case data (``data/synthetic``, generated into
a temporary folder first if absent) with ``MLFLOW_TRACKING_URI`` pointing at a temporary SQLite
store, so the project's own MLflow store and ``models/`` are not touched. Its wall time includes
interpreter start-up, imports, reading the data, cross-validation, the refit, calibration and
MLflow logging. Target: under 180 s. Its peak RSS is that of the largest single process (the
main one): the ``cv.n_jobs`` cross-validation workers run alongside it with their own copy of the
data, so the whole process tree holds more than this at its peak.

The per-candidate rows are read from the ``candidates`` list of the manifest the command writes:
the mean fit time of one CV fold, and ``predict_proba`` rows/s on the first 10,000 ``valid`` rows
(both as measured by :func:`pipeline.model.train.evaluate_candidates`; no target).

``--quick`` trains on a small generated set (10k train, 3k valid) instead.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from .harness import BenchmarkError, Target, log, make_row, run_command

__all__ = ["run"]

TARGET = Target(size=100_000, max_seconds=180.0)
QUICK_SPLITS = {"train": 10_000, "valid": 3_000, "calib": 3_000}
QUICK_SEED = 20261125
# pipeline.model.train times predict_proba on valid.head(10_000)
SPEED_ROWS = 10_000


def _kneepain() -> str:
    exe = Path(sys.executable).with_name("kneepain")
    if not exe.exists():
        raise BenchmarkError(f"{exe} does not exist: install the project into this environment "
                             "(`make bench` does it, or `pip install -e .`).")
    return str(exe)


def _n_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _data_dir(tmp: Path, quick: bool) -> Path:
    """The data to train on: the project's default splits, or splits generated into ``tmp`` (untimed)."""
    from pipeline.core.paths import data_dir

    if not quick and all((data_dir() / f"{s}.parquet").exists() for s in ("train", "valid")):
        return data_dir()
    out = tmp / "data"
    cmd = [_kneepain(), "generate", "--out", str(out)]
    if quick:
        config = tmp / "generate-quick.yaml"
        lines = [f"seed: {QUICK_SEED}", "splits:"] + [f"  {k}: {{n: {v}}}" for k, v in QUICK_SPLITS.items()]
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cmd += ["--config", str(config)]
    log(f"train: generating data into {out} (not timed) ...")
    run_command(cmd, cwd=tmp)
    return out


def _candidate_rows(candidates: list[dict], n_train: int, n_valid: int) -> list[dict]:
    """Two rows per candidate: mean CV fold fit, and predict_proba throughput."""
    from pipeline.core.config import TrainConfig, load_config
    from pipeline.core.paths import config_path

    cv = load_config(TrainConfig, config_path("train.yaml")).cv  # the command's default config
    n_cv = n_train if cv.max_rows == 0 or n_train <= cv.max_rows else cv.max_rows
    fold_rows = n_cv - n_cv // cv.folds  # the training part of one fold (±1 per class)
    speed_rows = min(SPEED_ROWS, n_valid)
    rows = []
    for c in candidates:
        rows.append(make_row(f"train: {c['name']} CV fold fit", fold_rows, c["fit_seconds"], peak_rss_mib=None,
                             cv_log_loss=c["cv_log_loss"], folds=cv.folds, cv_rows=n_cv))
        rows.append(make_row(f"train: {c['name']} predict_proba", speed_rows, speed_rows / c["rows_per_second"],
                             peak_rss_mib=None, rows_per_second=c["rows_per_second"],
                             cv_log_loss=c["cv_log_loss"]))
    return rows


def run(quick: bool) -> list[dict]:
    """The ``kneepain train`` row, then two rows per candidate from its manifest."""
    with tempfile.TemporaryDirectory(prefix="kneepain-bench-train-") as name:
        tmp = Path(name)
        data = _data_dir(tmp, quick)
        n_train, n_valid = _n_rows(data / "train.parquet"), _n_rows(data / "valid.parquet")
        models = tmp / "models"
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
        log(f"train: kneepain train on {n_train:,} cases ({data}) ...")
        child = run_command([_kneepain(), "train", "--data", str(data), "--out", str(models)], env=env, cwd=tmp)
        manifest = json.loads((models / "manifest.json").read_text(encoding="utf-8"))
    command = make_row("train: kneepain train (command)", n_train, child.wall_seconds,
                       peak_rss_mib=child.peak_rss_mib, target=TARGET, data=str(data), n_valid=n_valid,
                       winner=manifest["winner"], metrics=manifest["metrics"])
    return [command, *_candidate_rows(manifest["candidates"], n_train, n_valid)]
