"""`kneepain score --adapt-priors`: score a batch under its own estimated case mix.

A first pass reads the files and keeps only the model's posteriors of the valid rows (72 bytes a
row); :func:`pipeline.decision.priors.estimate_prior` finds the batch's case mix; the second pass
is the ordinary streaming scorer with a model whose posteriors are re-weighted to that mix
(:class:`PriorShiftedModel`), so triage, differential sets and every output column follow.
This is right under prior shift only (the conditions come in other proportions but each presents
as in training); :func:`prior_report` says so beside the estimate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.casefiles import iter_chunks
from pipeline.core.errors import BatchInputError
from pipeline.core.parsing import ParsedCases
from pipeline.core.schema import CONDITION_LABELS, CONDITIONS
from pipeline.core.wording import counted
from pipeline.decision.priors import PriorEstimate, adjust_posteriors, estimate_prior
from pipeline.serve import CHUNK_ROWS
from pipeline.serve.batch import validate_chunk
from pipeline.serve.chunks import SeenIds
from pipeline.serve.loading import LoadedModel

__all__ = ["PriorShiftedModel", "batch_posteriors", "estimate_batch_prior", "format_prior", "prior_report",
           "scored_cases", "training_prior"]


@dataclass
class PriorShiftedModel(LoadedModel):
    """A model whose posteriors are re-weighted from ``training_prior`` to ``prior``."""

    training_prior: np.ndarray | None = None
    prior: np.ndarray | None = None

    def predict_proba(self, parsed) -> np.ndarray:
        proba = super().predict_proba(parsed)
        if self.prior is None or self.training_prior is None or len(proba) == 0:
            return proba
        return adjust_posteriors(proba, self.training_prior, self.prior)

    @classmethod
    def from_model(cls, model: LoadedModel, estimate: PriorEstimate) -> "PriorShiftedModel":
        return cls(model.estimator, model.manifest, model.source, model.kb, model.decision,
                   training_prior=estimate.training_prior, prior=estimate.prior)


def training_prior(model: LoadedModel) -> np.ndarray:
    """The case mix the model's posteriors are calibrated under: the manifest's ``class_prior``
    (the training data's weighted class shares), else its knowledge base's prior (what the
    synthetic training data was drawn from)."""
    recorded = model.manifest.get("class_prior")
    if isinstance(recorded, dict) and set(recorded) == set(CONDITIONS):
        return np.array([float(recorded[c]) for c in CONDITIONS])
    if model.kb is None:
        raise ValueError(f"the model at {model.source or 'this source'} records no class_prior and has no knowledge "
                         "base: its training case mix is unknown, so the batch's mix cannot be adapted to.")
    return np.asarray(model.kb.prior, dtype=np.float64)


def scored_cases(inputs: list[str | Path], *, chunk_rows: int = CHUNK_ROWS) -> Iterator[ParsedCases]:
    """The parsed cases of every valid row of ``inputs``, chunk by chunk: exactly the rows
    ``kneepain score`` scores (those it would reject are skipped, a case id seen in an earlier
    chunk or input among them), whatever the chunk size."""
    seen = SeenIds()  # one job's ids, across its inputs, as the scoring pass has them
    for path in inputs:
        offset = 0
        for chunk in iter_chunks(path, chunk_rows):
            parsed, valid, _ = validate_chunk(chunk.frame, file=str(path), row_offset=offset, seen_ids=seen,
                                              malformed=chunk.malformed)
            yield parsed[valid]
            offset += len(chunk.frame)


def batch_posteriors(inputs: list[str | Path], model: LoadedModel, *, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """The model's posteriors of the rows :func:`scored_cases` gives."""
    parts = [model.predict_proba(parsed) for parsed in scored_cases(inputs, chunk_rows=chunk_rows)]
    return np.concatenate(parts) if parts else np.empty((0, len(CONDITIONS)))


# Fewer valid rows than this are refused: a condition absent from a small batch by chance gets a
# share near zero, and its probability is scaled down in every row (10 rows: DVT's share 6e-24).
# A design choice, not a study's figure: at 500 rows a condition with a 2% share is absent by
# chance with probability 0.98**500 = 4e-5.
MIN_ADAPT_ROWS = 500
COLLAPSED = 0.1  # an estimated share below this fraction of the training share is warned about


def estimate_batch_prior(inputs: list[str | Path], model: LoadedModel, *, chunk_rows: int = CHUNK_ROWS
                         ) -> PriorEstimate:
    """The case mix of the valid rows of ``inputs`` (EM of Saerens et al. 2002, with 95% intervals);
    :class:`BatchInputError` for fewer than :data:`MIN_ADAPT_ROWS` valid rows."""
    proba = batch_posteriors(inputs, model, chunk_rows=chunk_rows)
    if len(proba) < MIN_ADAPT_ROWS:
        raise BatchInputError(f"{', '.join(map(str, inputs))}: {counted(len(proba), 'valid row')}; --adapt-priors needs at least "
                              f"{MIN_ADAPT_ROWS} to estimate a case mix (in a small batch a condition absent by "
                              "chance would get a share near zero, and its probability with it in every row).")
    return estimate_prior(proba, training_prior(model))


def collapsed_conditions(estimate: PriorEstimate) -> list[str]:
    """One warning per condition whose estimated share is below :data:`COLLAPSED` of its training
    share: its probability is scaled down as much in every row, so a case of it may be missed."""
    ratio = estimate.training_prior / np.maximum(estimate.prior, 1e-300)
    return [f"{CONDITION_LABELS[c]}: estimated share {estimate.prior[k]:.2g} against {estimate.training_prior[k]:.2g} "
            f"in training, so its probability is divided by about {ratio[k]:.2g} in every row; check with labelled "
            "cases before relying on it"
            for k, c in enumerate(CONDITIONS) if estimate.prior[k] < COLLAPSED * estimate.training_prior[k]]


def prior_report(estimate: PriorEstimate) -> dict[str, Any]:
    """JSON-ready: the training and estimated mix per condition with intervals, and how it was found."""
    return {
        "method": "EM of Saerens, Latinne & Decaestecker (2002), Neural Computation 14:21-41",
        "assumption": "prior shift: the conditions come in other proportions, each presents as in training",
        "interval": f"{estimate.level:.0%} delta-method interval from the observed information",
        "n_cases": estimate.n_cases, "iterations": estimate.n_iter, "converged": estimate.converged,
        "conditions": {c: {"training": float(estimate.training_prior[k]), "estimated": float(estimate.prior[k]),
                           "low": float(estimate.low[k]), "high": float(estimate.high[k])}
                       for k, c in enumerate(CONDITIONS)},
    }


def format_prior(estimate: PriorEstimate) -> str:
    """A table of the estimated case mix beside the training mix."""
    lines = [f"Estimated case mix of {estimate.n_cases:,} cases (EM, {estimate.level:.0%} intervals; training mix "
             "for comparison)", f"  {'condition':<28}{'training':>9}{'estimated':>11}  interval"]
    for k, c in enumerate(CONDITIONS):
        lines.append(f"  {CONDITION_LABELS[c]:<28}{estimate.training_prior[k]:>9.3f}{estimate.prior[k]:>11.3f}  "
                     f"{estimate.low[k]:.3f} to {estimate.high[k]:.3f}")
    if not estimate.converged:
        lines.append(f"  (EM stopped after {estimate.n_iter} iterations without converging)")
    return "\n".join(lines)
