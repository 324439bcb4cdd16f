"""The knowledge base file's rules, as pydantic models: what each section holds, and provenance.

Every mapping that holds a number also holds ``source``: ``ref: <study, year, the figure used>``,
``seed: "<quote>"`` (a quote supports a direction, never a size) or ``assumption: <reason>``. A
``seed`` or ``assumption`` number also holds ``range``: its plausible interval (``[low, high]``, or
one per number of the mapping), which must contain it. Errors name the key path.
:mod:`pipeline.core.knowledge` compiles a validated file into arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator
from pydantic import Field as PydField

from pipeline.core.config import CodeSource, Source, StrictModel
from pipeline.core.errors import KnowledgeBaseError
from pipeline.core.schema import CONDITIONS, CONTEXT_TRISTATES, FIELDS, SEVERITIES, SYMPTOMS, field

__all__ = ["BINARY_RISK_FACTORS", "CATEGORY_GIVEN", "Condition", "Distribution", "Episode", "KnowledgeBaseModel", "Missing",
           "OPTIONAL_FIELDS", "Population", "Prob", "Sourced"]

BINARY_RISK_FACTORS = CONTEXT_TRISTATES  # risk factors: odds ratios against the population rate
OPTIONAL_FIELDS = tuple(f.name for f in FIELDS if not f.required)


def _exact_keys(given, expected: tuple[str, ...], what: str) -> None:
    """Raise ValueError naming keys not in ``expected`` and keys of ``expected`` that are missing
    (``given``: a mapping, whose keys are distinct)."""
    if len(given) == len(expected) and all(k in given for k in expected):
        return  # the common case, without building sets (a knowledge base checks hundreds of mappings)
    unknown = sorted(set(given) - set(expected))
    missing = [k for k in expected if k not in given]
    if unknown or missing:
        raise ValueError(f"{what}; unknown {unknown}, missing {missing}")


Range = tuple[float, float]


def _allowed(model: type[BaseModel], key: str) -> Range:
    """The closed interval of values the field ``key`` of ``model`` may take (from its ``gt``,
    ``ge``, ``lt`` and ``le`` bounds; a field without them: any number)."""
    low, high = -math.inf, math.inf
    for bound in model.model_fields[key].metadata if key in model.model_fields else ():
        for name in ("gt", "ge"):
            if getattr(bound, name, None) is not None:
                low = max(low, float(getattr(bound, name)))
        for name in ("lt", "le"):
            if getattr(bound, name, None) is not None:
                high = min(high, float(getattr(bound, name)))
    return low, high


def _check_ranges(numbers: dict[str, float], source: str, ranges: Range | dict[str, Range] | None,
                  allowed: Callable[[str], Range] = lambda key: (-math.inf, math.inf)) -> None:
    """A ``seed`` or ``assumption`` number needs a plausible range that contains it, within what the
    number may be (``allowed(key)``: a closed interval), since `kneepain sensitivity` draws from it."""
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
        least, most = allowed(key)
        if low < least or high > most:
            raise ValueError(f"range of {key}: [{low:g}, {high:g}] reaches beyond what {key} may be "
                             f"([{least:g}, {most:g}]); `kneepain sensitivity` draws from it")


class Sourced(StrictModel):
    source: Source
    range: Range | dict[str, Range] | None = None

    def numbers(self) -> dict[str, float]:
        """The mapping's numbers by key (what ``range`` and sensitivity draws refer to)."""
        # the fields' values as validated (model_dump, at every node of every validation, cost more)
        return {k: float(v) for k, v in self.__dict__.items() if k not in ("source", "range")
                and isinstance(v, (int, float)) and not isinstance(v, bool)}

    @model_validator(mode="after")
    def _ranged(self) -> "Sourced":
        _check_ranges(self.numbers(), self.source, self.range, lambda key: _allowed(type(self), key))
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


class Episode(Sourced):
    """A share of a condition's cases that count the days from a recent episode (a flare of a
    long-standing condition) rather than from the condition's start, with its own log-normal."""

    share: float = PydField(gt=0, lt=1)
    median_days: float = PydField(gt=0)
    log_sd: float = PydField(gt=0)


class LogNormal(Sourced):
    """The symptom duration: a log-normal, or with ``episode`` a mixture of two (the usual course
    with weight 1 - share, the episode with weight share)."""

    median_days: float = PydField(gt=0)
    log_sd: float = PydField(gt=0)
    episode: Episode | None = None


class Distribution(BaseModel):
    """Named positive numbers plus ``source`` (and ``range``); the allowed names depend on the field."""

    model_config = ConfigDict(extra="allow", frozen=True)
    source: Source
    range: dict[str, Range] | None = None

    def numbers(self) -> dict[str, float]:
        return {k: float(v) for k, v in (self.model_extra or {}).items()}

    @model_validator(mode="after")
    def _numbers(self) -> "Distribution":
        for key, v in (self.model_extra or {}).items():
            # a 0 would rule a condition out for that answer (the oracle's log of it is -inf), as a p of 0 would
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < math.inf:  # NaN too
                raise ValueError(f"{key}: must be a positive number, got {v!r}")
        _check_ranges(self.numbers(), self.source, self.range, lambda key: (0.0, math.inf))
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


def _answer_names(mapping: object, names: tuple[str, ...]) -> object:
    """Check, before its numbers and ranges are, that a :class:`Distribution`'s numbers are named
    by exactly ``names`` (a misspelt answer was blamed on the range, which names it rightly)."""
    if isinstance(mapping, dict):
        _exact_keys({k: v for k, v in mapping.items() if k not in ("source", "range")}, names,
                    f"the numbers must be named by exactly the answers {', '.join(names)}")
    return mapping


class Icd10(Sourced):
    source: CodeSource
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

    @field_validator("severity", "activity", "onset", "injury_event", mode="before")
    @classmethod
    def _named_answers(cls, v: object, info: ValidationInfo) -> object:
        return _answer_names(v, SEVERITIES if info.field_name == "severity" else field(str(info.field_name)).allowed)

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
    hormonal_therapy: Prob  # women's rate
    # men's; absent in knowledge bases written before it, whose one rate served both sexes
    hormonal_therapy_men: Prob | None = None
    pregnant: Prob
    fertile_age: Value  # upper bound; pregnancy is possible from age_min to this
    pregnant_outside_fertile_age: Prob
    activity: Distribution

    @field_validator("activity", mode="before")
    @classmethod
    def _named_activities(cls, v: object) -> object:
        return _answer_names(v, field("activity").allowed)

    @field_validator("fertile_age")
    @classmethod
    def _an_age(cls, v: Value) -> Value:
        low, high = float(field("age").minimum or 0), float(field("age").maximum or math.inf)
        if not low < v.value <= high:  # a fraction (a sensitivity draw) counts its whole years
            raise ValueError(f"value: an age above the youngest case's ({low:g}) and at most {high:g} (pregnancy "
                             f"is generated from {low:g} to it), got {v.value:g}")
        return v


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

    @field_validator("missingness_multiplier")
    @classmethod
    def _positive(cls, v: Value) -> Value:
        if not 0 < v.value < math.inf:
            raise ValueError(f"value: must be above 0 (it multiplies each question's chance of being unanswered), "
                             f"got {v.value:g}")
        return v


class KnowledgeBaseModel(StrictModel):
    version: Literal[2]  # the layout this code reads: a file written for another is refused, not half read
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
