"""The case record (docs/case-schema.md) as code: the one place that names columns and allowed values.

Everything else derives from here: the generator's columns, input parsing and validation
(:mod:`pipeline.core.parsing`), the features, the MLflow signature and the README's data
dictionary. This module is plain Python (no numpy or pandas), so the command line can read it
for its help without loading the scientific stack.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONDITIONS",
    "CONDITION_LABELS",
    "FIELDS",
    "FIELD_NAMES",
    "SCHEMA_VERSION",
    "TRISTATE_NO",
    "TRISTATE_YES",
    "UNKNOWN",
    "Field",
    "data_dictionary_markdown",
    "field",
    "normalise_header",
    ]

SCHEMA_VERSION = "1"
UNKNOWN = -1

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
    _tri("pregnant", "context", "currently pregnant (never yes when sex is male)",
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
    Field("onset", "category", "onset", "how the pain began", "", allowed=("sudden", "gradual")),
    Field("injury_event", "category", "onset", "what happened when it began",
          "hamstring \"pulled too far\"; ACL \"suddenly change direction\"; meniscus \"bending or "
          "squatting\"; PCL \"falling directly onto the knee\"",
          allowed=("none", "overstretch_or_sprint", "twist_or_direction_change",
                   "deep_bend_or_squat", "fall_onto_knee")),
    _tri("heard_pop", "onset", "heard a pop when it happened",
         "meniscus, ACL: \"you will typically hear a loud pop\""),
    _tri("pain_delayed_onset", "onset", "pain began hours to days after the event",
         "meniscus: \"pain may not be apparent immediately\""),
    Field("symptom_duration_days", "float", "onset",
          "how long the symptoms have lasted, in days (a cramp lasting minutes is ~0.001)",
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
)
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
_BY_NAME = {f.name: f for f in FIELDS}
TRISTATE_FIELDS = tuple(f.name for f in FIELDS if f.kind == "tristate")
CATEGORY_FIELDS = tuple(f.name for f in FIELDS if f.kind == "category")
NUMERIC_FIELDS = tuple(f.name for f in FIELDS if f.kind in ("integer", "float"))
SYMPTOMS = tuple(f.name for f in FIELDS if f.group == "symptom")
ID_COLUMN = "case_id"
LABEL_COLUMN = "condition"
SEVERITY_COLUMN = "severity"
SEVERITIES = ("mild", "moderate", "severe")


def field(name: str) -> Field:
    """Return the :class:`Field` called ``name``; ``KeyError`` names the known fields."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a case field; known fields: {', '.join(FIELD_NAMES)}") from None


def normalise_header(name: object) -> str:
    """A column name as matched against the schema: a byte-order mark and surrounding spaces
    removed, lower case (``" Age"`` is ``age``)."""
    return str(name).lstrip("\ufeff").strip().lower()


def data_dictionary_markdown() -> str:
    """The README's data dictionary, generated from :data:`FIELDS`."""
    lines = ["| column | required | type | allowed | meaning | seed basis |", "|---|---|---|---|---|---|"]
    for f in FIELDS:
        kind = {"tristate": "tri-state", "category": "category"}.get(f.kind, f.kind)
        allowed = f.allowed_text if f.kind != "tristate" else "yes / no / unknown"
        lines.append(f"| `{f.name}` | {'yes' if f.required else 'no'} | {kind} | {allowed} | "
                     f"{f.meaning} | {f.seed_basis.replace('|', '/')} |")
    return "\n".join(lines)
