"""Generated cases as short prose, so a person can read the data."""

from __future__ import annotations

import math

import pandas as pd

from pipeline.core.schema import CONDITION_LABELS, LABEL_COLUMN, SEVERITY_COLUMN, SYMPTOMS, field
from pipeline.core.wording import span

__all__ = ["vignette"]

_EVENT = {
    "none": "without any injury",
    "overstretch_or_sprint": "while sprinting or overstretching",
    "twist_or_direction_change": "on a twist or sudden change of direction",
    "deep_bend_or_squat": "while bending deeply or squatting",
    "fall_onto_knee": "after falling onto the knee",
    "direct_blow": "after a blow or kick to the leg",
}
_ACTIVITY = {"none": "does no regular sport", "running": "runs", "sprint_pivot_sport":
             "plays a sprint-and-pivot sport", "other_exercise": "does other exercise"}
_HISTORY = {"smoker": "smokes", "sedentary": "is mostly sedentary", "pregnant": "is pregnant or gave birth in the last six weeks",
            "stretches_before_exercise": "stretches before exercise",
            "recent_dehydration": "was recently dehydrated",
            "inflammatory_arthritis": "has rheumatoid arthritis or lupus",
            "recent_surgery": "had an operation in the last 12 weeks",
            "recent_immobilisation": "had the leg in a cast or brace, or was bed-bound, recently",
            "long_travel": "travelled for 4 hours or more recently", "previous_vte": "had a DVT or embolism before",
            "active_cancer": "has active cancer", "hormonal_therapy": "takes the pill, HRT or other oestrogen"}


def _known(v) -> bool:
    return not (v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)))


def vignette(case: pd.Series) -> str:
    """One case (a row of generated data) as a paragraph."""
    who = "woman" if case["sex"] == "female" else "man"
    parts = [f"A {int(case['age'])}-year-old {who}"]
    if _known(case.get("bmi")):
        parts[0] += f" (BMI {case['bmi']:.1f})"
    facts = [text for k, text in _HISTORY.items() if _known(case.get(k)) and case[k]]
    if _known(case.get("activity")):
        facts.insert(0, _ACTIVITY[case["activity"]])
    sentence = parts[0] + (" who " + ", ".join(facts[:-1]) + (" and " if len(facts) > 1 else "") + facts[-1]
                           if facts else "") + "."
    onset = []
    if _known(case.get("onset")):
        onset.append(f"The pain began {case['onset']}ly")
    else:
        onset.append("The pain began")
    if _known(case.get("injury_event")):
        onset.append(_EVENT[case["injury_event"]])
    if _known(case.get("symptom_duration_days")):
        onset.append(f"{span(case['symptom_duration_days'])} ago")
    text = [sentence, " ".join(onset) + "."]
    if _known(case.get("heard_pop")) and case["heard_pop"]:
        text.append("There was a pop.")
    if _known(case.get("pain_delayed_onset")) and case["pain_delayed_onset"]:
        text.append("The pain came on hours to days later.")
    yes = [field(s).meaning for s in SYMPTOMS if _known(case.get(s)) and case[s]]
    no = [field(s).meaning for s in SYMPTOMS if _known(case.get(s)) and not case[s]]
    unknown = sum(not _known(case.get(s)) for s in SYMPTOMS)
    text.append("Reports: " + ("; ".join(yes) if yes else "no listed symptom") + ".")
    if no:
        text.append(f"Denies {len(no)} other symptom(s); {unknown} not asked.")
    if LABEL_COLUMN in case and _known(case[LABEL_COLUMN]):
        sev = f", {case[SEVERITY_COLUMN]}" if SEVERITY_COLUMN in case else ""
        text.append(f"[{CONDITION_LABELS[case[LABEL_COLUMN]]}{sev}]")
    return " ".join(text)
