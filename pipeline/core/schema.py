"""The case record (docs/case-schema.md) as code: the one place that names columns and allowed values.

Everything else derives from here: the generator's columns, input parsing and validation
(:mod:`pipeline.core.parsing`), the features, the MLflow signature and the README's data
dictionary. This module is plain Python (no numpy or pandas), so the command line can read it
for its help without loading the scientific stack.
"""

from __future__ import annotations

import functools
import operator
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BETWEEN_WORDS",
    "CONDITIONS",
    "CONDITION_LABELS",
    "FIELDS",
    "FIELD_NAMES",
    "NAMED_COLUMNS",
    "REJECT_META",
    "SCHEMA_VERSION",
    "SEX_MALE",
    "TRISTATE_NO",
    "TRISTATE_YES",
    "UNKNOWN",
    "Field",
    "data_dictionary_markdown",
    "field",
    "is_settled",
    "is_sign",
    "max_duration_days",
    "normalise_header",
    "quoted_name",
    "repeated_columns",
    "top_k_problem",
    "visible",
    "whole_number",
    ]

SCHEMA_VERSION = "2"  # 2: the Wells items, VTE risk factors, timing of swelling and the emergency screen
UNKNOWN = -1
DAYS_PER_YEAR = 365.25

CONDITIONS: tuple[str, ...] = (
    "leg_cramp",
    "bakers_cyst",
    "runners_knee",
    "hamstring_injury",
    "meniscus_tear",
    "acl_injury",
    "pcl_injury",
    "dvt",
    "osteoarthritis",
)
CONDITION_LABELS: dict[str, str] = {
    "leg_cramp": "leg cramp",
    "bakers_cyst": "Baker's cyst",
    "runners_knee": "runner's knee",
    "hamstring_injury": "hamstring injury",
    "meniscus_tear": "meniscus tear",
    "acl_injury": "ACL injury",
    "pcl_injury": "PCL injury",
    "dvt": "deep vein thrombosis",
    "osteoarthritis": "osteoarthritis",
}

TRISTATE_YES = frozenset({"yes", "y", "true", "t", "1"})
TRISTATE_NO = frozenset({"no", "n", "false", "f", "0"})
_TRISTATE_UNKNOWN = frozenset({"", "unknown"})
_TRISTATE_ALLOWED = "yes/y/true/t/1, no/n/false/f/0, or blank/unknown"


@dataclass(frozen=True)
class Field:
    """One input column of the case record."""

    name: str
    kind: str  # "tristate", "category", "integer" or "float"
    group: str  # "context", "onset" or "symptom"
    meaning: str
    seed_basis: str = ""
    required: bool = False
    allowed: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    @property
    def allowed_text(self) -> str:
        if self.kind == "tristate":
            return _TRISTATE_ALLOWED
        if self.kind == "category":
            return ", ".join(self.allowed)
        low = "" if self.minimum is None else f">= {self.minimum:g}"
        high = "" if self.maximum is None else f"<= {self.maximum:g}"
        number = "a whole number" if self.kind == "integer" else "a number"
        return f"{number} {' and '.join(p for p in (low, high) if p)}".strip()


def _tri(name: str, group: str, meaning: str, seed_basis: str = "") -> Field:
    return Field(name, "tristate", group, meaning, seed_basis)


FIELDS: tuple[Field, ...] = (
    Field("age", "integer", "context", "age in years", "DVT: \"being older\"; OA wears cartilage over time",
          required=True, minimum=12, maximum=100),
    Field("sex", "category", "context", "sex", "pregnancy; sex-specific risks",
          required=True, allowed=("female", "male")),
    _tri("pregnant", "context", "pregnant now or gave birth in the last six weeks (never yes when sex is male)",
         "cramp: \"pregnant women are more likely to experience leg cramps\""),
    Field("bmi", "float", "context", "body-mass index, kg/m^2", "DVT, OA: \"overweight\", \"obese\"",
          minimum=12, maximum=70),
    _tri("smoker", "context", "smokes", "DVT: \"a smoker puts you at higher risk\""),
    _tri("sedentary", "context", "a predominantly sedentary lifestyle",
         "DVT: \"a predominantly sedentary lifestyle\""),
    Field("activity", "category", "context",
          "main activity: sprint_pivot_sport is football, tennis, basketball (short fast bursts, "
          "stop-start, direction changes)", "runner's knee, hamstring, ACL",
          allowed=("none", "running", "sprint_pivot_sport", "other_exercise")),
    _tri("stretches_before_exercise", "context", "stretches before exercise",
         "cramp: \"fail to stretch properly before or after exercise\""),
    _tri("recent_dehydration", "context", "recently dehydrated",
         "cramp: \"may also be the result of dehydration\""),
    _tri("inflammatory_arthritis", "context", "rheumatoid arthritis or lupus",
         "OA: \"rheumatoid arthritis or lupus\""),
    _tri("recent_surgery", "context", "major surgery (any leg or knee operation included) in the last 12 weeks",
         "Wells: major surgery within 12 weeks"),
    _tri("recent_immobilisation", "context",
         "leg in a cast or brace, or confined to bed for 3 days or more, in the last 12 weeks",
         "Wells: plaster immobilisation, bedridden >= 3 days"),
    _tri("long_travel", "context", "a journey of 4 hours or more sitting, in the last 4 weeks", "VTE risk factor"),
    _tri("previous_vte", "context", "a previous DVT or pulmonary embolism", "Wells (2003): previously documented DVT"),
    _tri("active_cancer", "context", "cancer under treatment, treated in the last 6 months, or palliative",
         "Wells: active cancer"),
    _tri("hormonal_therapy", "context", "combined contraceptive pill, HRT or other oestrogen therapy "
         "(for a male, no is read as unknown)", "VTE risk factor"),
    Field("onset", "category", "onset", "how the pain began", "", allowed=("sudden", "gradual")),
    Field("injury_event", "category", "onset", "what happened when it began",
          "hamstring \"pulled too far\"; ACL \"suddenly change direction\"; meniscus \"bending or "
          "squatting\"; PCL \"falling directly onto the knee\"",
          allowed=("none", "overstretch_or_sprint", "twist_or_direction_change",
                   "deep_bend_or_squat", "fall_onto_knee", "direct_blow")),
    _tri("heard_pop", "onset", "heard a pop when it happened",
         "meniscus, ACL: \"you will typically hear a loud pop\""),
    _tri("pain_delayed_onset", "onset", "pain began hours to days after the event",
         "meniscus: \"pain may not be apparent immediately\""),
    _tri("swelling_within_hours", "onset", "after an injury, the knee swelled within a few hours (not the next day)",
         "haemarthrosis: ACL tear, fracture"),
    Field("symptom_duration_days", "float", "onset",
          "days since the symptoms began; for an injury, since the injury (a cramp that began minutes ago is ~0.001); "
          "at most (age + 1) x 365.25, as they began after birth",
          "cramp \"a few seconds and several minutes\"; OA chronic", minimum=0),
    _tri("muscle_spasm", "symptom", "sudden, very painful muscle spasm", "leg cramp"),
    _tri("cramp_calf_or_thigh", "symptom", "cramp felt in the calf or thigh too", "leg cramp (overuse)"),
    _tri("swelling_behind_knee", "symptom", "a lump or pocket of swelling at the back of the knee",
         "Baker's cyst"),
    _tri("pressure_behind_knee", "symptom", "pressure or tightness at the back of the knee", "Baker's cyst"),
    _tri("tingling", "symptom", "tingling around the back of the knee", "Baker's cyst"),
    _tri("knee_swelling", "symptom", "the knee itself is swollen", "meniscus, ACL, PCL, runner's knee"),
    _tri("leg_swelling", "symptom", "the lower leg / calf is swollen", "DVT"),
    _tri("visible_veins", "symptom", "prominent, clearly visible surface veins", "DVT"),
    _tri("skin_warm", "symptom", "skin warm to the touch / joint feels hot", "DVT, OA"),
    _tri("skin_red", "symptom", "skin slightly red", "DVT"),
    _tri("pain_on_standing", "symptom", "pain in knee and leg when standing up", "DVT"),
    _tri("giving_way", "symptom", "knee gives out or buckles", "runner's knee, meniscus, ACL"),
    _tri("locking", "symptom", "knee locks when bearing weight", "meniscus"),
    _tri("grinding", "symptom", "grinding or cracking when bending", "runner's knee, OA"),
    _tri("reduced_range_of_motion", "symptom", "cannot fully bend or straighten",
         "meniscus, PCL, OA, runner's knee"),
    _tri("stiffness", "symptom", "stiffness of the knee", "PCL, OA"),
    _tri("weakness", "symptom", "weakness of the knee or leg", "runner's knee, meniscus"),
    _tri("pain_back_of_thigh", "symptom", "pain in the back of the thigh", "hamstring"),
    _tri("pain_all_around_knee", "symptom",
         "pain or discomfort all around the knee and upper leg, not only behind it", "OA"),
    _tri("calf_tenderness", "symptom", "the calf hurts when pressed (along the deep veins)",
         "Wells: localised tenderness along the deep veins"),
    _tri("whole_leg_swollen", "symptom", "the whole leg is swollen, thigh and calf", "Wells: entire leg swollen"),
    _tri("unable_to_bear_weight", "symptom", "cannot take four steps on the leg", "Ottawa knee rule"),
    _tri("bruising", "symptom", "bruising at the back of the thigh, knee or calf",
         "hamstring tear, ruptured Baker's cyst (crescent sign)"),
    _tri("breathless_or_chest_pain", "symptom",
         "new breathlessness, chest pain on breathing in, or coughing blood", "pulmonary embolism: emergency"),
    _tri("fever", "symptom", "fever, shivers or feeling feverish", "septic joint, cellulitis: emergency"),
    _tri("foot_cold_or_pale", "symptom", "the foot or lower leg is cold, pale or numb",
         "acute limb ischaemia: emergency"),
    _tri("pulsating_lump", "symptom", "a lump behind the knee that pulses", "popliteal artery aneurysm"),
)
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
_BY_NAME = {f.name: f for f in FIELDS}
TRISTATE_FIELDS = tuple(f.name for f in FIELDS if f.kind == "tristate")
CATEGORY_FIELDS = tuple(f.name for f in FIELDS if f.kind == "category")
NUMERIC_FIELDS = tuple(f.name for f in FIELDS if f.kind in ("integer", "float"))
SYMPTOMS = tuple(f.name for f in FIELDS if f.group == "symptom")
# the screen's signs, of conditions outside the nine (docs/case-schema.md): a "no" to them says
# nothing of what the knee pain is like
SCREEN_SIGNS = ("breathless_or_chest_pain", "fever", "foot_cold_or_pale", "pulsating_lump")
# questions never asked of a male, whose "no" to them tells nothing (the parser reads it as
# unknown, the rules as "no"): pregnancy, and the pill or HRT (men's rate a tenth of a percent or so)
MALE_NOT_ASKED = ("pregnant", "hormonal_therapy")
# yes/no answers that depend on the condition only (not on the latent severity)
CONTEXT_TRISTATES = tuple(f.name for f in FIELDS if f.group == "context" and f.kind == "tristate")
ONSET_TRISTATES = tuple(f.name for f in FIELDS if f.group == "onset" and f.kind == "tristate")
ID_COLUMN = "case_id"
# a rejects file's first columns, before each rejected row as it was read
REJECT_META = ["reject_file", "reject_row", "reject_reason"]
LABEL_COLUMN = "condition"
SEVERITY_COLUMN = "severity"
SEVERITIES = ("mild", "moderate", "severe")


def is_sign(name: str) -> bool:
    """Whether a field is a sign a person can notice (a yes/no symptom or a screen sign), not the
    history, age or how the pain began: a "no" to it today can be a "yes" tomorrow."""
    return name in SCREEN_SIGNS or (name in SYMPTOMS and field(name).kind == "tristate")


def is_settled(name: str) -> bool:
    """Whether a field's answer holds for the days a safety net covers: a history, an age, how the
    pain began; not a sign, which can come and go, nor the pain's duration, which grows."""
    return not is_sign(name) and name != "symptom_duration_days"


def field(name: str) -> Field:
    """Return the :class:`Field` called ``name``; ``KeyError`` names the known fields."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a case field; known fields: {', '.join(FIELD_NAMES)}") from None


SEX_MALE: int = field("sex").allowed.index("male")  # the code of sex == male


def max_duration_days(age: Any) -> Any:
    """The longest ``symptom_duration_days`` a patient aged ``age`` (whole years) can report: the
    symptoms began after birth, and a whole-year age may be up to a year short of the time lived.
    ``age`` is a number or a numpy array (the result is of the same kind)."""
    return (age + 1) * DAYS_PER_YEAR


def whole_number(value: Any) -> int | None:
    """``value`` as an int if it is a whole number of Python's or numpy's integer types, else None
    (a bool is not a count, a float is not one even when whole)."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def top_k_problem(top_k: Any) -> str | None:
    """Why ``top_k`` is not a number of conditions to list (``predict``'s ``top_k``, ``kneepain
    score --top-k``), or None if it is one: a :func:`whole_number` from 1 to the number of conditions."""
    count = whole_number(top_k)
    return None if count is not None and 1 <= count <= len(CONDITIONS) else f"must be an integer in 1..{len(CONDITIONS)}"


REFERENCE_COLUMN = "reference_level"  # a clinician's triage level of a labelled case
LABELLED_COLUMNS = (LABEL_COLUMN, REFERENCE_COLUMN)  # what labelled cases add to the case fields
# every column the project reads by name; a header's words are joined to match them (:func:`normalise_header`)
NAMED_COLUMNS = frozenset({*FIELD_NAMES, ID_COLUMN, LABEL_COLUMN, SEVERITY_COLUMN, REFERENCE_COLUMN})
BETWEEN_WORDS = re.compile(r"[\s-]+")  # what separates a name's words, read as one underscore


def normalise_header(name: object) -> str:
    """A column name as matched against the schema: invisible format characters (a byte-order
    mark, a zero-width space) and surrounding spaces removed, lower case (``" Age"`` is ``age``),
    and spaces and hyphens between words read as one underscore where that names a field,
    ``case_id`` or a label column (``Foot cold or pale`` and ``foot-cold-or-pale`` are
    ``foot_cold_or_pale``: such a header read as no field would leave its answers unknown, a red
    flag among them). Other columns keep their words (``Follow-up`` and ``Follow up`` stay two
    columns)."""
    return _normalised_text(name) if type(name) is str else _normalised(name)


def quoted_name(name: str) -> str:
    """A column name as a list of names shows it, quoted as CSV quotes a field where it holds a
    comma or a quote or begins or ends with a space (``"note, free"``): in ``a, b`` it would read
    as two names."""
    if "," in name or '"' in name or name != name.strip():
        return '"' + name.replace('"', '""') + '"'
    return name


def visible(text: str) -> str:
    """``text`` without its invisible format characters (Unicode's Cf: a byte-order mark, a
    zero-width space, a soft hyphen), which a spreadsheet's cell may hold unseen: ``"sex\u200b"``
    was a column of its own, and ``"yes\u200b"`` an answer "not allowed" that looked allowed."""
    return text if text.isprintable() else "".join(c for c in text if unicodedata.category(c) != "Cf")


def _normalised(name: object) -> str:
    folded = visible(str(name)).strip().lower()
    joined = BETWEEN_WORDS.sub("_", folded)
    return joined if joined in NAMED_COLUMNS else folded


# a request or a file names the same few dozen columns again and again (each call of predict() folds them)
_normalised_text = functools.lru_cache(maxsize=4096)(_normalised)


def first_spellings(column_lists) -> dict[str, str]:
    """Over several inputs' column names, each name as matched (:func:`normalise_header`) -> its
    spelling where first seen (``Age`` in one input and ``age`` in another are one column)."""
    first: dict[str, str] = {}
    for names in column_lists:
        for name in names:
            first.setdefault(normalise_header(name), name)
    return first


def repeated_columns(names) -> dict[str, list[str]]:
    """Column names that fold to the same field name (``age`` and ``Age ``): {folded: spellings}."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(normalise_header(name), []).append(str(name))
    return {k: v for k, v in groups.items() if len(v) > 1}


def data_dictionary_markdown() -> str:
    """The README's data dictionary, generated from :data:`FIELDS`."""
    lines = ["| column | required | type | allowed | meaning | seed basis |", "|---|---|---|---|---|---|"]
    for f in FIELDS:
        kind = {"tristate": "tri-state", "category": "category"}.get(f.kind, f.kind)
        allowed = f.allowed_text if f.kind != "tristate" else "yes / no / unknown"
        lines.append(f"| `{f.name}` | {'yes' if f.required else 'no'} | {kind} | {allowed} | "
                     f"{f.meaning} | {f.seed_basis.replace('|', '/')} |")
    return "\n".join(lines)
