import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Tests never write to the project's own MLflow database or data folders.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def kb():
    from pipeline import load_knowledge_base

    return load_knowledge_base()


@pytest.fixture(scope="session")
def big_sample(kb):
    """200k generated cases with their codes, for statistical tests."""
    from pipeline.generate import generate_codes

    return generate_codes(kb, 200_000, seed=12345)
