"""An interactive session: age and sex, the emergency screen, then the single most useful question.

Plain line-by-line text in and out, wrapped to the terminal's width, so it works on a terminal,
with piped input, and in tests with :class:`io.StringIO`. Everything shown is plain language
(:mod:`pipeline.core.wording`), never a field name or an internal value. At any prompt:

- ``b`` goes back one answer, ``q`` (or Ctrl-C, or the end of the input) stops with the summary
  of every answer given so far (in the middle of the screen's signs too);
- ``+ words`` answers another question now: the questions holding those words are offered
  (``+ calf swollen``, ``+ days ago`` for a number), then the session goes on. An answer that
  cannot stand with the others (a duration longer than the age allows) is not kept, and the
  session says why.

Right after age and sex, while they could still change the level, the screen's one-sign rules
(pulmonary embolism, limb ischaemia, popliteal aneurysm, infection) are asked together in one
question, and one by one only if the answer is yes. After each answer the running top three and
the triage are shown. The session stops (thresholds in ``configs/questions.yaml``, section ``ask``):

- when the differential holds one condition with probability at least ``min_confidence`` and
  the decision layer's ``ask_next`` ranks no question not asked yet (a leg cramp at 91% with
  veins standing out is asked whether the calf hurts when pressed, which would send a clot's
  case the same day, unless the next rule ends the session first);
- when the best question's score is below ``min_score``;
- after ``min_questions`` answers, when the decision layer's ``ask_next`` ranks no question not
  asked yet (no plausible answer to an unanswered question would change the triage level, and no
  same-day rule still needs one answered, but for those answered "don't know"); from then on, the
  questions it ranks are asked first. A row lists its first ``ask_next.max_questions``; once
  those were all answered "don't know" (which the model reads as unasked, so they stay listed),
  the questions ranked past them are asked (on 2,000 clots and 2,000 other generated cases
  answering truthfully, with the generator's unknowns as "don't know": 1,547 clots sent the same
  day against 1,489 when such sessions stopped there, for one more of the others, and 0.27 more
  questions each);
- at ``max_questions``, or when the person stops.
"""

from __future__ import annotations

import math
import re
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from pipeline.core.config import LEVELS
from pipeline.core.errors import CaseValidationError
from pipeline.core.parsing import parse_records, premise_denied
from pipeline.core.schema import CONDITION_LABELS, CONDITIONS, field
from pipeline.core.wording import QUESTIONS, SPAN_QUESTION, answer_label, question
from pipeline.decision.safety import DURATION
from pipeline.decision.triage import UNCERTAIN_REASON
from pipeline.interact.questions import QuestionsConfig, load_questions_config, next_questions, resolve_kb
from pipeline.serve.loading import LoadedModel
from pipeline.serve.predict import get_model, predict

__all__ = ["CLOSING", "run_session"]

CLOSING = ("This is information, not a diagnosis: seek advice from a doctor or another qualified "
           "medical professional.")
_DONT_KNOW = {"", "d", "?", "unknown", "don't know", "dont know", "dk"}
_YES, _NO = {"y", "yes"}, {"n", "no"}
_HELP = "(b: back one answer, q: stop, + words: answer another question now)"
_FIELD_OF_QUESTION = {q: n for n, q in QUESTIONS.items()} | {SPAN_QUESTION: DURATION}  # as ask_next asks it
_Answer = str | float | int | None  # a category's or yes/no value, a number, or None for "don't know"


class _EndOfInput(Exception):
    """The input ended (EOF) before an answer."""


class _Quit(Exception):
    """The person asked to stop."""


class _Back(Exception):
    """The person asked to go back one answer."""


class _Volunteer(Exception):
    """The person wants to answer another question now (``+ words``)."""

    def __init__(self, words: str):
        self.words = words


class _Session:
    def __init__(self, input: TextIO, output: TextIO):  # noqa: A002 - the public keyword's name
        self.input, self.output = input, output
        self.width = max(40, min(100, shutil.get_terminal_size((80, 24)).columns))

    def say(self, text: str = "", indent: str = "") -> None:
        lines = textwrap.wrap(text, self.width, initial_indent=indent,
                              subsequent_indent=" " * len(indent) + "  ") or [""]
        self.output.write("\n".join(lines) + "\n")

    def read(self, prompt: str, *, commands: bool = True) -> str:
        self.output.write("\n".join(textwrap.wrap(prompt, self.width - 8, subsequent_indent="  ")) + " ")
        self.output.flush()
        line = self.input.readline()
        if line == "":
            raise _EndOfInput
        if not self.input.isatty():  # piped answers are echoed, so the transcript reads like a dialogue
            self.output.write(line.rstrip("\r\n") + "\n")
        text = line.strip()
        if commands:
            if text.lower() in ("q", "quit"):
                raise _Quit
            if text.lower() in ("b", "back"):
                raise _Back
            if text.startswith("+"):
                raise _Volunteer(text[1:].strip())
        return text

    def age(self) -> int:
        f = field("age")
        low, high = int(f.minimum or 0), int(f.maximum or 0)
        while True:
            text = self.read(f"Age in years ({low}-{high}): ", commands=False)
            if text.lower() in ("q", "quit"):
                raise _Quit
            if text.lower() in ("b", "back"):
                self.say("Nothing to go back to: the age is the first answer.", "  ")
                continue
            if _digits(text) and low <= int(text) <= high:
                return int(text)
            self.say(f"Please enter a whole number from {low} to {high} (got {text!r}).", "  ")

    def sex(self) -> str:
        allowed = field("sex").allowed
        while True:
            text = self.read(f"Sex ({'/'.join(allowed)}): ", commands=False).lower()
            if text in ("q", "quit"):
                raise _Quit
            if text in ("b", "back"):
                raise _Back
            match = [a for a in allowed if text and a.startswith(text)]
            if len(match) == 1:
                return match[0]
            self.say(f"Please answer {' or '.join(allowed)} (got {text!r}).", "  ")

    def yes_no(self, prompt: str) -> str | None:
        while True:
            text = self.read(f"{prompt} [y/n/d] ").lower()
            if text in _YES or text in _NO:
                return "yes" if text in _YES else "no"
            if text in _DONT_KNOW:
                return None
            self.say(f"Please answer y (yes), n (no) or d (don't know; blank also means don't know); got {text!r}. "
                     + _HELP, "  ")

    def question(self, number: int | None, name: str) -> str | float | int | None:
        """The answer's value, or None for "don't know"."""
        lead = f"Q{number}. " if number is not None else ""
        f = field(name)
        if f.kind == "tristate":
            return self.yes_no(lead + question(name))
        if f.kind in ("integer", "float"):
            return self.number(lead + question(name), name)
        self.say(lead + question(name))
        for i, value in enumerate(f.allowed, start=1):
            self.say(f"{i}) {answer_label(name, value)}", "  ")
        while True:
            text = self.read(f"Choose 1-{len(f.allowed)}, or d for don't know: ").lower()
            if text in _DONT_KNOW:
                return None
            if _digits(text) and 1 <= int(text) <= len(f.allowed):
                return f.allowed[int(text) - 1]
            self.say(f"Please choose a number from 1 to {len(f.allowed)}, or d (don't know); got {text!r}. " + _HELP,
                     "  ")


    def number(self, prompt: str, name: str) -> float | int | None:
        """A number in the field's range (a whole one for an integer field), or None for "don't know"."""
        f = field(name)
        while True:
            text = self.read(f"{prompt} ({f.allowed_text}; d for don't know): ").lower()
            if text in _DONT_KNOW:
                return None
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            in_range = (f.minimum is None or value >= f.minimum) and (f.maximum is None or value <= f.maximum)
            if math.isfinite(value) and in_range and (f.kind != "integer" or value.is_integer()):
                return int(value) if f.kind == "integer" else value
            self.say(f"Please enter {f.allowed_text}, or d (don't know); got {text!r}. " + _HELP, "  ")


def _labels(conditions: list[str]) -> str:
    return ", ".join(CONDITION_LABELS[c] for c in conditions)


def _top3(row: dict) -> str:
    p = np.array([row[f"p_{c}"] for c in CONDITIONS])
    return ", ".join(f"{CONDITION_LABELS[CONDITIONS[i]]} {p[i]:.0%}" for i in np.argsort(-p, kind="stable")[:3])


def _level_text(row: dict, model: LoadedModel, *, unplaced: bool = False) -> str:
    """What the row's level says to do; the same day's words where a "yes" to the same-day signs
    asked first names none of them (``unplaced``), which no answer below it can lower."""
    assert model.decision is not None  # only called when the row has a triage
    return model.decision.config.level_text["emergency" if unplaced else row["triage"]]


def _status(row: dict, model: LoadedModel, *, unplaced: bool = False) -> str:
    text = f"Now: {_top3(row)}"
    if "triage" in row:
        text += f". {_level_text(row, model, unplaced=unplaced)}"
    return text


def _screen_fields(model: LoadedModel) -> list[tuple[str, str]]:
    """The screen's one-sign rules: (field, its plain safety-net words)."""
    if model.decision is None:
        return []
    out = []
    for rule in model.decision.screen.rules:
        # a rule with an `any` part needs more than its sign: a "no" to its words is no "no" to the sign
        if len(rule.all) == 1 and not rule.any:
            (name, answers), = rule.all.items()
            if field(name).kind == "tristate" and answers == ["yes"]:
                out.append((name, rule.safety_net.text))
    return out


def _digits(text: str) -> bool:
    """Whether ``text`` is a whole number in ASCII digits (``str.isdigit`` also takes ``²``, which
    ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _find(words: str, exclude: set[str], case: dict[str, Any], fertile_max: float) -> list[str]:
    """Questions holding every one of ``words`` (case-insensitive), not yet answered, and none whose
    premise ``case`` denies (:func:`pipeline.core.parsing.premise_denied`: pregnancy and the pill
    or HRT for a male, pregnancy past ``fertile_max``, what happened at an injury when it reports
    none), as the main flow never asks them."""
    terms = [w for w in words.lower().split() if w]
    if not terms:
        return []
    names = [n for n in QUESTIONS if n not in {"age", "sex", *exclude}]
    denied = premise_denied(parse_records([case]).codes, names, fertile_max)[0]
    return [n for n, d in zip(names, denied) if not d and all(t in QUESTIONS[n].lower() for t in terms)]


def run_session(model: str | Path | LoadedModel | None = None, *, input: TextIO | None = None,  # noqa: A002
                output: TextIO | None = None, max_questions: int = 15,
                config: QuestionsConfig | str | Path | None = None) -> dict[str, Any]:
    """Run one question-and-answer session and return what was learned.

    Parameters
    ----------
    model : models folder, MLflow model URI, LoadedModel, or None (the project's ``models/``)
    input, output : text streams, default ``sys.stdin`` and ``sys.stdout``
        Answers are read one line each: ``y``/``yes``, ``n``/``no``, ``d``/``?``/``unknown`` or a
        blank line for "don't know"; for a category, its number; ``b``, ``q`` and ``+ words`` as
        in the module docstring.
    max_questions : int, default=15
        Questions after age and sex, at most.
    config : QuestionsConfig or path, optional
        Default ``configs/questions.yaml``.

    Returns
    -------
    dict
        ``case`` (the answers as a case dict; "don't know" answers are left out), ``prediction``
        (the final :func:`pipeline.serve.predict` row as a dict, or None if the session stopped
        before age and sex), ``answers`` (every question asked with its answer, None for "don't
        know", in order), ``questions`` (how many were asked; the screen's signs asked together
        count once), ``stopped_because`` and ``same_day_sign_unnamed`` (a yes to the same-day signs
        together that no sign's own answer bears out: a reason to go now, whatever ``prediction`` says).
    """
    if not isinstance(max_questions, (int, np.integer)) or isinstance(max_questions, bool) or max_questions < 0:
        raise ValueError(f"max_questions == {max_questions!r}, must be a non-negative integer.")
    io = _Session(sys.stdin if input is None else input, sys.stdout if output is None else output)
    loaded = get_model(model)
    kb = resolve_kb(loaded)
    cfg = load_questions_config(config)
    case: dict[str, Any] = {}
    steps: list[list[tuple[str, _Answer]]] = []  # one entry per answer given, for going back
    row: dict | None = None
    screen = _screen_fields(loaded)
    screened = False
    said_yes: list[str] = []  # the signs a "yes, one of these" covered (cleared when the screen is asked again)

    def answers() -> list[tuple[str, _Answer]]:
        return [a for step in steps for a in step]

    def record(step: list[tuple[str, _Answer]]) -> None:
        steps.append(step)
        case.update({name: value for name, value in step if value is not None})

    def unscreened() -> list[tuple[str, str]]:
        """The screen's signs not yet answered (don't know counts as an answer)."""
        given = {name for name, _ in answers()}
        return [(name, text) for name, text in screen if name not in given]

    def unplaced() -> bool:
        """A "yes, one of these" to the same-day signs that no sign's own answer bears out: none
        answered yes, and not every one answered no (a stop, "don't know" or a later + words
        between them leaves it standing)."""
        given = dict(answers())
        return bool(said_yes) and not any(given.get(n) == "yes" for n in said_yes) and \
            not all(given.get(n) == "no" for n in said_yes)

    def undo() -> None:
        for name, _ in steps.pop():
            case.pop(name, None)

    def ask_age_and_sex() -> None:
        """Age, then sex; ``b`` at the sex's prompt asks the age again."""
        while True:
            case["age"] = io.age()
            try:
                case["sex"] = io.sex()
                return
            except _Back:
                io.say("Went back one answer.", "  ")

    def back() -> None:
        nonlocal screened
        if not steps and said_yes:  # a "yes" to the screen and none of its signs answered: the screen again
            said_yes.clear()
            io.say("Went back one answer.", "  ")
            return
        if not steps:  # before the first question: age and sex again (a woman taken for a man is never
            io.say("Went back to the start.", "  ")  # asked about pregnancy or the pill)
            ask_age_and_sex()
            return
        undo()
        screened = not unscreened()  # a sign no longer answered is asked again
        if not screened:
            said_yes.clear()
        io.say("Went back one answer.", "  ")

    def volunteer(words: str) -> None:
        found = _find(words, {name for name, _ in answers()}, case, kb.fertile_age[1])
        if not found:
            io.say(f"No unanswered question holds {words!r}; try other words.", "  ")
            return
        if len(found) > 1:
            for i, name in enumerate(found[:6], start=1):
                io.say(f"{i}) {question(name)}", "  ")
            n = min(6, len(found))
            while True:  # `q` stops the session here too; anything else but a choice or a blank is asked again
                text = io.read(f"Which one (1-{n}, blank for none)? ", commands=False)
                if text.lower() in ("q", "quit"):
                    raise _Quit
                if not text or (_digits(text) and 1 <= int(text) <= n):
                    break
                io.say(f"Please enter a number from 1 to {n}, or a blank line for none (got {text!r}).", "  ")
            if not text:
                return
            found = [found[int(text) - 1]]
        record([(found[0], io.question(None, found[0]))])

    io.say("A few questions about pain behind the knee. Answer y (yes), n (no) or d (don't know; a blank line "
           "also means don't know). " + _HELP)
    io.say(CLOSING)
    stopped = "the input ended"
    unlimited = None  # the decision layer ranking every question, built the first time the session needs it
    try:
        ask_age_and_sex()
        while True:
            try:
                row = predict(case, model=loaded).iloc[0].to_dict()
            except CaseValidationError as err:  # an answer that cannot stand with the others (a duration
                undo()                          # longer than the age allows): not kept, and said why
                io.say(f"That answer was not kept: {err.errors['reason'].iloc[0]}.", "  ")
                continue
            io.say(_status(row, loaded, unplaced=unplaced()), "  ")
            asked = len(steps)  # the screen's signs asked together are one question
            if asked >= max_questions:
                stopped = f"asked the maximum of {max_questions} questions"
                break
            given = {m for m, _ in answers()}  # "don't know" is not asked again
            settle = [n for n in (_FIELD_OF_QUESTION[q] for q in (row.get("ask_next") or "").split("|") if q)
                      if n not in given]
            if not settle and row.get("ask_next"):  # every one listed was answered "don't know": those past them
                unlimited = unlimited or _ranking_every_question(loaded)
                settle = [n for n in _every_question_to_settle(case, loaded, kb, unlimited) if n not in given]
            if row.get("differential_size") == 1 and row["confidence"] >= cfg.ask.min_confidence and not settle:
                stopped = "one condition remains in the differential"
                break
            try:
                if screen and not screened and (signs := unscreened()):
                    io.say(f"Q{asked + 1}. First, do you have any of these now? {'; '.join(t for _, t in signs)}")
                    said = io.yes_no("Any of these?")
                    if said == "yes":  # which one: each sign on its own, each kept as it is given
                        said_yes[:] = [name for name, _ in signs]
                        step: list[tuple[str, _Answer]] = []
                        try:
                            for name, _ in signs:
                                step.append((name, io.yes_no("  - " + question(name))))
                        finally:  # a stop (or b, + words) in the middle keeps the signs already answered
                            if step:
                                record(step)
                        if unplaced():  # present, the person said, but not which
                            io.say(UNPLACED_SIGN, "  ")
                    else:
                        record([(name, "no" if said == "no" else None) for name, _ in signs])
                    screened = True
                    continue
                best = next_questions(case, loaded, k=1, config=cfg, kb=kb, exclude=[n for n, _ in answers()])
                if best.empty:
                    stopped = "no questions are left to ask"
                    break
                if best["score"].iloc[0] < cfg.ask.min_score:
                    stopped = "no remaining question is expected to change the picture much"
                    break
                answered = sum(a is not None for _, a in answers())
                if "ask_next" in row and answered >= cfg.ask.min_questions and not settle:
                    stopped = "no likely answer to an open question would change the triage or is a sign to rule out"
                    break
                name = best["field"].iloc[0]
                if settle and (row.get("triage_reason") == UNCERTAIN_REASON or answered >= cfg.ask.min_questions):
                    name = settle[0]  # the level rests on unanswered questions, or the rest is to settle it
                record([(name, io.question(asked + 1, name))])
            except _Back:
                back()
            except _Volunteer as v:
                volunteer(v.words)
    except (_Quit, KeyboardInterrupt):
        stopped = "you stopped the session"
    except _EndOfInput:
        stopped = "the input ended"
    # the answers as they stand (after going back, or a stop in the middle of a question)
    row = predict(case, model=loaded).iloc[0].to_dict() if "age" in case and "sex" in case else None
    _summary(io, row, case, answers(), stopped, loaded, unplaced=unplaced())
    return {"case": case, "prediction": row, "answers": answers(), "questions": len(steps), "stopped_because": stopped,
            "same_day_sign_unnamed": unplaced()}


def _ranking_every_question(model: LoadedModel) -> Any:
    """The model's decision layer with ``ask_next`` listing every question it ranks, not only its
    first ``ask_next.max_questions``."""
    from pipeline.decision.layer import Decision

    assert model.decision is not None  # a row lists ask_next only with a decision layer
    spec = model.decision.spec
    return Decision({**spec, "triage": {**spec["triage"], "ask_next": {**spec["triage"]["ask_next"],
                                                                        "max_questions": len(QUESTIONS) + 1}}})


def _every_question_to_settle(case: dict[str, Any], model: LoadedModel, kb: Any, unlimited: Any) -> list[str]:
    """Every question ``ask_next`` ranks for ``case``, in its order, by field name (``unlimited``:
    :func:`_ranking_every_question` of ``model``): past the questions a row lists, which a session
    asks again while they are answered "don't know" (unknown to the model as if unasked), lie
    others whose answer would change the level (for a tender calf, veins standing out or a whole
    leg swollen, each a same day)."""
    return _coded(case, model, unlimited, kb, "ask_next")


def _coded(case: dict[str, Any], model: LoadedModel, decision: Any, kb: Any, column: str) -> list[str]:
    """The codes of ``case``'s ``column`` (``ask_next``'s questions, ``safety_net``'s lines), in order."""
    from pipeline.decision.layer import decision_columns

    parsed = parse_records([case])
    listed = decision_columns(decision, kb, parsed, model.predict_proba(parsed), codes=True, columns=[column],
                              rescore=model.predict_proba)
    return [n for n in str(listed[column][0]).split("|") if n]


def _safety_net_by_level(case: dict[str, Any], model: LoadedModel) -> list[tuple[str, list[str]]]:
    """``case``'s safety net (its lines, the most urgent first) under what each calls for: the same
    day, or a doctor within a day or two (a line of a rule at that level). Read by the lines' codes:
    one text can be two rules' ("the calf or leg swells", within a day or two, or the same day after
    surgery)."""
    if model.decision is None or model.kb is None:
        return []
    net = model.decision.safety(model.kb)
    at = {code: (text, net.rules[k].level) for k, code, text in net.lines.all_lines()}
    lines = [at[c] for c in _coded(case, model, model.decision, model.kb, "safety_net")]
    same_day = LEVELS.index("emergency")
    now = [text for text, level in lines if level >= same_day]
    soon = [text for text, level in lines if level < same_day]
    return [(lead, part) for lead, part in (("Go the same day instead if", now),
                                            ("See a doctor within a day or two if", soon)) if part]


# said after "yes" to "any of these?" and then to none of the signs on its own
UNPLACED_SIGN = ("You said one of the signs asked about first is present now, but not which: any of them is a reason "
                 "to seek medical help now, the same day (an emergency department; call an ambulance for breathlessness, "
                 "chest pain or coughing blood, or a cold, pale foot), whatever the rest of these answers suggest.")


def _summary(io: _Session, row: dict | None, case: dict, answers: list[tuple[str, _Answer]], stopped: str,
             model: LoadedModel, *, unplaced: bool = False) -> None:
    io.say()
    io.say(f"Summary ({stopped}):")
    if unplaced:  # first: it overrides whatever level the answers below give
        io.say(UNPLACED_SIGN, "  ")
    if row is not None:
        io.say(f"You are {case['age']}, {case['sex']}.", "  ")
        for name, value in answers:
            said = "don't know" if value is None else answer_label(name, value)
            io.say(f"{question(name)} {said}", "  - ")
        io.say(f"Most likely: {_top3(row)}.", "  ")
        if "triage" in row:
            why = re.sub(r" \([a-z0-9_]+\)", "", row["triage_reason"])  # without the rule's internal name
            if unplaced:  # the level the other answers give, after the one that overrides it
                why = (f"one of the signs asked about first is present, you said, though not which; the other answers "
                       f"alone would give \"{_level_text(row, model)}\" ({why})")
            io.say(f"What to do: {_level_text(row, model, unplaced=unplaced)} Why: {why}.", "  ")
            if row.get("screen"):  # every rule that fired, where the reason names the first
                io.say(f"To rule out: {', '.join(row['screen'].split('|'))}.", "  ")
            if row["safety_net"] and not unplaced:  # signs that would raise the level: none above the same day
                for lead, signs in _safety_net_by_level(case, model):
                    io.say(f"{lead}: " + "; ".join(signs) + ".", "  ")
            if row["ask_next"]:
                io.say("Questions to answer next: " + " ".join(row["ask_next"].split("|")), "  ")
            io.say(f"Conditions that remain possible: {_labels(row['differential'].split('|'))}.", "  ")
            advice = row["advice"].removesuffix(CLOSING).strip()
            if unplaced:  # its level is the other answers', said above; the rest is about the conditions
                advice = advice.removeprefix(_level_text(row, model)).strip()
            if advice:
                io.say(f"Advice: {advice}", "  ")
    io.say(CLOSING)
