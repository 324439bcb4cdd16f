"""The package works where users put it: a wheel installed outside the checkout, and an MLflow
model that loads where kneepain is not installed at all."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import SMALL_TRAIN_CONFIG

REPO = Path(__file__).resolve().parent.parent
# the checkout is installed in editable mode: this drops its import hook so a child process sees
# only what its PYTHONPATH (or nothing) provides
HIDE_CHECKOUT = textwrap.dedent("""
    import sys
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path[:] = [p for p in sys.path if p.rstrip("/") != {repo!r}]
""").format(repo=str(REPO))

pytestmark = pytest.mark.slow


def _run(code: str, *, cwd: Path, env: dict | None = None, timeout: float = 600) -> str:
    script = HIDE_CHECKOUT + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "KNEEPAIN_HOME": "", **(env or {})})
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed (without dependencies) into a fresh folder."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: building writes build/ and egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "configs", source / "configs")
    shutil.copytree(REPO / "pipeline", source / "pipeline", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(root / "dist"), str(source)], check=True, capture_output=True, timeout=600)
    wheel = next((root / "dist").glob("kneepain-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(root / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    return root / "site"


def test_a_wheel_installed_outside_the_checkout_generates_trains_and_predicts(installed, tmp_path):
    work = tmp_path / "elsewhere"  # no configs/, no dvc.yaml: the packaged defaults are used
    work.mkdir()
    (work / "train.yaml").write_text(SMALL_TRAIN_CONFIG)
    (work / "generate.yaml").write_text(json.dumps({"seed": 3, "splits": {
        "train": {"n": 2000}, "valid": {"n": 800}, "calib": {"n": 800}, "test": {"n": 500},
        "shift": {"n": 500, "population": "shift"}}}))
    out = _run(f"""
        import pipeline
        assert pipeline.__file__.startswith({str(installed)!r}), pipeline.__file__
        kb = pipeline.load_knowledge_base()
        assert len(pipeline.generate_cases(kb, 50, seed=1)) == 50
        from pipeline.cli import main
        assert main(["generate", "--config", "generate.yaml", "--out", "data"]) == 0
        assert main(["train", "--config", "train.yaml", "--data", "data", "--out", "models"]) == 0
        scores = pipeline.predict({{"age": 30, "sex": "male", "heard_pop": "yes"}}, model="models")
        print("PREDICTION", scores.loc[0, "prediction"], scores.loc[0, "triage"])
    """, cwd=work,
        env={"PYTHONPATH": str(installed), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"})
    assert "PREDICTION" in out
    assert (work / "models" / "manifest.json").exists() and (work / "data" / "train.parquet").exists()


def test_the_mlflow_model_loads_where_kneepain_is_not_installed(trained, small_data, tmp_path):
    models, uri = trained
    manifest = json.loads((models / "manifest.json").read_text())
    cases = small_data / "test.parquet"
    out = _run(f"""
        import importlib.util
        assert importlib.util.find_spec("pipeline") is None, "the checkout is still importable"
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({uri!r})
        model = mlflow.pyfunc.load_model({manifest["mlflow_model_uri"]!r})
        cases = pd.read_parquet({str(cases)!r}).head(20).drop(columns=["condition", "severity"])
        scored = model.predict(cases)
        import pipeline
        print("FROM", pipeline.__file__)
        scored.to_json({str(tmp_path / "served.json")!r}, orient="records")
    """, cwd=tmp_path)
    origin = out.split("FROM", 1)[1].strip()
    assert not origin.startswith(str(REPO)), origin  # the package came with the model
    import pandas as pd

    from pipeline import predict

    cases = pd.read_parquet(small_data / "test.parquet").head(20).drop(columns=["condition", "severity"])
    served = pd.read_json(tmp_path / "served.json", orient="records")
    expected = predict(cases, model=models)
    assert served["prediction"].tolist() == expected["prediction"].tolist()
    assert served["triage"].tolist() == expected["triage"].tolist()
