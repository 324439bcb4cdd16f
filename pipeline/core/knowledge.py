"""Load and validate the knowledge base (configs/knowledge_base.yaml) into arrays.

The YAML is the generative model of a case: a condition drawn from its share, a latent severity,
context (risk factors) and onset drawn given the condition, symptoms drawn given condition and
severity, then reporting noise and missing answers (missing at random: a field's chance of being
unknown may depend on another field's reported answer, never on the condition).

Every mapping that holds a number also holds ``source``: ``ref: <study, year, the figure used>``,
``seed: "<quote>"`` (checked verbatim against the seed article; a quote supports a direction,
never a size) or ``assumption: <reason>``. A ``seed`` or ``assumption`` number also holds
``range``: its plausible interval (``[low, high]``, or one per number of the mapping), which must
contain it; ``kneepain sensitivity`` draws the numbers within their ranges.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from pydantic import Field as PydField
from scipy.special import expit, logit, ndtr

from pipeline.core.config import StrictModel
from pipeline.core.errors import KnowledgeBaseError
from pipeline.core.paths import config_path
from pipeline.core.schema import CONDITIONS, CONTEXT_TRISTATES, FIELDS, ONSET_TRISTATES, SEVERITIES, SYMPTOMS, field

__all__ = ["KnowledgeBase", "KnowledgeBaseError", "knowledge_base_from_dict", "load_knowledge_base",
           "read_knowledge_base_yaml"]


BINARY_RISK_FACTORS = CONTEXT_TRISTATES  # risk factors: odds ratios against the population rate
OPTIONAL_FIELDS = tuple(f.name for f in FIELDS if not f.required)
AGES = np.arange(int(field("age").minimum or 0), int(field("age").maximum or 0) + 1)


_PROVENANCE = re.compile(r"^(seed: \"[^\"]{8,}\".*|ref: .*\b(19|20)\d\d\b.*|assumption: .{10,})$", re.S)


def _normalise(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", text).strip().lower()


def _check_source(value: str) -> str:
    value = value.strip()
    if not _PROVENANCE.match(value):
        raise ValueError('source must be \'seed: "<quote>"\', \'ref: <author (year) title>\' or '
                         f"'assumption: <reason>', got {value!r}")
    return value


def _exact_keys(given, expected: tuple[str, ...], what: str) -> None:
    """Raise ValueError naming keys not in ``expected`` and keys of ``expected`` that are missing."""
    unknown = sorted(set(given) - set(expected))
    missing = [k for k in expected if k not in given]
    if unknown or missing:
        raise ValueError(f"{what}; unknown {unknown}, missing {missing}")


Range = tuple[float, float]


def _check_ranges(numbers: dict[str, float], source: str, ranges: Range | dict[str, Range] | None) -> None:
    """A ``seed`` or ``assumption`` number needs a plausible range that contains it."""
    if not numbers:
        return
    if ranges is None:
        if source.startswith(("assumption:", "seed:")):
            kind = source.split(":", 1)[0]
            raise ValueError(f"a number whose source is {kind!r} needs `range: [low, high]` (one per number of "
                             f"the mapping: {', '.join(numbers)})")
        return
    if not isinstance(ranges, dict):
        if len(numbers) != 1:
            raise ValueError(f"range: this mapping holds {len(numbers)} numbers ({', '.join(numbers)}); give "
                             "`range: {name: [low, high], ...}` for each")
        ranges = {next(iter(numbers)): ranges}
    _exact_keys(ranges, tuple(numbers), "range must name each number of the mapping")
    for key, (low, high) in ranges.items():
        if not low <= numbers[key] <= high:
            raise ValueError(f"range of {key}: [{low:g}, {high:g}] does not contain the value {numbers[key]:g}")


class Sourced(StrictModel):
    source: str
    range: Range | dict[str, Range] | None = None

    _src = field_validator("source")(_check_source)

    def numbers(self) -> dict[str, float]:
        """The mapping's numbers by key (what ``range`` and sensitivity draws refer to)."""
        return {k: float(v) for k, v in self.model_dump(exclude={"source", "range"}).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}

    @model_validator(mode="after")
    def _ranged(self) -> "Sourced":
        _check_ranges(self.numbers(), self.source, self.range)
        return self


class Value(Sourced):
    value: float


class Prob(Sourced):
    p: float = PydField(gt=0, lt=1)


class OddsRatio(Sourced):
    odds_ratio: float = PydField(gt=0)


class Normal(Sourced):
    mean: float
    sd: float = PydField(gt=0)


class LogNormal(Sourced):
    median_days: float = PydField(gt=0)
    log_sd: float = PydField(gt=0)


class Distribution(BaseModel):
    """Named non-negative numbers plus ``source`` (and ``range``); the allowed names depend on the field."""

    model_config = ConfigDict(extra="allow", frozen=True)
    source: str
    range: dict[str, Range] | None = None
    _src = field_validator("source")(_check_source)

    def numbers(self) -> dict[str, float]:
        return {k: float(v) for k, v in (self.model_extra or {}).items()}

    @model_validator(mode="after")
    def _numbers(self) -> "Distribution":
        for key, v in (self.model_extra or {}).items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{key}: must be a non-negative number, got {v!r}")
        _check_ranges(self.numbers(), self.source, self.range)
        return self

    def values(self, names: tuple[str, ...], *, where: str, total: float | None = None) -> np.ndarray:
        extra = dict(self.model_extra or {})
        try:
            _exact_keys(extra, names, f"{where}: keys must be exactly {', '.join(names)}")
        except ValueError as err:
            raise KnowledgeBaseError(str(err)) from None
        out = np.array([float(extra[n]) for n in names])
        if total is not None and abs(out.sum() - total) > 1e-6:
            raise KnowledgeBaseError(f"{where}: values must sum to {total}, they sum to {out.sum():.6g}")
        return out


class SignedValues(Distribution):
    """Like :class:`Distribution`, but the numbers may be negative."""

    @model_validator(mode="after")
    def _numbers(self) -> "SignedValues":
        for key, v in (self.model_extra or {}).items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ValueError(f"{key}: must be a number, got {v!r}")
        _check_ranges(self.numbers(), self.source, self.range)
        return self


class Icd10(Sourced):
    code: str = PydField(pattern=r"^[A-Z]\d\d(\.\d{1,2})?$")


class Condition(StrictModel):
    label: str
    icd10: Icd10
    prior: Value
    severity: Distribution
    age: Normal
    bmi: Normal
    female: OddsRatio
    risk_factors: dict[str, OddsRatio] = {}
    activity: Distribution
    onset: Distribution
    injury_event: Distribution
    heard_pop: Prob
    pain_delayed_onset: Prob
    swelling_within_hours: Prob
    symptom_duration_days: LogNormal
    symptoms: dict[str, Prob]

    @field_validator("risk_factors")
    @classmethod
    def _known_risks(cls, v: dict[str, OddsRatio]) -> dict[str, OddsRatio]:
        unknown = sorted(set(v) - set(BINARY_RISK_FACTORS))
        if unknown:
            raise ValueError(f"unknown risk factor(s) {unknown}; allowed: {', '.join(BINARY_RISK_FACTORS)}")
        return v

    @field_validator("symptoms")
    @classmethod
    def _all_symptoms(cls, v: dict[str, Prob]) -> dict[str, Prob]:
        _exact_keys(v, SYMPTOMS, "symptoms must be exactly the schema's symptom fields")
        return v


class Population(StrictModel):
    female: Prob
    smoker: Prob
    sedentary: Prob
    stretches_before_exercise: Prob
    recent_dehydration: Prob
    inflammatory_arthritis: Prob
    recent_surgery: Prob
    recent_immobilisation: Prob
    long_travel: Prob
    previous_vte: Prob
    active_cancer: Prob
    hormonal_therapy: Prob
    pregnant: Prob
    fertile_age: Value  # upper bound; pregnancy is possible from age_min to this
    pregnant_outside_fertile_age: Prob
    activity: Distribution


class GivenAnswer(StrictModel):
    """Missingness that depends on another field's reported answer (still missing at random)."""

    field: str
    p: dict[str, float]

    @model_validator(mode="after")
    def _known(self) -> "GivenAnswer":
        if self.field not in CATEGORY_GIVEN:
            raise ValueError(f"given.field must be one of {', '.join(CATEGORY_GIVEN)}, got {self.field!r}")
        allowed = field(self.field).allowed
        unknown = sorted(set(self.p) - set(allowed))
        if unknown:
            raise ValueError(f"given.p: unknown answers {unknown} of {self.field}; allowed: {', '.join(allowed)}")
        bad = {k: v for k, v in self.p.items() if not 0 <= v < 1}
        if bad:
            raise ValueError(f"given.p: probabilities must be in [0, 1), got {bad}")
        return self


class Missing(Prob):
    """P(the answer is unknown); with ``given``, another value when a field's reported answer is one of those listed."""

    given: GivenAnswer | None = None

    def numbers(self) -> dict[str, float]:
        return {"p": self.p}


# fields whose reported answer may set another field's missingness: never missing-dependent themselves
CATEGORY_GIVEN = ("injury_event", "onset", "activity")


class Reporting(StrictModel):
    leak: Prob
    miss: Prob


class Shift(StrictModel):
    description: str
    prior_multiplier: Distribution
    age_offset_years: Value
    missingness_multiplier: Value
    activity_multiplier: Distribution


class KnowledgeBaseModel(StrictModel):
    version: int
    severity_logit_shift: SignedValues
    reporting: Reporting
    population: Population
    missingness: dict[str, Missing]
    conditions: dict[str, Condition]
    shift: Shift

    @field_validator("conditions")
    @classmethod
    def _all_conditions(cls, v: dict[str, Condition]) -> dict[str, Condition]:
        _exact_keys(v, CONDITIONS, f"conditions must be exactly {', '.join(CONDITIONS)}")
        return v

    @field_validator("missingness")
    @classmethod
    def _all_optional(cls, v: dict[str, Missing]) -> dict[str, Missing]:
        _exact_keys(v, OPTIONAL_FIELDS, "missingness must list every optional field")
        for name, m in v.items():
            if m.given is not None and v[m.given.field].given is not None:
                raise ValueError(f"{name}.given.field {m.given.field!r} has a `given` of its own: one level only")
            if m.given is not None and name in CATEGORY_GIVEN:
                raise ValueError(f"{name}: a field other answers depend on cannot have a `given`")
        return v


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
    tristate: dict[str, np.ndarray]  # field -> (9, 3), pregnant excluded
    pregnant: np.ndarray  # (9,) P(pregnant | condition, female of fertile age)
    pregnant_other: float  # P(pregnant reported yes | female outside fertile age), same for all
    fertile_age: tuple[int, int]
    female: np.ndarray  # (9,)
    category: dict[str, np.ndarray]  # field -> (9, K)
    age_pmf: np.ndarray  # (9, len(AGES))
    bmi: np.ndarray  # (9, 2) mean, sd
    duration: np.ndarray  # (9, 2) log-median, log-sd
    missingness: dict[str, float]
    # field -> (the category field it depends on, P(unknown) per that field's reported code; the
    # last entry, for an unknown answer, is the base rate)
    missingness_given: dict[str, tuple[str, np.ndarray]]
    name: str = "default"

    @property
    def conditions(self) -> tuple[str, ...]:
        return CONDITIONS

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
    for rf in BINARY_RISK_FACTORS:
        base = getattr(m.population, rf).p
        p = np.array([_odds_shift(base, c.risk_factors[rf].odds_ratio) if rf in c.risk_factors else base
                      for c in conds])
        if rf == "pregnant":
            pregnant = p
        else:
            tristate[rf] = np.repeat(p[:, None], len(SEVERITIES), axis=1)
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
    return KnowledgeBase(
        model=m, prior=prior, severity=severity, tristate=tristate, pregnant=pregnant,
        pregnant_other=m.population.pregnant_outside_fertile_age.p, fertile_age=fertile, female=female,
        category=category, age_pmf=_age_pmf([(c.age.mean, c.age.sd) for c in conds]),
        bmi=np.array([[c.bmi.mean, c.bmi.sd] for c in conds]),
        duration=np.array([[np.log(c.symptom_duration_days.median_days), c.symptom_duration_days.log_sd]
                           for c in conds]),
        missingness={k: v.p for k, v in m.missingness.items()},
        missingness_given={k: (v.given.field, np.array([v.given.p.get(a, v.p) for a in field(v.given.field).allowed]
                                                       + [v.p]))
                           for k, v in m.missingness.items() if v.given is not None},
    )


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-after"))


def knowledge_base_from_dict(raw: Any, *, where: str = "knowledge base") -> KnowledgeBase:
    """Validate and compile a knowledge base already read from YAML (``where`` names it in errors)."""
    try:
        model = KnowledgeBaseModel.model_validate(raw)
    except ValidationError as err:
        lines = [f"{_location(e['loc'])}: {e['msg']}" for e in err.errors()]
        raise KnowledgeBaseError(f"{where}: invalid knowledge base:\n  " + "\n  ".join(lines)) from err
    try:
        return _build(model)
    except KnowledgeBaseError as err:
        raise KnowledgeBaseError(f"{where}: {err}") from err


def read_knowledge_base_yaml(path: str | Path | None = None) -> Any:
    """The knowledge base file as plain YAML data (default: the project's, else the packaged one)."""
    path = Path(path) if path is not None else config_path("knowledge_base.yaml")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
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
