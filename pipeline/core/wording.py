"""Plain-language wording of the case record: the question for each field and a label for each answer.

What a person reads (``kneepain ask``, the ``ask_next`` column, explanations) comes from here, never a
field name or an internal value. Plain Python, like :mod:`pipeline.core.schema`, which it completes.
"""

from __future__ import annotations

from pipeline.core.schema import FIELDS, field

__all__ = ["QUESTIONS", "ANSWER_LABELS", "SPAN_QUESTION", "answer_label", "counted", "question", "span", "two_numbers"]


def counted(n: int, noun: str) -> str:
    """``n`` and its noun in the singular or the plural, as a message counts things: ``1 row``,
    ``1,500 rows``, ``0 valid rows``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def two_numbers(a: float, b: float, least: int = 2, most: int = 6) -> tuple[str, str]:
    """``a`` and ``b`` in the fewest decimals, from ``least`` to ``most``, that tell them apart (in
    ``least`` where none do: equal numbers): a score compared with its threshold, or two log
    losses, read "1.02 > 1.02" at two."""
    for digits in range(least, max(least, most) + 1):
        shown = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if shown[0] != shown[1]:
            return shown
    return f"{a:.{least}f}", f"{b:.{least}f}"


def span(days: float) -> str:
    """A span of time given in days, in the unit a person would say it, rounded: ``4 minutes``,
    ``1 hour``, ``3 days``, ``2 months`` (``under a minute`` below one)."""
    minutes = days * 24 * 60
    if minutes < 0.5:
        return "under a minute"
    if minutes < 59.5:
        return counted(round(minutes), "minute")
    if days * 24 < 47.5:
        return counted(round(days * 24), "hour")
    if days < 59.5:
        return counted(round(days), "day")
    return counted(round(days / 30.4), "month")


QUESTIONS: dict[str, str] = {
    "age": "How old are you (in years)?",
    "sex": "What is your sex?",
    "pregnant": "Are you pregnant, or have you given birth in the last six weeks?",
    "bmi": "What is your body-mass index (weight in kg divided by the square of height in metres)?",
    "smoker": "Do you smoke?",
    "sedentary": "Do you spend most of your day sitting, with little physical activity?",
    "activity": "What is your main physical activity?",
    "stretches_before_exercise": "Do you usually stretch before exercise?",
    "recent_dehydration": "Have you recently been dehydrated (for example after heavy sweating or illness)?",
    "inflammatory_arthritis": "Do you have rheumatoid arthritis or lupus?",
    "recent_surgery": "Have you had an operation (any leg or knee operation included) in the last 12 weeks?",
    "recent_immobilisation": "In the last 12 weeks, was your leg in a cast or brace, or were you in bed for 3 days or more?",
    "long_travel": "In the last 4 weeks, did you sit through a journey of 4 hours or more?",
    "previous_vte": "Have you ever had a blood clot in a leg (DVT) or in the lungs (pulmonary embolism)?",
    "active_cancer": "Are you being treated for cancer, or were you in the last 6 months?",
    "hormonal_therapy": "Do you take the combined contraceptive pill, HRT or another oestrogen treatment?",
    "onset": "Did the pain start suddenly or come on gradually?",
    "injury_event": "What were you doing when the pain started?",
    "heard_pop": "Did you hear or feel a pop when it happened?",
    "pain_delayed_onset": "Did the pain start hours or days after that moment, rather than straight away?",
    "swelling_within_hours": "If you injured the knee, did it swell within a few hours (not the next day)?",
    "symptom_duration_days": "How many days ago did it start?",
    "muscle_spasm": "Was there a sudden, very painful muscle spasm?",
    "cramp_calf_or_thigh": "Do you feel cramp in the calf or thigh too?",
    "swelling_behind_knee": "Is there a lump or pocket of swelling at the back of the knee?",
    "pressure_behind_knee": "Do you feel pressure or tightness at the back of the knee?",
    "tingling": "Do you feel tingling around the back of the knee?",
    "knee_swelling": "Is the knee itself swollen?",
    "leg_swelling": "Is your lower leg or calf swollen?",
    "visible_veins": "Can you see swollen or prominent veins on the leg?",
    "skin_warm": "Is the skin of the knee or leg warm to the touch?",
    "skin_red": "Is the skin of the knee or leg red?",
    "pain_on_standing": "Do the knee and leg hurt when you stand up?",
    "giving_way": "Does the knee give way or buckle?",
    "locking": "Does the knee lock or catch when you put weight on it?",
    "grinding": "Does the knee grind or crack when you bend it?",
    "reduced_range_of_motion": "Are you unable to fully bend or straighten the knee?",
    "stiffness": "Is the knee stiff?",
    "weakness": "Does the knee or leg feel weak?",
    "pain_back_of_thigh": "Do you have pain in the back of the thigh?",
    "pain_all_around_knee": "Is the pain all around the knee and upper leg, not only behind it?",
    "calf_tenderness": "Does your calf hurt when you press along the back of it?",
    "whole_leg_swollen": "Is the whole leg swollen, thigh and calf?",
    "unable_to_bear_weight": "Are you unable to take four steps on that leg?",
    "bruising": "Is there bruising at the back of the thigh, knee or calf?",
    "breathless_or_chest_pain": "Are you newly short of breath, have chest pain when breathing in, or coughing up blood?",
    "fever": "Do you have a fever or shivers, or feel feverish?",
    "foot_cold_or_pale": "Is the foot or lower leg cold, pale or numb?",
    "pulsating_lump": "Is there a lump behind the knee that pulses (beats with your heart)?",
}

ANSWER_LABELS: dict[str, dict[str, str]] = {
    "sex": {"female": "female", "male": "male"},
    "activity": {"none": "no regular exercise", "running": "running",
                 "sprint_pivot_sport": "a stop-start sport (football, tennis, basketball)",
                 "other_exercise": "other exercise"},
    "onset": {"sudden": "suddenly", "gradual": "gradually"},
    "injury_event": {"none": "nothing in particular", "overstretch_or_sprint": "sprinting or overstretching",
                     "twist_or_direction_change": "twisting or changing direction",
                     "deep_bend_or_squat": "bending deeply or squatting", "fall_onto_knee": "falling onto the knee",
                     "direct_blow": "a direct blow to the knee"},
}


# how `ask_next` asks the duration, whose answers are spans (QUESTIONS' asks for the number of days)
SPAN_QUESTION = "How long ago did the pain start: minutes, hours, days, weeks or months?"


def question(name: str) -> str:
    """The plain question that asks for field ``name``."""
    field(name)  # a clear KeyError for an unknown name
    return QUESTIONS[name]


def answer_label(name: str, value: str | float | int) -> str:
    """The plain label of answer ``value`` of field ``name`` (``yes``/``no`` stay as they are, a
    number is written as it was given)."""
    f = field(name)
    if f.kind == "category":
        return ANSWER_LABELS[name][str(value)]
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _check() -> None:
    missing = [f.name for f in FIELDS if f.name not in QUESTIONS]
    unlabelled = [f"{f.name}={v}" for f in FIELDS if f.kind == "category" for v in f.allowed
                  if v not in ANSWER_LABELS.get(f.name, {})]
    if missing or unlabelled or set(QUESTIONS) - {f.name for f in FIELDS}:
        raise RuntimeError(f"wording incomplete: no question for {missing}, no label for {unlabelled}")


_check()
