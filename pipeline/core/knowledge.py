"""Load and validate the knowledge base (configs/knowledge_base.yaml) into arrays.

The YAML (its rules: :mod:`pipeline.core.kb_model`) is the generative model of a case: a
condition drawn from its share, a latent severity, context (risk factors) and onset drawn given
the condition, symptoms drawn given condition and severity, then reporting noise and missing
answers (missing at random: a field's chance of being unknown may depend on another field's
reported answer, never on the condition).

Every mapping that holds a number also holds ``source``: ``ref: <study, year, the figure used>``,
``seed: "<quote>"`` (found word for word in the seed article when the file is loaded; a quote
supports a direction, never a size) or ``assumption: <reason>``. A ``seed`` or ``assumption``
number also holds ``range``: its plausible interval (``[low, high]``, or one per number of the
mapping), which must contain it; ``kneepain sensitivity`` draws the numbers within their ranges.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from pipeline.core.config import error_lines
from pipeline.core.errors import KnowledgeBaseError
from pipeline.core.files import load_yaml
from pipeline.core.kb_model import BINARY_RISK_FACTORS, KnowledgeBaseModel
from pipeline.core.paths import config_path
from pipeline.core.schema import CONDITIONS, ONSET_TRISTATES, SEVERITIES, SYMPTOMS, field, max_duration_days
from pipeline.core.special import expit, logit, ndtr, norm_logpdf

__all__ = ["KnowledgeBase", "KnowledgeBaseError", "duration_log_pdf", "duration_mass_below", "duration_masses_below",
           "knowledge_base_from_dict", "load_knowledge_base", "read_knowledge_base_yaml"]


AGES = np.arange(int(field("age").minimum or 0), int(field("age").maximum or 0) + 1)


def _odds_shift(p: float, odds_ratio: float) -> float:
    return float(expit(logit(p) + np.log(odds_ratio)))


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (it holds arrays)
class KnowledgeBase:
    """The validated knowledge base as arrays, indexed by condition in :data:`CONDITIONS` order.

    Attributes hold probabilities; ``tristate[f]`` has shape (n_conditions, n_severities) and is
    P(answer is yes | condition, severity) after reporting noise (before missingness).
    """

    model: KnowledgeBaseModel
    prior: np.ndarray  # (9,)
    severity: np.ndarray  # (9, 3)
    tristate: dict[str, np.ndarray]  # field -> (9, 3), pregnant excluded; hormonal_therapy: a woman's
    hormonal_men: np.ndarray  # (9,) P(hormonal therapy | condition, male)
    pregnant: np.ndarray  # (9,) P(pregnant | condition, female of fertile age)
    pregnant_other: float  # P(pregnant reported yes | female outside fertile age), same for all
    fertile_age: tuple[int, int]
    female: np.ndarray  # (9,)
    category: dict[str, np.ndarray]  # field -> (9, K)
    age_pmf: np.ndarray  # (9, len(AGES))
    bmi: np.ndarray  # (9, 2) mean, sd
    duration: np.ndarray  # (9, 2) log-median, log-sd of the usual course
    # (9, 3) share, log-median, log-sd of a recent episode (share 0 where the condition has none;
    # its log-median and log-sd are then the usual course's)
    duration_episode: np.ndarray
    missingness: dict[str, float]
    # field -> (the category field it depends on, P(unknown) per that field's reported code; the
    # last entry, for an unknown answer, is the base rate)
    missingness_given: dict[str, tuple[str, np.ndarray]]
    name: str = "default"

    @property
    def conditions(self) -> tuple[str, ...]:
        return CONDITIONS

    def p_yes(self, name: str) -> np.ndarray:
        """(n_conditions,) P(answer is yes | condition) of a yes/no field other than pregnant (for
        hormonal_therapy, a woman's; :attr:`hormonal_men` holds a man's): a
        symptom's summed over the latent severity with P(severity | condition)."""
        t = self.tristate[name]
        return (self.severity * t).sum(axis=1) if name in SYMPTOMS else t[:, 0]

    def digest(self) -> str:
        """The SHA-256 of what cases are drawn from: the validated knowledge base without its sources,
        ranges and descriptions (two files that differ only in provenance, prose, comments or layout
        give one digest)."""
        def numbers(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: numbers(v) for k, v in node.items() if k not in ("source", "range", "description")}
            return [numbers(v) for v in node] if isinstance(node, list) else node

        text = json.dumps(numbers(self.model.model_dump(mode="json")), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def shifted(self) -> "KnowledgeBase":
        """The documented population shift (the ``shift`` section) applied to this base."""
        s = self.model.shift
        prior = self.prior * s.prior_multiplier.values(CONDITIONS, where="shift.prior_multiplier")
        act = self.category["activity"] * s.activity_multiplier.values(
            field("activity").allowed, where="shift.activity_multiplier")
        mult = s.missingness_multiplier.value
        return replace(
            self,
            prior=prior / prior.sum(),
            category={**self.category, "activity": act / act.sum(axis=1, keepdims=True)},
            age_pmf=_age_pmf([(c.age.mean + s.age_offset_years.value, c.age.sd)
                              for c in self.model.conditions.values()]),
            missingness={k: min(0.95, v * mult) for k, v in self.missingness.items()},
            missingness_given={k: (f, np.minimum(0.95, p * mult)) for k, (f, p) in self.missingness_given.items()},
            name="shift",
        )


def _age_pmf(params: list[tuple[float, float]]) -> np.ndarray:
    edges = np.append(AGES - 0.5, AGES[-1] + 0.5)
    out = np.empty((len(params), len(AGES)))
    for i, (mean, sd) in enumerate(params):
        # a floor keeps every age possible (log-likelihoods finite) without moving real mass
        mass = np.maximum(np.diff(ndtr((edges - mean) / sd)), 1e-9)
        out[i] = mass / mass.sum()
    return out


_MIN_DURATION_MASS = 1e-12


def duration_masses_below(duration: np.ndarray, episode: np.ndarray, days: Any) -> tuple[np.ndarray, np.ndarray]:
    """The mass of the usual course and of the recent episode at or below ``days``, each weighted
    by its share (rows of ``duration``: log-median, log-sd; of ``episode``: share, log-median,
    log-sd; one per condition, or one per case), broadcast against ``days``."""
    log_days = np.log(days)
    share = episode[:, 0]
    return ((1 - share) * ndtr((log_days - duration[:, 0]) / duration[:, 1]),
            share * ndtr((log_days - episode[:, 1]) / episode[:, 2]))


def duration_mass_below(duration: np.ndarray, episode: np.ndarray, days: Any) -> np.ndarray:
    """P(symptom duration <= ``days``) under the usual course and the recent episode together (see
    :func:`duration_masses_below`): the mass the truncation at the patient's age keeps."""
    usual, recent = duration_masses_below(duration, episode, days)
    return usual + recent


def duration_log_pdf(duration: np.ndarray, episode: np.ndarray, days: np.ndarray) -> np.ndarray:
    """(n, n_conditions) log density of the symptom durations ``days`` (n,), positive and finite,
    under each condition's usual course and recent episode (see :func:`duration_mass_below`),
    before the truncation at the patient's age."""
    log_days = np.log(days)
    out = norm_logpdf(log_days, duration)
    mixed = np.flatnonzero(episode[:, 0] > 0)  # only these columns need the second log-normal
    if mixed.size:
        share = episode[mixed, 0]
        out[:, mixed] = np.logaddexp(out[:, mixed] + np.log1p(-share),
                                     norm_logpdf(log_days, episode[mixed, 1:]) + np.log(share))
    return out - log_days[:, None]


def _build(m: KnowledgeBaseModel) -> KnowledgeBase:
    conds = [m.conditions[c] for c in CONDITIONS]
    prior = np.array([c.prior.value for c in conds])
    if np.any(prior <= 0) or abs(prior.sum() - 1) > 1e-6:
        raise KnowledgeBaseError(f"conditions.*.prior: shares must be positive and sum to 1, sum is {prior.sum():.6g}")
    severity = np.stack([c.severity.values(SEVERITIES, where=f"conditions.{n}.severity", total=1.0)
                         for n, c in zip(CONDITIONS, conds)])
    shift = m.severity_logit_shift.values(SEVERITIES, where="severity_logit_shift")
    leak, miss = m.reporting.leak.p, m.reporting.miss.p
    tristate: dict[str, np.ndarray] = {}
    for s in SYMPTOMS:
        base = np.array([c.symptoms[s].p for c in conds])
        true_p = expit(logit(base)[:, None] + shift[None, :])
        tristate[s] = leak + (1 - leak - miss) * true_p
    for name in ONSET_TRISTATES:
        p = np.array([getattr(c, name).p for c in conds])
        tristate[name] = np.repeat(p[:, None], len(SEVERITIES), axis=1)

    def with_odds(base: float, rf: str) -> np.ndarray:  # each condition's rate of a risk factor
        return np.array([_odds_shift(base, c.risk_factors[rf].odds_ratio) if rf in c.risk_factors else base
                         for c in conds])

    for rf in BINARY_RISK_FACTORS:
        p = with_odds(getattr(m.population, rf).p, rf)
        if rf == "pregnant":
            pregnant = p
        else:
            tristate[rf] = np.repeat(p[:, None], len(SEVERITIES), axis=1)
    hormonal_men = with_odds((m.population.hormonal_therapy_men or m.population.hormonal_therapy).p, "hormonal_therapy")
    female = np.array([_odds_shift(m.population.female.p, c.female.odds_ratio) for c in conds])
    act_names = field("activity").allowed
    pop_act = m.population.activity.values(act_names, where="population.activity", total=1.0)
    category = {}
    act = np.stack([pop_act * c.activity.values(act_names, where=f"conditions.{n}.activity")
                    for n, c in zip(CONDITIONS, conds)])
    category["activity"] = act / act.sum(axis=1, keepdims=True)
    for name in ("onset", "injury_event"):
        category[name] = np.stack([getattr(c, name).values(field(name).allowed, where=f"conditions.{n}.{name}",
                                                           total=1.0) for n, c in zip(CONDITIONS, conds)])
    fertile = (int(field("age").minimum or 0), int(m.population.fertile_age.value or 0))
    duration = np.array([[np.log(c.symptom_duration_days.median_days), c.symptom_duration_days.log_sd] for c in conds])
    episodes = [c.symptom_duration_days.episode for c in conds]
    episode = np.array([[e.share, np.log(e.median_days), e.log_sd] if e is not None else [0.0, *d]
                        for e, d in zip(episodes, duration)])
    # durations are truncated at the patient's age: the youngest must keep some of the mass, or the
    # generator's inverse CDF and the oracle's normaliser (1 / that mass) are not finite
    youngest = max_duration_days(AGES[0])
    kept = duration_mass_below(duration, episode, youngest)
    for name, mass in zip(CONDITIONS, kept):
        if mass < _MIN_DURATION_MASS:
            raise KnowledgeBaseError(
                f"conditions.{name}.symptom_duration_days: puts {mass:.2g} of its mass below {youngest:g} days, the "
                f"longest a patient aged {AGES[0]} can report (at least {_MIN_DURATION_MASS:g} is needed); lower "
                "median_days or raise log_sd")
    return KnowledgeBase(
        model=m, prior=prior, severity=severity, tristate=tristate, hormonal_men=hormonal_men, pregnant=pregnant,
        pregnant_other=m.population.pregnant_outside_fertile_age.p, fertile_age=fertile, female=female,
        category=category, age_pmf=_age_pmf([(c.age.mean, c.age.sd) for c in conds]),
        bmi=np.array([[c.bmi.mean, c.bmi.sd] for c in conds]),
        duration=duration, duration_episode=episode,
        missingness={k: v.p for k, v in m.missingness.items()},
        missingness_given={k: (v.given.field, np.array([v.given.p.get(a, v.p) for a in field(v.given.field).allowed]
                                                       + [v.p]))
                           for k, v in m.missingness.items() if v.given is not None},
    )


def knowledge_base_from_dict(raw: Any, *, where: str = "knowledge base") -> KnowledgeBase:
    """Validate and compile a knowledge base already read from YAML (``where`` names it in errors)."""
    try:
        model = KnowledgeBaseModel.model_validate(raw)
    except ValidationError as err:
        lines = error_lines(err, KnowledgeBaseModel)
        raise KnowledgeBaseError(f"{where}: invalid knowledge base:\n  " + "\n  ".join(lines)) from err
    try:
        return _build(model)
    except KnowledgeBaseError as err:
        raise KnowledgeBaseError(f"{where}: {err}") from err


def read_knowledge_base_yaml(path: str | Path | None = None) -> Any:
    """The knowledge base file as plain YAML data (default: the project's, else the packaged one)."""
    path = Path(path) if path is not None else config_path("knowledge_base.yaml")
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise KnowledgeBaseError(f"{path}: cannot read the knowledge base: {err}") from err


def load_knowledge_base(path: str | Path | None = None) -> KnowledgeBase:
    """Load, validate and compile the knowledge base.

    Raises
    ------
    KnowledgeBaseError
        If the file breaks the rules; the message names the file and the key path.
    """
    path = Path(path) if path is not None else config_path("knowledge_base.yaml")
    return knowledge_base_from_dict(read_knowledge_base_yaml(path), where=str(path))
