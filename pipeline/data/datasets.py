"""The generated splits on disk: reading them and summarising them against the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import KnowledgeBaseError
from pipeline.core.files import load_json
from pipeline.core.knowledge import KnowledgeBase
from pipeline.core.metrics import summary
from pipeline.core.oracle import oracle_posterior
from pipeline.core.parsing import parse_cases
from pipeline.core.schema import CONDITIONS, LABEL_COLUMN

__all__ = ["check_generated_from", "class_shares", "format_data_summary", "kb_for_split", "labels", "oracle_summary",
           "read_split", "split_table"]


def check_generated_from(kb: KnowledgeBase, data_dir: str | Path, use: str) -> None:
    """Refuse splits in ``data_dir`` that its ``manifest.json`` says were drawn from another
    knowledge base than ``kb`` (by :meth:`KnowledgeBase.digest`); ``use``: what would go wrong,
    for the message. A folder without the record (made by hand, or by an older version) passes.

    Raises
    ------
    KnowledgeBaseError
        Naming the manifest, both digests and how to generate the splits again.
    """
    path = Path(data_dir) / "manifest.json"
    try:
        recorded = load_json(path.read_bytes()).get("knowledge_base_digest")
    except (OSError, ValueError, AttributeError):  # no readable record: nothing to compare
        return
    if isinstance(recorded, str) and recorded != (digest := kb.digest()):
        raise KnowledgeBaseError(f"{path}: the splits were drawn from another knowledge base (digest {recorded[:12]}) "
                                 f"than the one given (--kb, default configs/knowledge_base.yaml; digest {digest[:12]}), "
                                 f"so {use}. Generate them again (`kneepain generate`, or `dvc repro`), or give --kb "
                                 "the knowledge base they were drawn from.")


def read_split(name: str, data_dir: str | Path) -> pd.DataFrame:
    path = Path(data_dir) / f"{name}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `kneepain generate` (or `make run`) first.")
    return pd.read_parquet(path)


def labels(frame: pd.DataFrame) -> np.ndarray:
    """Condition labels as indices into :data:`CONDITIONS`."""
    return pd.Categorical(frame[LABEL_COLUMN], categories=list(CONDITIONS)).codes.astype(np.int64)


def class_shares(y: np.ndarray, weight: np.ndarray | None = None) -> dict[str, float]:
    """The (weighted) share of each condition among labels ``y`` (indices into :data:`CONDITIONS`)."""
    counts = np.bincount(y, weights=weight, minlength=len(CONDITIONS))
    return {c: float(v) for c, v in zip(CONDITIONS, counts / counts.sum())}


def kb_for_split(kb: KnowledgeBase, split: str) -> KnowledgeBase:
    """The generating model of a split: the shifted base for ``shift``."""
    return kb.shifted() if split == "shift" else kb


def oracle_summary(kb: KnowledgeBase, frame: pd.DataFrame) -> dict[str, float]:
    """Oracle top-1, top-3 accuracy and log loss on labelled cases."""
    proba = oracle_posterior(kb, parse_cases(frame)).to_numpy()
    return summary(proba, labels(frame))


def split_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Class counts per split (rows: conditions, columns: splits)."""
    return pd.DataFrame({name: pd.Series(labels(f)).value_counts().reindex(range(len(CONDITIONS)), fill_value=0)
                         .set_axis(CONDITIONS).to_numpy() for name, f in frames.items()}, index=list(CONDITIONS))


def format_data_summary(summary: dict) -> str:
    """The class-count and oracle tables that `kneepain generate` prints."""
    counts = pd.DataFrame(summary["class_counts"])
    oracle = pd.DataFrame(summary["oracle"]).T.round(4)
    return ("Class counts per split\n" + counts.to_string()
            + "\n\nOracle (exact Bayes posterior of the generator): the best any model can do\n"
            + oracle.to_string())
