"""An interactive session: age and sex, then the single most useful question, one at a time.

Plain line-by-line text in and out (no terminal features), so it works on a terminal, with piped
input, and in tests with :class:`io.StringIO`. After each answer the running top three and the
triage are shown. The session stops (thresholds in ``configs/questions.yaml``, section ``ask``):

- when the differential holds one condition with probability at least ``min_confidence`` (the
  conformal set is calibrated on cases with most answers given; with only age and sex it can
  hold a single condition at 20%);
- when the best question's score is below ``min_score``;
- after ``min_questions`` answers, when no answer to the best ``triage_check_questions``
  questions with a predictive probability of at least ``negligible_answer_probability`` would
  change the triage level;
- at ``max_questions``, or at the end of the input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from scipy.special import logsumexp

from pipeline.core.oracle import oracle_log_joint
from pipeline.core.schema import CONDITION_LABELS, CONDITIONS, field
from pipeline.interact.questions import QuestionsConfig, load_questions_config, next_questions, resolve_kb
from pipeline.serve.loading import LoadedModel
from pipeline.serve.predict import get_model, predict

__all__ = ["CLOSING", "run_session"]

CLOSING = ("This is information, not a diagnosis: seek advice from a doctor or another qualified "
           "medical professional.")
_DONT_KNOW = {"", "d", "?", "unknown", "don't know", "dont know", "dk"}
_YES, _NO = {"y", "yes"}, {"n", "no"}


class _EndOfInput(Exception):
    """The input ended (EOF) before an answer."""


class _Session:
    def __init__(self, input: TextIO, output: TextIO):  # noqa: A002 - the public keyword's name
        self.input, self.output = input, output

    def say(self, text: str = "") -> None:
        self.output.write(text + "\n")

    def read(self, prompt: str) -> str:
        self.output.write(prompt)
        self.output.flush()
        line = self.input.readline()
        if line == "":
            raise _EndOfInput
        if not self.input.isatty():  # piped answers are echoed, so the transcript reads like a dialogue
            self.output.write(line.rstrip("\r\n") + "\n")
        return line.strip()

    def age(self) -> int:
        f = field("age")
        low, high = int(f.minimum or 0), int(f.maximum or 0)
        while True:
            text = self.read(f"Age in years ({low}-{high}): ")
            if text.isdigit() and low <= int(text) <= high:
                return int(text)
            self.say(f"  Please enter a whole number from {low} to {high} (got {text!r}).")

    def sex(self) -> str:
        allowed = field("sex").allowed
        while True:
            text = self.read(f"Sex ({'/'.join(allowed)}): ").lower()
            match = [a for a in allowed if text and a.startswith(text)]
            if len(match) == 1:
                return match[0]
            self.say(f"  Please answer {' or '.join(allowed)} (got {text!r}).")

    def question(self, number: int, name: str) -> str | None:
        """The answer's text, or None for "don't know"."""
        f = field(name)
        meaning = f.meaning[0].upper() + f.meaning[1:]
        if f.kind == "tristate":
            while True:
                text = self.read(f"Q{number}. {meaning}? [y/n/d] ").lower()
                if text in _YES or text in _NO:
                    return "yes" if text in _YES else "no"
                if text in _DONT_KNOW:
                    return None
                self.say(f"  Please answer y (yes), n (no) or d (don't know; blank also means don't know); got {text!r}.")
        self.say(f"Q{number}. {meaning}?")
        for i, value in enumerate(f.allowed, start=1):
            self.say(f"  {i}) {value.replace('_', ' ')}")
        while True:
            text = self.read(f"Choose 1-{len(f.allowed)}, or d for don't know: ").lower()
            if text in _DONT_KNOW:
                return None
            if text.isdigit() and 1 <= int(text) <= len(f.allowed):
                return f.allowed[int(text) - 1]
            if text.replace(" ", "_") in f.allowed:
                return text.replace(" ", "_")
            self.say(f"  Please choose a number from 1 to {len(f.allowed)}, or d (don't know); got {text!r}.")


def _top3(row: dict) -> str:
    p = np.array([row[f"p_{c}"] for c in CONDITIONS])
    return ", ".join(f"{CONDITION_LABELS[CONDITIONS[i]]} {p[i]:.0%}" for i in np.argsort(-p, kind="stable")[:3])


def _status(row: dict) -> str:
    text = f"  Now: {_top3(row)}"
    if "triage" in row:
        text += (f"; triage: {row['triage'].replace('_', ' ')}; differential: "
                 + ", ".join(CONDITION_LABELS[c] for c in row["differential"].split("|")))
    return text


def _triage_could_change(case: dict, fields: list[str], model: LoadedModel, kb, current: str,
                         cfg: QuestionsConfig) -> bool:
    """Would a plausible answer (predictive probability >= the negligible level) to any of
    ``fields`` change the triage level?"""
    variants = [{**case, name: value} for name in fields
                for value in (("yes", "no") if field(name).kind == "tristate" else field(name).allowed)]
    if not variants:
        return False
    p_answer = np.exp(logsumexp(oracle_log_joint(kb, variants), axis=1) - logsumexp(oracle_log_joint(kb, case)))
    triage = predict(variants, model=model)["triage"].to_numpy()
    return bool(np.any((p_answer >= cfg.ask.negligible_answer_probability) & (triage != current)))


def run_session(model: str | Path | LoadedModel | None = None, *, input: TextIO | None = None,  # noqa: A002
                output: TextIO | None = None, max_questions: int = 15,
                config: QuestionsConfig | str | Path | None = None) -> dict[str, Any]:
    """Run one question-and-answer session and return what was learned.

    Parameters
    ----------
    model : models folder, MLflow model URI, LoadedModel, or None (the project's ``models/``)
    input, output : text streams, default ``sys.stdin`` and ``sys.stdout``
        Answers are read one line each: ``y``/``yes``, ``n``/``no``, ``d``/``?``/``unknown`` or a
        blank line for "don't know"; for a category, its number or its name.
    max_questions : int, default=15
        Questions after age and sex, at most.
    config : QuestionsConfig or path, optional
        Default ``configs/questions.yaml``.

    Returns
    -------
    dict
        ``case`` (the answers as a case dict; "don't know" answers are left out), ``prediction``
        (the final :func:`pipeline.serve.predict` row as a dict, or None if the input ended before age
        and sex), ``answers`` (every question asked with its answer, None for "don't know") and
        ``stopped_because``.
    """
    if not isinstance(max_questions, (int, np.integer)) or isinstance(max_questions, bool) or max_questions < 0:
        raise ValueError(f"max_questions == {max_questions!r}, must be a non-negative integer.")
    io = _Session(sys.stdin if input is None else input, sys.stdout if output is None else output)
    loaded = get_model(model)
    kb = resolve_kb(loaded)
    cfg = load_questions_config(config)
    case: dict[str, Any] = {}
    answers: list[tuple[str, str | None]] = []
    row: dict | None = None
    io.say("A few questions about pain behind the knee. Answer y (yes), n (no) or d (don't know);")
    io.say("a blank line also means don't know. " + CLOSING)
    try:
        case["age"] = io.age()
        case["sex"] = io.sex()
        while True:
            row = predict(case, model=loaded).iloc[0].to_dict()
            io.say(_status(row))
            if len(answers) >= max_questions:
                stopped = f"asked the maximum of {max_questions} questions"
                break
            if row.get("differential_size") == 1 and row["confidence"] >= cfg.ask.min_confidence:
                stopped = "one condition remains in the differential"
                break
            best = next_questions(case, loaded, k=max(1, cfg.ask.triage_check_questions), config=cfg, kb=kb,
                                  exclude=[name for name, _ in answers])
            if best.empty:
                stopped = "no questions are left to ask"
                break
            if best["score"].iloc[0] < cfg.ask.min_score:
                stopped = "no remaining question is expected to change the picture much"
                break
            answered = sum(a is not None for _, a in answers)
            if ("triage" in row and answered >= cfg.ask.min_questions and not _triage_could_change(
                    case, list(best["field"][:cfg.ask.triage_check_questions]), loaded, kb, row["triage"], cfg)):
                stopped = "no likely answer to the best questions would change the triage"
                break
            name = best["field"].iloc[0]
            answer = io.question(len(answers) + 1, name)
            answers.append((name, answer))
            if answer is not None:
                case[name] = answer
    except _EndOfInput:
        stopped = "the input ended"
    io.say()
    io.say(f"Summary ({stopped}):")
    if row is not None:
        given = ", ".join(f"{k}: {v}" for k, v in case.items())
        unknown = [name for name, a in answers if a is None]
        io.say(f"  Answers: {given}" + (f"; don't know: {', '.join(unknown)}" if unknown else ""))
        io.say(f"  Most likely: {_top3(row)}")
        if "triage" in row:
            io.say(f"  Triage: {row['triage'].replace('_', ' ')} ({row['triage_reason']})")
            io.say(f"  Differential: {', '.join(CONDITION_LABELS[c] for c in row['differential'].split('|'))}")
            io.say(f"  Advice: {row['advice'].removesuffix(CLOSING).strip()}")
    io.say(CLOSING)
    return {"case": case, "prediction": row, "answers": answers, "stopped_because": stopped}
