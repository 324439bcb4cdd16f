"""Validated configuration files (configs/*.yaml): parsed once, errors name the key."""

from __future__ import annotations

import difflib
import functools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.core.errors import ConfigError
from pipeline.core.files import load_yaml

__all__ = ["ConfigError", "ExtraDataConfig", "GenerateConfig", "LEVELS", "ProbesConfig", "SafetyNetLine", "ScreenConfig",
           "ScreenRule", "Source", "SplitConfig", "TrainConfig", "TriageConfig", "check_source", "error_lines", "flatten",
           "load_config", "normalised", "section_keys"]



class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are frozen after validation, and no number
    is NaN or infinite (a NaN cost passed `>= 0` and sent every case the same day).

    Each model's validator is built when it first validates (``defer_build``), not at import:
    ``kneepain score`` validates a few of the 40 sections, and building them all cost about
    50 ms of its start-up."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True, allow_inf_nan=False)


_PROVENANCE = re.compile(r"^(seed: \"[^\"]{8,}\".*|ref: .*\b(19|20)\d\d\b.*|assumption: .{10,})$", re.S)
# what a ``ref`` names beside the study and its year: where in it the number or rule is found
_FIGURE = re.compile(r"(table|figure|fig\.|abstract|page|p\. ?\d|results|text|guideline|section|registry|main points"
                     r"|recommendation|statement)", re.I)


def normalised(text: str) -> str:
    """``text`` with curly quotes straightened, runs of white space one space, in lower case: how a
    seed quote is compared with the seed article."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", text).strip().lower()


@functools.cache
def _seed_text() -> str:
    from pipeline.core.paths import seed_path

    return normalised(seed_path().read_text(encoding="utf-8"))


def check_source(value: str, *, figure: bool = True) -> str:
    """A number's or a rule's provenance: ``ref: <author (year) title, the figure used>``,
    ``seed: "<quote>"`` (a quote supports a direction, never a size; each one, wherever it stands in
    the source, found word for word in the seed article) or ``assumption: <reason>``. Without
    ``figure``, a ``ref`` need not say where in the work it is (a code's entry in a classification)."""
    value = value.strip()
    if not _PROVENANCE.match(value):
        raise ValueError('source must be \'seed: "<quote>"\', \'ref: <author (year) title>\' or '
                         f"'assumption: <reason>', got {value!r}")
    if re.search(r'seed: (?!")', value):
        raise ValueError(f'a seed quote must stand in double quotes after "seed: ", to be checked: {value!r}')
    if figure and value.startswith("ref: ") and not _FIGURE.search(value):
        raise ValueError("a ref must name where in the study its figure is (a table, figure, page, section, the "
                         f"abstract or text): {value!r}")
    for quote in re.findall(r'seed: "([^"]+)"', value):
        if normalised(quote) not in _seed_text():
            raise ValueError(f"seed quote not found in the seed article (seed/pain-behind-the-knee.txt): {quote!r}")
    return value


Source = Annotated[str, AfterValidator(check_source)]
# the provenance of a code, not a number: a classification's entry (ICD-10's R25.2)
CodeSource = Annotated[str, AfterValidator(functools.partial(check_source, figure=False))]
# a text shown to the user (a reason, a safety net, advice): an empty one showed as nothing at all
Text = Annotated[str, Field(pattern=r"\S")]


class SplitConfig(StrictModel):
    n: int = Field(ge=1)
    population: Literal["default", "shift"] = "default"


# a split's name is its file's name (<name>.parquet in the data folder): no folder, no dot first
SplitName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")]


# the splits the pipeline reads (train, valid and calib to fit; test and shift to evaluate) and the
# population each is drawn from
PIPELINE_SPLITS = {"train": "default", "valid": "default", "calib": "default", "test": "default", "shift": "shift"}


class GenerateConfig(StrictModel):
    seed: int = Field(ge=0)
    splits: dict[SplitName, SplitConfig]

    @model_validator(mode="after")
    def _pipeline_populations(self) -> "GenerateConfig":
        for name, population in PIPELINE_SPLITS.items():
            if name in self.splits and self.splits[name].population != population:
                raise ValueError(f"splits.{name}.population: must be {population!r} (evaluation reports the {name} "
                                 f"split as drawn from it), got {self.splits[name].population!r}")
        return self

    def missing_pipeline_splits(self) -> list[str]:
        """The splits the pipeline reads that this config does not generate (`kneepain generate`
        refuses it: a misspelt name would leave an earlier file of the right name in place)."""
        return [name for name in PIPELINE_SPLITS if name not in self.splits]


class CVConfig(StrictModel):
    folds: int = Field(ge=2, le=20)
    max_rows: int = Field(ge=0)
    n_jobs: int = Field(ge=1)

    @model_validator(mode="after")
    def _every_condition_in_every_fold(self) -> "CVConfig":
        from pipeline.core.schema import CONDITIONS

        if 0 < self.max_rows < self.folds * len(CONDITIONS):
            raise ValueError(f"max_rows: 0 (every row) or at least folds x conditions = {self.folds * len(CONDITIONS)}, "
                             f"so that every fold can hold every condition; got {self.max_rows}")
        return self


class LogisticConfig(StrictModel):
    C: float = Field(gt=0)
    max_iter: int = Field(ge=10)
    tol: float = Field(gt=0)


class HGBConfig(StrictModel):
    max_iter: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    max_leaf_nodes: int = Field(ge=2)
    l2_regularization: float = Field(ge=0)
    early_stopping: bool


class MLPConfig(StrictModel):
    hidden_layer_sizes: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    alpha: float = Field(ge=0)
    learning_rate_init: float = Field(gt=0)
    max_iter: int = Field(ge=1)
    early_stopping: bool


class ModelsConfig(StrictModel):
    logistic: LogisticConfig
    hist_gradient_boosting: HGBConfig
    mlp: MLPConfig


class SelectionConfig(StrictModel):
    log_loss_tolerance: float = Field(ge=0)
    # a candidate counts as the faster scorer only at this many times another's rows per second: the
    # speeds are measured, and nearer ones swap with the machine's load from one run to the next
    speed_ratio: float = Field(default=1.5, ge=1, allow_inf_nan=False)


class CalibrationConfig(StrictModel):
    method: Literal["temperature", "sigmoid", "isotonic"]
    min_improvement: float = Field(ge=0)


class TrackingConfig(StrictModel):
    """Where training is recorded; checked as MLflow checks them when the run is registered
    (``mlflow.utils.validation``), so that a bad name fails at load, not after the training."""

    experiment: str = Field(pattern=r"\S")
    registered_model: str = Field(pattern=r"^[^/:]*[^/:\s][^/:]*$")  # MLflow: no '/' or ':'
    alias: str = Field(pattern=r"^[\w-]+$", max_length=255)

    @field_validator("alias")
    @classmethod
    def _not_reserved(cls, alias: str) -> str:
        if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
            raise ValueError(f"{alias!r} is reserved by MLflow (latest, and v<number> for versions); choose another")
        return alias


class ExtraDataConfig(StrictModel):
    """Real labelled cases trained on beside the synthetic ``train`` split (``path`` empty: none).

    Each kept case counts ``weight`` synthetic cases in the fit; ``holdout`` of them (stratified
    by condition) are kept out of training and evaluated on instead.
    """

    path: str = ""
    weight: float = Field(default=1.0, allow_inf_nan=False)
    holdout: float = Field(default=0.3, ge=0, lt=1)

    @field_validator("weight")
    @classmethod
    def _counts(cls, weight: float) -> float:
        if weight <= 0:  # 0 would fit without the cases and drop the training share unseen
            raise ValueError(f"must be above 0, got {weight:g} (at 0 the real cases would not be trained on); to "
                             "measure a model on your cases without training on them, run `kneepain evaluate --data FILE`")
        return weight


class TrainConfig(StrictModel):
    seed: int = Field(ge=0, le=2**32 - 1)  # scikit-learn's random_state
    cv: CVConfig
    candidates: list[Literal["logistic", "hist_gradient_boosting", "mlp"]] = Field(min_length=1)
    models: ModelsConfig
    selection: SelectionConfig
    calibration: CalibrationConfig
    tracking: TrackingConfig
    extra_data: ExtraDataConfig = ExtraDataConfig()

    @field_validator("candidates")
    @classmethod
    def _once_each(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError(f"each candidate at most once, got {names}")
        return names


Level = Literal["self_care", "see_doctor", "see_doctor_soon", "emergency"]
LEVELS: tuple[Level, ...] = ("self_care", "see_doctor", "see_doctor_soon", "emergency")


def _raises_the_level(level: Level) -> Level:
    """A red flag's or screen rule's ``level``: one that raises a case's (not the lowest, which a
    rule that fires would send no case to, and which a folder edited to send every sign of a clot to
    self-care would give)."""
    if level == LEVELS[0]:
        raise ValueError(f"{level!r} raises no case's level; a rule sends a case at {LEVELS[1]!r} or above")
    return level


RuleLevel = Annotated[Level, AfterValidator(_raises_the_level)]


class SafetyNetLine(StrictModel):
    """A rule's line in the safety net: in plain words, the signs that fire it (``text``; a text
    alone is the line). Fitted to what the person has said (:mod:`pipeline.decision.netlines`):

    - ``met``: the line where one of the rule's ``any`` fields already matches, the rest of the
      rule alone ("the calf or leg swells" after surgery);
    - ``without``: the line where settled ``any`` fields are answered otherwise, keyed by those
      fields joined by ``+``, one text for each combination of them. A settled field is a history
      or an age that will not change before the line is needed: an earlier clot (the clot to watch
      for is the next one), cancer under treatment, an age; not a cast or an operation, which can
      come next week, nor a sign, which can appear, nor the pain's duration, which grows."""

    text: Text
    met: Text | None = None
    without: dict[str, Text] = {}

    @model_validator(mode="before")
    @classmethod
    def _text_alone(cls, value: object) -> object:
        return {"text": value} if isinstance(value, str) else value

    @property
    def settled(self) -> list[str]:
        """The settled fields ``without`` names, in the order they first appear."""
        return list(dict.fromkeys(name for key in self.without for name in key.split("+")))


MAX_SETTLED = 3  # settled fields per line: 2 ** 3 - 1 texts of `without`


def _check_line(line: SafetyNetLine, any_: dict[str, list[str]]) -> None:
    """A fitted safety-net line's ``met`` and ``without`` need the rule's ``any`` part; ``without``
    names settled ``any`` fields (no sign, not the duration), each combination of them once."""
    from itertools import combinations

    from pipeline.core.schema import is_settled

    if (line.met is not None or line.without) and not any_:
        raise ValueError("safety_net: the rule has no `any` part, so its line has no `met` or `without`: give the text "
                         "alone")
    settled = line.settled
    for name in settled:
        if name not in any_:
            near = difflib.get_close_matches(name, list(any_), n=1)
            raise ValueError(f"safety_net.without: {name!r} is not one of the rule's `any` fields {sorted(any_)}"
                             + (f" (did you mean {near[0]}?)" if near else ""))
        if not is_settled(name):
            raise ValueError(f"safety_net.without: {name!r}: a sign said \"no\" can appear later, and a pain's duration "
                             "grows: only a settled history or an age is left out of a line")
    if len(settled) > MAX_SETTLED:
        raise ValueError(f"safety_net.without: at most {MAX_SETTLED} settled fields (a text for each combination), got "
                         f"{settled}")
    wanted = {frozenset(c) for r in range(1, len(settled) + 1) for c in combinations(settled, r)}
    given = [frozenset(key.split("+")) for key in line.without]
    if len(set(given)) < len(given) or set(given) != wanted:
        missing = sorted("+".join(sorted(c)) for c in wanted - set(given))
        raise ValueError(f"safety_net.without: give one text for each combination of {'+'.join(settled)} answered "
                         f"otherwise" + (f"; missing: {', '.join(missing)}" if missing else "; one is given twice"))


class RedFlag(StrictModel):
    name: str
    level: RuleLevel
    # each field's answer, or a list of answers any of which matches (checked as a screen rule's)
    all: dict[str, list[str]] = Field(min_length=1)
    any: dict[str, list[str]] = {}
    reason: Text
    # in plain words, the signs that fire the rule: shown while they could (SafetyNet.to_watch)
    safety_net: SafetyNetLine
    # shown whatever today's answers to its signs, while its other fields could still match: signs
    # that can come later (a calf that is not swollen today can swell tomorrow)
    watch_always: bool = False
    # the condition the rule sends the case for (None: none of the nine): where the rule raises the
    # level, the differential shows it and the advice names it, whatever the model thinks of it
    condition: str | None = None
    source: Source  # where the rule and its level come from, and its numbers (as a knowledge-base number's)

    @field_validator("all", "any", mode="before")
    @classmethod
    def _answers_as_lists(cls, fields: object) -> object:
        return {k: [v] if isinstance(v, str) else v for k, v in fields.items()} if isinstance(fields, dict) else fields

    @model_validator(mode="after")
    def _line(self) -> "RedFlag":
        _check_line(self.safety_net, self.any)
        return self


def _check_answers(part: str, fields: dict[str, list[str]]) -> None:
    """``fields`` (a rule's ``all`` or ``any``, named ``part`` in messages) maps case fields to
    answers they can have: answer texts, ``unknown``, or ``<=x`` / ``>=x`` for a number."""
    from pipeline.core.schema import FIELD_NAMES, field

    for name, answers in fields.items():
        if name not in FIELD_NAMES:
            raise ValueError(f"{part}.{name}: not a case field")
        f = field(name)
        if not answers:
            raise ValueError(f"{part}.{name}: give at least one answer that matches")
        for a in answers:
            if a == "unknown":
                continue
            if f.kind in ("integer", "float"):
                if not (a[:2] in ("<=", ">=") and _is_number(a[2:])):
                    raise ValueError(f"{part}.{name}: {a!r} must be '<=x', '>=x' or 'unknown'")
                x = float(a[2:])
                if (a[:2] == ">=" and f.maximum is not None and x > f.maximum) or \
                        (a[:2] == "<=" and f.minimum is not None and x < f.minimum):
                    raise ValueError(f"{part}.{name}: {a!r} matches no case ({name} is {f.allowed_text})")
            elif a not in (("yes", "no") if f.kind == "tristate" else f.allowed):
                raise ValueError(f"{part}.{name}: {a!r} is not an answer of {name}")


class ScreenSuggestion(StrictModel):
    """Signs that suggest a same-day screen rule's condition, matched as a rule is (every ``all``
    field and, if given, one ``any`` field): where a case shows them, ``ask_next`` asks what would
    make the rule fire however unlikely the nine conditions make it, as for a case that meets the
    rule in part (sudden pain with weakness or tingling: is the foot cold or pale?)."""

    all: dict[str, list[str]] = {}
    any: dict[str, list[str]] = {}
    source: Source

    @model_validator(mode="after")
    def _fields(self) -> "ScreenSuggestion":
        if not self.all and not self.any:
            raise ValueError("give the signs in `all`, `any` or both")
        _check_answers("all", self.all)
        _check_answers("any", self.any)
        return self


class ScreenRule(StrictModel):
    """One rule of the emergency screen: what it rules out, when it fires, and why.

    ``all`` and ``any`` map a case field to the answers that match: answer texts (``yes``, a
    category, ``unknown``) or, for a number, comparisons such as ``">=55"`` or ``"<=7"``. The rule
    fires when every ``all`` field matches and, if ``any`` is given, at least one ``any`` field does.
    """

    name: str
    rule_out: Text
    level: RuleLevel
    all: dict[str, list[str]] = Field(min_length=1)
    any: dict[str, list[str]] = {}
    reason: Text
    safety_net: SafetyNetLine  # as RedFlag.safety_net
    watch_always: bool = False  # as RedFlag.watch_always
    source: Source
    # rules that rule out what this one does and more, at a level at least as high: where one of
    # them fires too, ``screen`` names only it ("a septic joint or cellulitis", not that and "a
    # septic joint")
    covered_by: list[str] = []
    suggested_by: ScreenSuggestion | None = None  # same-day rules only

    @model_validator(mode="after")
    def _fields(self) -> "ScreenRule":
        _check_answers("all", self.all)
        _check_answers("any", self.any)
        _check_line(self.safety_net, self.any)
        if self.suggested_by is not None and self.level != "emergency":
            raise ValueError(f"suggested_by: only a same-day rule's signs are asked however unlikely, and "
                             f"{self.name!r} is at {self.level!r}")
        return self


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class ScreenConfig(StrictModel):
    """The screen for same-day emergencies outside the nine conditions (``configs/screen.yaml``)."""

    rules: list[ScreenRule] = Field(min_length=1)

    @model_validator(mode="after")
    def _covering_rules(self) -> "ScreenConfig":
        by_name = {r.name: r for r in self.rules}
        if len(by_name) < len(self.rules):
            raise ValueError(f"rules: names must be distinct, got {[r.name for r in self.rules]}")
        for r in self.rules:
            for name in r.covered_by:
                other = by_name.get(name)
                if other is None or other is r:
                    raise ValueError(f"{r.name}.covered_by: {name!r} is not another rule "
                                     f"(the rules: {', '.join(by_name)})")
                if LEVELS.index(other.level) < LEVELS.index(r.level):
                    raise ValueError(f"{r.name}.covered_by: {name!r} is at level {other.level!r}, below "
                                     f"{r.level!r}: a covering rule must send a case at least as soon")
        # rules that cover each other would leave neither named where both fire
        uncovered = {r.name for r in self.rules if not r.covered_by}
        left = [r for r in self.rules if r.covered_by]
        while left:
            ready = [r for r in left if all(n in uncovered for n in r.covered_by)]
            if not ready:
                raise ValueError(f"covered_by: {', '.join(r.name for r in left)} cover each other in a cycle, so "
                                 "where they fire together none would be named")
            uncovered |= {r.name for r in ready}
            left = [r for r in left if r not in ready]
        return self


class ProbeExpectation(StrictModel):
    """What the literature says the oracle must conclude for a probe case (every key given must hold)."""

    top: str | None = None  # the most likely condition
    not_top: str | None = None  # a condition that must not be the most likely
    dvt_at_least: float | None = Field(default=None, ge=0, le=1)
    dvt_at_most: float | None = Field(default=None, ge=0, le=1)
    screen: list[str] | None = None  # the screen rules that must fire (by name)
    triage_at_least: Level | None = None  # on a trained model's decision layer
    triage_at_most: Level | None = None
    asks: list[str] | None = None  # fields whose questions `ask_next` must list (on the decision layer)

    @field_validator("asks")
    @classmethod
    def _asks_fields(cls, names: list[str] | None) -> list[str] | None:
        _check_questions("asks", names or [])
        return names


def _check_questions(key: str, names: list[str], kinds: tuple[str, ...] | None = None, what: str = "") -> None:
    """Each of ``names`` (the config's ``key``) is a case field, and where ``kinds`` is given one of
    those kinds (``what``, in the message: "a yes/no question")."""
    from pipeline.core.schema import field

    for name in names:
        try:
            kind = field(name).kind
        except KeyError as err:
            raise ValueError(f"{key}: {err.args[0]}") from None
        if kinds is not None and kind not in kinds:
            raise ValueError(f"{key}: {name!r} must be {what}")


class Probe(StrictModel):
    name: str
    case: dict[str, Any]
    expect: ProbeExpectation
    why: str


class ProbesConfig(StrictModel):
    """Documented probe cases (``configs/probes.yaml``): checked by the tests, followed by ``kneepain sensitivity``."""

    probes: list[Probe] = Field(min_length=1)


class ConformalConfig(StrictModel):
    """Differential sets: split conformal, Mondrian over bands of confidence and of answers known."""

    coverage: float = Field(gt=0, lt=1)  # overall
    min_band_coverage: float = Field(gt=0, lt=1)  # each band's level is at least this (see fit_conformal)
    # band edges: the top probability, and the share of the optional answers that are known
    confidence_edges: list[float] = Field(min_length=1)
    known_edges: list[float] = Field(min_length=1)
    # ``calib`` plus one copy per rate with that share of the optional answers blanked at random
    blank_rates: list[float] = []
    min_band_cases: int = Field(ge=1)  # a band with fewer calibration cases uses its confidence band's
    blank_seed: int = Field(ge=0)

    @model_validator(mode="after")
    def _edges(self) -> "ConformalConfig":
        for name in ("confidence_edges", "known_edges", "blank_rates"):
            v = getattr(self, name)
            if any(not 0 < x < 1 for x in v) or list(v) != sorted(set(v)):
                raise ValueError(f"{name}: must be increasing, each in (0, 1); got {v}")
        if self.min_band_coverage > self.coverage:
            raise ValueError(f"min_band_coverage ({self.min_band_coverage}) must be at most coverage ({self.coverage})")
        return self


class UncertainConfig(StrictModel):
    """When the expected cost points to the same day but rests on unanswered safety-net questions."""

    level: Level  # the level given instead, with the safety net
    # the share of the probability, held by the conditions that call for the same day, at or above
    # which a case with a "yes" to a sign or risk of theirs and its pain described goes the same day
    # however its unasked signs would be answered
    stands_at: float = Field(gt=0, le=1)
    source: Source
    # the yes/no answers that give a reason to suspect a clot: without a "yes" to one, a same day on
    # the expected cost alone is softened too (unless the clot is the likeliest cause), so that a
    # "no" to a sign never sends a case sooner than leaving it unanswered did
    reasons_to_suspect: list[str] = Field(min_length=1)
    reasons_source: Source
    # the yes/no risks of a clot that no same-day red flag reads, a "yes" to which counts as the
    # red flags' own signs and risks do where a same day stands (``stands_at``)
    risks: list[str] = []
    risks_source: Source | None = None

    @model_validator(mode="after")
    def _yes_no_fields(self) -> "UncertainConfig":
        _check_questions("reasons_to_suspect", self.reasons_to_suspect, ("tristate",), "a yes/no question")
        _check_questions("risks", self.risks, ("tristate",), "a yes/no question")
        if self.risks and self.risks_source is None:
            raise ValueError("risks: give risks_source, where the risks come from")
        return self


class AskNextConfig(StrictModel):
    fields: list[str] = []  # asked about besides the fields of the red flags and the screen
    max_questions: int = Field(ge=1)
    min_answer_probability: float = Field(ge=0, lt=1)
    # fields asked however unlikely their answer, where it would make a same-day red flag fire that
    # the case shows in part (as the screen's rules are asked); a field no such flag reads adds nothing
    at_any_chance: list[str] = []
    # how long the pain has lasted is asked too, its answers taken as the spans between these days
    # (increasing; none: not asked)
    duration_edges: list[float] = []

    @field_validator("duration_edges")
    @classmethod
    def _increasing(cls, edges: list[float]) -> list[float]:
        if any(not 0 < e < math.inf for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"must be positive, finite and increasing, got {edges}")
        return edges


class AtypicalConfig(StrictModel):
    quantile: float = Field(gt=0, lt=0.5)
    min_level: Level


class TriageConfig(StrictModel):
    levels: list[Level]
    level_text: dict[Level, Text]
    costs: dict[str, dict[Level, float]]
    cost_sources: dict[str, Source]
    right_level: dict[str, Level]
    red_flags: list[RedFlag]
    advice: dict[str, Text]
    closing: Text
    conformal: ConformalConfig
    atypical: AtypicalConfig
    uncertain: UncertainConfig
    ask_next: AskNextConfig

    @model_validator(mode="after")
    def _complete(self) -> "TriageConfig":
        from pipeline.core.schema import CONDITIONS

        if tuple(self.levels) != LEVELS:
            raise ValueError(f"levels must be {list(LEVELS)} (least urgent first)")
        for name in ("costs", "cost_sources", "right_level", "advice"):
            keys = set(getattr(self, name))
            if keys != set(CONDITIONS):
                raise ValueError(f"{name}: must have exactly the conditions; unknown {sorted(keys - set(CONDITIONS))}, "
                                 f"missing {sorted(set(CONDITIONS) - keys)}")
        for c, row in self.costs.items():
            if set(row) != set(LEVELS):
                raise ValueError(f"costs.{c}: must give a cost for every level {list(LEVELS)}")
            # a case certain to be the condition is sent at the level guidance calls for, and at no other
            if row[self.right_level[c]] != 0 or any(v <= 0 for lv, v in row.items() if lv != self.right_level[c]):
                raise ValueError(f"costs.{c}: must be 0 at its right_level ({self.right_level[c]}) and above 0 at every "
                                 f"other level, so that a case certain to be {c} is sent at that level; got {row}")
        if self.uncertain.level not in LEVELS[1:-1]:
            raise ValueError(f"uncertain.level: must be one of {list(LEVELS[1:-1])} (a same day softened goes below "
                             f"the same day, and no lower than a doctor), got {self.uncertain.level!r}")
        names = [flag.name for flag in self.red_flags]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"red_flags: each name must be one rule's (a case's reason code is its name); "
                             f"repeated: {repeated}")
        for key, names in (("fields", self.ask_next.fields), ("at_any_chance", self.ask_next.at_any_chance)):
            _check_questions(f"ask_next.{key}", names, ("tristate", "category"), "a yes/no or category question")
        for i, flag in enumerate(self.red_flags):
            if flag.condition is not None and flag.condition not in CONDITIONS:
                raise ValueError(f"red_flags[{i}].condition: {flag.condition!r} is not one of {list(CONDITIONS)}")
            if flag.condition is not None and LEVELS.index(self.right_level[flag.condition]) < LEVELS.index(flag.level):
                raise ValueError(f"red_flags[{i}].condition: {flag.condition!r} calls for {self.right_level[flag.condition]}, "
                                 f"below the flag's {flag.level}: name a condition its level is for, or none")
            for part in ("all", "any"):
                _check_answers(f"red_flags[{i}].{part}", getattr(flag, part))
        return self


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for logging every config value as a parameter)."""
    out: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


T = TypeVar("T", bound=BaseModel)


def load_config(model: type[T], path: str | Path) -> T:
    """Read a YAML file into ``model``; raise :class:`ConfigError` naming each bad key."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: invalid {model.__name__}:\n  " + "\n  ".join(error_lines(err, model))) from err


def error_lines(err: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """One ``key.path: what is wrong`` line per error: a validator's own words without pydantic's
    "Value error, " before them, and pydantic's with the value given ("Input should be less than
    1, got 1.2"), and where YAML read an unquoted yes or no as true or false, that it did. With
    the ``model`` validated, a key it does not take is named with the key it looks like a
    misspelling of (``cv.foldz: not a key of this section (did you mean folds?)``), or with the
    section's keys."""
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not str(p).startswith("function-"))
        where = ".".join(str(p) for p in loc)
        what = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and model is not None and (keys := section_keys(model, loc[:-1])):
            near = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.6)
            what = "not a key of this section " + (f"(did you mean {near[0]}?)" if near else f"(its keys: {', '.join(keys)})")
        given = e.get("input")
        if e["type"] not in ("value_error", "missing", "extra_forbidden") and isinstance(given, (bool, int, float, str)):
            what += f", got {given!r}"
            if isinstance(given, bool):
                what += " (YAML reads an unquoted yes, no, on or off as true or false: quote it, 'yes')"
        lines.append(": ".join(filter(None, [where, what])))
    return lines


def section_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys of the config section at ``loc`` (a path of keys, and of names or indices in its
    dicts and lists) in ``model``: none where the path leads to no section."""
    node: Any = model
    skip = 0  # names or indices before the next key: a dict's keys, a list's places
    for part in loc:
        if skip:
            skip -= 1
            continue
        fields = node.model_fields if isinstance(node, type) and issubclass(node, BaseModel) else {}
        if part not in fields:
            return []
        node, skip = _section(fields[part].annotation)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _section(annotation: Any) -> tuple[Any, int]:
    """The config section a field holds (None if none), and how many dict keys or list places
    stand between the field and it (``dict[str, Condition]``: one)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, 0
    origin, args = get_origin(annotation), get_args(annotation)
    container = origin in (dict, list, tuple, set, frozenset)
    for arg in args[-1:] if origin is dict else args:  # a dict's values; a union's or an Annotated's types
        node, skip = _section(arg)
        if node is not None:
            return node, skip + container
    return None, 0
