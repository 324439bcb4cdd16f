import contextlib
import io
import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Tests never write to the project's own MLflow database or data folders.
os.environ.setdefault("MPLBACKEND", "Agg")
# The servers tests start on 127.0.0.1 are reached directly, whatever proxy the machine names
# (urllib, requests and MLflow's client all read these)
for _name in ("no_proxy", "NO_PROXY"):
    os.environ[_name] = ",".join(filter(None, [os.environ.get(_name, ""), "127.0.0.1", "localhost"]))


@pytest.fixture(scope="session", autouse=True)
def _one_blas_thread():
    """Tests fit many small models, whose two busy-waiting OpenBLAS threads made them 10-50x slower
    whenever the other core was busy (20.9 s against 0.4 s for one logistic fit in a full run).
    A test about thread counts sets its own (``threadpool_limits(limits=2)`` inside this); the
    command-line and server processes the tests start keep the default."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="session")
def kb():
    from pipeline import load_knowledge_base

    return load_knowledge_base()


@pytest.fixture(scope="session")
def big_sample(kb):
    """200k generated cases with their codes, for statistical tests."""
    from pipeline.data.generate import generate_codes

    return generate_codes(kb, 200_000, seed=12345)


SMALL_TRAIN_CONFIG = """
seed: 0
cv: {folds: 3, max_rows: 0, n_jobs: 1}
candidates: [logistic, hist_gradient_boosting, mlp]
models:
  logistic: {C: 1.0, max_iter: 300, tol: 0.0001}
  hist_gradient_boosting: {max_iter: 15, learning_rate: 0.2, max_leaf_nodes: 15, l2_regularization: 0.0, early_stopping: false}
  mlp: {hidden_layer_sizes: [16], alpha: 0.001, learning_rate_init: 0.003, max_iter: 40, early_stopping: false}
selection: {log_loss_tolerance: 0.003}
calibration: {method: temperature, min_improvement: 0.0}
tracking: {experiment: kneepain-test, registered_model: kneepain-classifier, alias: champion}
"""


@pytest.fixture(scope="session")
def small_data(kb, tmp_path_factory):
    """A small generated data folder (train 4000, valid/calib 1500, test 3000, shift 1500)."""
    from pipeline.core.config import GenerateConfig
    from pipeline.data.generate import write_splits

    folder = tmp_path_factory.mktemp("data")
    write_splits(kb, GenerateConfig.model_validate({"seed": 11, "splits": {
        "train": {"n": 4000}, "valid": {"n": 1500}, "calib": {"n": 1500}, "test": {"n": 3000},
        "shift": {"n": 1500, "population": "shift"}}}), folder)
    return folder


@pytest.fixture(scope="session")
def small_config_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("configs") / "train.yaml"
    path.write_text(SMALL_TRAIN_CONFIG)
    return path


@pytest.fixture(scope="session")
def trained(small_data, small_config_path, tmp_path_factory):
    """`kneepain train` run once on the small data plus 400 labelled "real" cases (100 held out),
    tracked in a temporary SQLite MLflow store.

    Returns (models_dir, tracking_uri)."""
    from pipeline import generate_cases, load_knowledge_base
    from pipeline.cli import main

    root = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    # real labelled cases beside the synthetic ones, as `kneepain train --extra-data` takes them
    # as clinics export them: a label column spelt otherwise, a column that is no case field, and
    # three rows to reject (listed in the training log, train.log here, and the run's extra_rejects.csv)
    extra = generate_cases(load_knowledge_base().shifted(), 400, seed=77).drop(columns=["severity"])
    bad = extra.head(3).astype({"sex": str, "condition": str})
    bad["sex"] = ["F", bad["sex"].iloc[1], bad["sex"].iloc[2]]
    bad["condition"] = [bad["condition"].iloc[0], "=HYPERLINK(\"http://x\")", "dvt?"]
    rows = pd.concat([extra.iloc[:100], bad, extra.iloc[100:]], ignore_index=True)
    rows.assign(clinic="north").rename(columns={"condition": "Condition"}).to_csv(root / "extra.csv", index=False)
    log = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(log):
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        code = main(["train", "--config", str(small_config_path), "--data", str(small_data),
                     "--out", str(root / "models"), "--extra-data", str(root / "extra.csv"), "--extra-weight", "2",
                     "--extra-holdout", "0.25", "--record", str(root / "training.json")])
    (root / "train.log").write_text(log.getvalue())
    assert code == 1, log.getvalue()  # the three rejected rows are said by the exit code, as `evaluate` says them
    return root / "models", uri
