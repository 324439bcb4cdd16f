"""next_questions, the simulated questioning and the interactive session, as a user drives them."""

import io
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy.special import entr

from pipeline import generate_cases, oracle_posterior
from pipeline.core.cases import as_parsed
from pipeline.core.config import LEVELS, ConfigError, ProbesConfig, TrainConfig, load_config
from pipeline.core.paths import config_path
from pipeline.core.schema import CONDITIONS, FIELD_NAMES
from pipeline.data.datasets import labels
from pipeline.interact.ask import CLOSING, run_session
from pipeline.interact.questions import (
    CANDIDATE_FIELDS,
    _reason,
    load_questions_config,
    next_questions,
    score_questions,
)
from pipeline.report.questioning import plot_questioning, simulate_questioning
from pipeline.serve.loading import LoadedModel
from pipeline.serve.predict import get_model, predict

CASE = {"age": 24, "sex": "male", "heard_pop": "yes", "giving_way": "yes", "tingling": "unknown"}


@pytest.fixture(scope="module")
def model(trained):
    return get_model(trained[0])


@pytest.fixture(scope="module")
def cfg():
    return load_questions_config()


def test_a_reason_shows_as_many_decimals_as_its_change_needs(model, cfg):
    """Near certainty, two decimals read "from 0.96 to 0.96 if yes": a change that shows nothing."""
    s = score_questions(as_parsed(CASE), model, model.kb, cfg)
    j = int(s.field_index[0])
    rows = np.flatnonzero(s.field_index == j)
    now = np.full(len(CONDITIONS), 0.042 / (len(CONDITIONS) - 1))
    now[0] = 0.958
    after = s.proba_answer.copy()
    for r, change in zip(rows, (0.004, 0.008)):  # leg cramp gains what Baker's cyst loses
        after[r] = now + np.eye(len(CONDITIONS))[0] * change - np.eye(len(CONDITIONS))[1] * change
    reason = _reason(replace(s, proba=now[None], proba_answer=after), j, cfg)
    assert re.match(r"would change P\(leg cramp\) from 0\.958 to 0\.962 if \w+ \(\d+% likely\) / 0\.966 if ", reason), reason
    spread = np.where(np.arange(len(CONDITIONS)) == 0, 1.0, -1.0 / (len(CONDITIONS) - 1))
    far = after.copy()
    far[rows[0]], far[rows[1]] = now + 0.03 * spread, now - 0.2 * spread  # two decimals show these
    assert " from 0.96 to 0.99 if " in _reason(replace(s, proba=now[None], proba_answer=far), j, cfg)


def test_only_unknown_questions_best_first(model):
    for case in (CASE, {"age": 70, "sex": "female", "leg_swelling": "no", "onset": "gradual"}):
        q = next_questions(case, model, k=4)
        assert list(q.columns) == ["field", "expected_information_gain", "score", "reason"]
        assert len(q) == 4
        assert not set(q["field"]) & {k for k, v in case.items() if v != "unknown"}
        assert not set(q["field"]) & {"age", "sex", "bmi", "symptom_duration_days"}
        assert (np.diff(q["score"].to_numpy()) <= 0).all()
        assert (q["expected_information_gain"] >= 0).all() and (q["score"] >= q["expected_information_gain"]).all()
        assert q["reason"].str.match(r"would change P\(.+\) from 0\.\d{2,4} to ").all()
    every = next_questions(CASE, model, k=None)
    assert "tingling" in set(every["field"]) and "pregnant" not in set(every["field"])  # not asked of a man
    # nor of a woman past the fertile ages, where it tells nothing about the condition
    assert "pregnant" in set(next_questions({"age": 30, "sex": "female"}, model, k=None)["field"])
    assert "pregnant" not in set(next_questions({"age": 80, "sex": "female"}, model, k=None)["field"])
    # nor what happened at an injury of a case that reports none
    for injury, offered in (("none", set()), ("twist_or_direction_change", {"heard_pop", "swelling_within_hours"})):
        fields = set(next_questions({"age": 30, "sex": "male", "injury_event": injury}, model, k=None)["field"])
        assert fields & {"heard_pop", "swelling_within_hours"} == offered, injury
    assert set(every["field"]) == set(CANDIDATE_FIELDS) - {"heard_pop", "giving_way", "pregnant", "hormonal_therapy"}
    # the pill or HRT is asked of a woman, not of a man (or whoever says "male")
    assert "hormonal_therapy" in set(next_questions({"age": 30, "sex": "female"}, model, k=None)["field"])
    assert "heard_pop" not in set(next_questions(CASE, model, k=None, exclude=["locking"])["field"])
    assert "locking" not in set(next_questions(CASE, model, k=None, exclude=["locking"])["field"])
    for one in ("locking", " Locking "):  # one name, not its letters; matched as columns are
        assert "locking" not in set(next_questions(CASE, model, k=None, exclude=one)["field"])
    with pytest.warns(UserWarning, match="ignoring columns that are not case fields: lokcing"):
        next_questions({**CASE, "lokcing": "yes"}, model)


def test_bad_arguments_are_value_errors(model, tmp_path):
    with pytest.raises(ValueError, match="k == 0"):
        next_questions(CASE, model, k=0)
    with pytest.raises(ValueError, match="exactly one case"):
        next_questions([CASE, CASE], model)
    with pytest.raises(ValueError, match="posterior"):
        next_questions(CASE, model, posterior="bayes")
    with pytest.raises(ValueError, match="unknown field"):
        next_questions(CASE, model, exclude=["limp"])
    bad = tmp_path / "q.yaml"
    bad.write_text((config_path("questions.yaml")).read_text().replace("dvt: 2.0", "gout: 2.0"))
    with pytest.raises(ConfigError, match="gout"):
        load_questions_config(bad)


def test_oracle_gain_is_the_mutual_information_from_the_knowledge_base(kb, cfg):
    """For a context field, P(answer | condition) does not depend on severity: EIG = I(answer; condition)."""
    case = {"age": 35, "sex": "female", "onset": "sudden"}
    q = next_questions(case, k=None, posterior="oracle", kb=kb, config=cfg).set_index("field")
    prior = oracle_posterior(kb, case).to_numpy()[0]
    for name in ("smoker", "sedentary", "heard_pop"):
        p_yes = kb.tristate[name][:, 0]
        joint = np.stack([prior * p_yes, prior * (1 - p_yes)])  # (answer, condition)
        p_answer = joint.sum(axis=1)
        mi = entr(prior).sum() - sum(p_answer[v] * entr(joint[v] / p_answer[v]).sum() for v in range(2))
        assert q.loc[name, "expected_information_gain"] == pytest.approx(mi, rel=1e-9, abs=1e-12)


def test_a_field_that_is_equally_likely_under_every_condition_gains_exactly_zero(kb, cfg):
    flat = replace(kb, tristate={**kb.tristate, "tingling": np.full((9, 3), 0.3)})
    for case in ({"age": 50, "sex": "female"}, {**CASE, "tingling": ""}, {"age": 70, "sex": "male", "leg_swelling": "yes"}):
        q = next_questions(case, k=None, posterior="oracle", kb=flat, config=cfg).set_index("field")
        assert q.loc["tingling", "expected_information_gain"] == 0.0
        assert q.loc["tingling", "score"] == 0.0
        assert (q["expected_information_gain"] >= 0).all() and q["expected_information_gain"].max() > 0.01


@pytest.fixture(scope="module")
def labelled(kb):
    return generate_cases(kb, 300, seed=21)


def test_simulation_is_reproducible_and_well_formed(model, kb, labelled, tmp_path):
    a = simulate_questioning(model, kb, labelled, k_max=3, seed=4)
    b = simulate_questioning(model, kb, labelled, k_max=3, seed=4)
    assert a == b
    assert a["n_cases"] == 300 and a["k_max"] == 3
    assert set(a) == {"chosen", "random", "fixed", "n_cases", "k_max"}
    for strategy in ("chosen", "random", "fixed"):
        assert set(a[strategy]) == {"accuracy", "dvt_sensitivity"}
        for curve in a[strategy].values():
            assert list(curve) == ["0", "1", "2", "3"] and all(0 <= v <= 1 for v in curve.values())
    assert a["chosen"]["accuracy"]["0"] == a["random"]["accuracy"]["0"] == a["fixed"]["accuracy"]["0"]
    path = plot_questioning(a, tmp_path / "q.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="start_fields"):
        simulate_questioning(model, kb, labelled, start_fields=("age",))


@pytest.mark.slow
def test_five_chosen_questions_beat_ten_in_schema_order(kb):
    """The target, on a logistic model like the default one. It needs enough training data: models
    trained on 20k cases are as accurate as the oracle on whole cases but not on cases with few
    answers, and there the target failed for one training seed in three (measured)."""
    from threadpoolctl import threadpool_limits

    from pipeline.model.candidates import make_candidate

    train = generate_cases(kb, 60_000, seed=101)
    config = load_config(TrainConfig, config_path("train.yaml"))
    with threadpool_limits(limits=1, user_api="blas"):  # many BLAS threads made this fit 10x slower on 2 cores
        estimator = make_candidate("logistic", config).fit(train, labels(train))
    model = LoadedModel(estimator)  # no decision layer: DVT sensitivity is prediction == dvt
    result = simulate_questioning(model, kb, generate_cases(kb, 1500, seed=102), k_max=10, seed=0)
    chosen, fixed, random = (result[s]["accuracy"] for s in ("chosen", "fixed", "random"))
    assert chosen["5"] >= fixed["10"]
    assert chosen["10"] > random["10"]


def _flat(text: str) -> str:
    """The text with its wrapping undone."""
    return " ".join(text.split())


def _session(model, answers: str, **kwargs):
    out = io.StringIO()
    result = run_session(model, input=io.StringIO(answers), output=out, **kwargs)
    return result, out.getvalue()


def test_session_asks_age_and_sex_first_and_ends_with_the_advice(model):
    result, text = _session(model, "abc\n200\n34\nm\n" + "y\nn\nd\n1\n" * 20, max_questions=6)
    assert text.count("Age in years") == 3 and "Please enter a whole number from 12 to 100" in text
    assert text.index("Age in years") < text.index("Sex (female/male)") < text.index("Q1.")
    assert result["case"]["age"] == 34 and result["case"]["sex"] == "male"
    assert 1 <= result["questions"] <= 6
    assert result["stopped_because"] and result["prediction"]["prediction"] in result["prediction"]["top3"]
    assert _flat(text).endswith(CLOSING)
    assert "Summary" in text and "What to do:" in text


def test_session_stops_at_the_end_of_input_and_at_the_maximum(model):
    result, text = _session(model, "50\n")
    assert result["stopped_because"] == "the input ended" and result["prediction"] is None
    assert _flat(text).endswith(CLOSING)
    result, text = _session(model, "50\nfemale\n" + "d\n" * 40, max_questions=3)
    assert [a for _, a in result["answers"]] == [None] * len(result["answers"]) and result["questions"] <= 3
    assert len({name for name, _ in result["answers"]}) == len(result["answers"])  # never asked twice
    assert _flat(text).endswith(CLOSING)


def test_session_works_without_a_decision_layer(model):
    bare = LoadedModel(model.estimator)
    result, text = _session(bare, "30\nfemale\n" + "y\n2\n" * 10, max_questions=2)
    assert "triage" not in result["prediction"] and len(result["answers"]) >= 1
    assert _flat(text).endswith(CLOSING)


def test_session_goes_back_takes_volunteered_answers_and_stops_on_q(model):
    result, text = _session(model, "70\nf\nn\n+ whole leg\ny\nb\n+ nothing like this\nq\n")
    assert "Is the whole leg swollen, thigh and calf?" in _flat(text) and "Went back one answer" in text
    assert "whole_leg_swollen" not in result["case"]  # the answer was taken back
    assert result["case"]["breathless_or_chest_pain"] == "no"  # the screen was asked first, all signs at once
    assert "No unanswered question holds 'nothing like this'" in _flat(text)
    assert result["stopped_because"] == "you stopped the session" and _flat(text).endswith(CLOSING)
    assert "Go the same day instead if:" in text  # the safety net, in the summary
    for name in FIELD_NAMES:  # plain language only: never a field name or a rule's internal name
        assert ("_" not in name) or name not in text, name
    assert "possible_dvt" not in text and "see_doctor" not in text


def test_q_at_the_choice_among_volunteered_questions_stops_the_session(model):
    """`q` at "Which one?" was taken as "none" and the session went on without a word; an answer that
    is no choice is asked again, and a blank line is "none"."""
    result, text = _session(model, "35\nmale\nno\n+ calf swollen\n7\nq\n")
    flat = _flat(text)
    assert "Please enter a number from 1 to" in flat and "(got '7')" in flat
    assert result["stopped_because"] == "you stopped the session" and "Summary (you stopped the session)" in text
    result, _ = _session(model, "35\nmale\nno\n+ calf swollen\n\n")
    assert result["stopped_because"] == "the input ended"


def test_age_and_sex_can_be_taken_back_like_any_answer(model):
    """`b` at the sex's prompt was "Please answer female or male", and at the first question
    "Nothing to go back to": a woman entered as a man could not be mended, and is never asked
    about pregnancy or the pill. `b` at the sex's prompt asks the age again, and before the first
    question, both."""
    result, text = _session(model, "b\n45\nb\n50\nm\nb\n51\nf\nq\n")
    flat = _flat(text)
    assert "Nothing to go back to: the age is the first answer." in flat
    assert "Went back one answer." in flat and "Went back to the start." in flat
    assert (result["case"]["age"], result["case"]["sex"]) == (51, "female") and "Please" not in flat
    # `b` at the first of the screen's signs after its "yes" asks the screen again, the yes taken back
    result, text = _session(model, "30\nm\ny\nb\nn\nq\n")
    assert "Went back to the start." not in _flat(text) and not result["same_day_sign_unnamed"]
    assert result["case"]["breathless_or_chest_pain"] == "no"


def test_the_summary_says_which_signs_call_for_the_same_day_and_which_for_a_day_or_two(model):
    """The safety net lists every rule above the level, the most urgent first: the summary puts a
    same-day rule's signs under "the same day" and a within-a-day-or-two rule's under its own."""
    from pipeline.interact.ask import _safety_net_by_level

    flags = {f.name: f for f in model.decision.config.red_flags}
    same_day, soon = flags["possible_dvt"].safety_net.text, flags["swollen_calf_or_leg"].safety_net.text
    cramp = {"age": 45, "sex": "female", "onset": "sudden", "muscle_spasm": "yes", "cramp_calf_or_thigh": "yes",
             "symptom_duration_days": 0.003, "injury_event": "none", "breathless_or_chest_pain": "no"}
    assert predict(cramp, model=model)["triage"][0] in ("self_care", "see_doctor")
    by_level = dict(_safety_net_by_level(cramp, model))
    assert same_day in by_level["Go the same day instead if"]
    assert soon in by_level["See a doctor within a day or two if"]
    assert soon not in by_level["Go the same day instead if"]
    # after surgery "the calf or leg swells" is the line of a swollen leg's same-day rule too: shown
    # once, as the same day (before, placed by its text alone, it was the same day without surgery too)
    after_surgery = dict(_safety_net_by_level({**cramp, "recent_surgery": "yes"}, model))
    assert soon in after_surgery["Go the same day instead if"]
    assert soon not in after_surgery.get("See a doctor within a day or two if", [])


def test_a_yes_to_an_emergency_sign_is_kept_when_the_session_stops_in_the_screen(model):
    """Stopped after naming one sign (q, the end of the input): the summary is that case's, the
    same day, and never offers the sign just reported as a reason to go the same day."""
    for ending in ("q\n", ""):
        result, text = _session(model, "30\nm\ny\ny\n" + ending)
        assert result["case"]["breathless_or_chest_pain"] == "yes", ending
        assert result["prediction"]["triage"] == predict(result["case"], model=model)["triage"][0] == "emergency"
        summary = _flat(text).split("Summary")[-1]
        net = summary.split("Go the same day instead if:")[1].split("Advice")[0] if "instead if:" in summary else ""
        assert "short of breath" not in net, ending
        assert "To rule out: pulmonary embolism." in summary, ending  # every screen rule that fired, by name


def test_a_no_to_the_screen_leaves_a_sign_unknown_where_its_rule_needs_more_than_the_sign(model):
    """The septic-joint rule needs a fever and a swollen, hot or red knee or leg: a "no" to "any of
    these" says nothing of a fever alone, so fever stays unanswered and can still be given."""
    result, text = _session(model, "45\nf\nn\nq\n")
    assert result["case"].get("breathless_or_chest_pain") == "no"
    assert "fever" not in result["case"]
    assert "fever with a swollen" not in _flat(text).split("Any of these?")[0]
    result, text = _session(model, "45\nf\nn\n+ fever\ny\nq\n")
    assert result["case"]["fever"] == "yes"


def test_a_yes_to_the_screen_with_no_sign_named_is_kept_as_a_reason_to_go_now(model):
    """"Any of these?" answered yes, then don't know to each sign, left the person at "within a day
    or two" with the yes gone from the summary: it is said at once and leads the summary."""
    from pipeline.interact.ask import UNPLACED_SIGN

    result, text = _session(model, "30\nmale\ny\nd\nd\nd\nq\n", max_questions=2)
    assert result["same_day_sign_unnamed"]
    flat = _flat(text)
    assert flat.count(_flat(UNPLACED_SIGN)) == 2, flat
    assert flat.split("Summary")[-1].split("You are 30")[0].strip().endswith(_flat(UNPLACED_SIGN))
    # and every level shown after it is the same day's, as it says: the status lines and the summary's
    # "What to do" said "within a day or two" beneath it, and the advice opened with it
    same_day = model.decision.config.level_text["emergency"]
    statuses = re.findall(r"Now: .*?(?= Q\d+\.| Summary)", flat.split(_flat(UNPLACED_SIGN), 1)[1])
    assert statuses and all(same_day in status for status in statuses), statuses
    assert f"What to do: {same_day} Why: one of the signs asked about first is present, you said" in flat
    others = [text for level, text in model.decision.config.level_text.items() if level != "emergency"]
    assert not any(f"Advice: {text}" in flat for text in others)
    assert "instead if:" not in flat.split("Summary")[-1]  # no sign can raise the same day
    # a sign named yes is its own answer (and its rule's level): nothing more is said
    _, text = _session(model, "30\nmale\ny\ny\nq\n", max_questions=2)
    assert _flat(UNPLACED_SIGN) not in _flat(text)
    # taken back, the screen is asked again and the yes no longer stands
    result, text = _session(model, "30\nmale\ny\nd\nd\nd\nb\nq\n", max_questions=2)
    assert _flat(UNPLACED_SIGN) not in _flat(text).split("Summary")[-1] and not result["same_day_sign_unnamed"]
    # a stop or the end of input between the signs leaves it standing; a no to every sign does not
    for answers, stands in (("y\nq\n", True), ("y\nd\nq\n", True), ("y\nd\nd\n", True), ("y\nn\nn\nn\nq\n", False)):
        result, text = _session(model, "30\nmale\n" + answers, max_questions=3)
        summary = _flat(text).split("Summary")[-1]
        assert (_flat(UNPLACED_SIGN) in summary) == stands == result["same_day_sign_unnamed"], answers


def test_going_back_over_the_screen_asks_its_unanswered_signs_again(model):
    result, text = _session(model, "30\nm\n+ short of breath\nn\nn\nb\nq\n")
    again = _flat(text).split("Went back one answer.")[1]
    assert "do you have any of these now?" in again and "pulses" in again
    assert "short of breath" not in again.split("Any of these?")[0]  # the sign answered before is not listed
    assert [name for name, _ in result["answers"]] == ["breathless_or_chest_pain"]


def test_volunteered_answers_are_numbers_where_the_question_asks_one_and_never_break_the_case(model):
    # days since it started: a number, checked; a duration longer than the age allows is not kept
    result, text = _session(model, "30\nm\nn\n+ days ago\nabc\n4.5\nq\n")
    assert result["case"]["symptom_duration_days"] == 4.5 and "Please enter a number >= 0" in _flat(text)
    result, text = _session(model, "20\nm\nn\n+ days ago\n9000\nq\n")
    assert "symptom_duration_days" not in result["case"]
    assert "That answer was not kept: longer than the patient has lived" in _flat(text)
    # pregnancy is never offered to a male
    result, text = _session(model, "30\nm\nn\n+ pregnant\nq\n")
    assert "No unanswered question holds 'pregnant'" in _flat(text) and result["prediction"] is not None


def _read_until(fd: int, wanted: str, seen: list[str], count: int = 1, timeout: float = 120.0) -> str:
    import os
    import select
    import time

    end = time.monotonic() + timeout
    while _flat("".join(seen)).count(wanted) < count:
        if time.monotonic() > end:
            raise AssertionError(f"{wanted!r} never came; got:\n{''.join(seen)}")
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen.append(chunk.decode("utf-8", "replace").replace("\r", ""))
    return "".join(seen)


def test_ask_in_a_terminal_wraps_goes_back_and_stops_on_ctrl_c(trained):
    """`kneepain ask` in a real pseudo-terminal 60 columns wide: lines fit, b goes back, Ctrl-C
    (the SIGINT a terminal sends its foreground process group) ends with the summary and exit
    code 0, no traceback. The signal is sent to the session's group directly: written to the
    pseudo-terminal as a byte, in some runs of the full suite the session only echoed "^C" and
    went on waiting for an answer (the cause was not found; the session stops on the signal)."""
    import fcntl
    import os
    import pty
    import signal
    import struct
    import sys
    import termios
    import time

    models, _ = trained
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session whose controlling terminal is the pty
        # Ctrl-C as a terminal's user has it, whatever the test process's signal state (a blocked
        # or ignored SIGINT would be inherited through exec, and the session would never stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execve(sys.executable, [sys.executable, "-m", "pipeline.cli", "ask", "--model", str(models)], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    seen: list[str] = []
    try:
        _read_until(fd, "Age in years", seen)
        os.write(fd, b"70\r")
        _read_until(fd, "Sex (female/male)", seen)
        os.write(fd, b"f\r")
        _read_until(fd, "Any of these? [y/n/d]", seen)
        os.write(fd, b"n\r")
        _read_until(fd, "Q2.", seen)
        os.write(fd, b"b\r")
        _read_until(fd, "Went back one answer", seen)
        _read_until(fd, "Any of these? [y/n/d]", seen, count=2)  # asked again: the screen answer was taken back
        os.killpg(pid, signal.SIGINT)  # Ctrl-C: what the terminal sends the session's process group
        text = _read_until(fd, CLOSING, seen, count=2)  # the first is the greeting's
    finally:  # a session still waiting for an answer once the test has failed is ended, not waited for
        deadline = time.monotonic() + 30
        while (status := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        if status[0] == 0:
            os.kill(pid, signal.SIGKILL)
            status = os.waitpid(pid, 0)
        status = status[1]
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert "Traceback" not in text and "Summary (you stopped the session)" in text, text[-3000:]
    assert max(len(line) for line in text.splitlines()) <= 60


class _Answers(io.StringIO):
    """Answers a session from a case, reading the question last asked off the session's output."""

    def __init__(self, case: dict, out: io.StringIO):
        super().__init__()
        self.case, self.out = case, out

    def readline(self, size: int = -1) -> str:
        from pipeline.core.schema import field
        from pipeline.core.wording import QUESTIONS

        text = _flat(self.out.getvalue())
        marks = {"age": text.rfind("Age in years"), "sex": text.rfind("Sex (female/male)"),
                 "screen": text.rfind("Any of these?"),
                 **{name: text.rfind(q) for name, q in QUESTIONS.items() if name not in ("age", "sex")}}
        last = max(marks, key=marks.get)
        if last in ("age", "sex"):
            return f"{self.case[last]}\n"
        if last == "screen":
            screen = ("breathless_or_chest_pain", "foot_cold_or_pale", "pulsating_lump", "fever")
            return "y\n" if any(self.case.get(n) == "yes" for n in screen) else "n\n"
        value = self.case.get(last)
        if value is None:
            return "d\n"
        f = field(last)
        if f.kind in ("integer", "float"):  # a number (how many days ago it started, once ask_next lists it)
            return f"{value}\n"
        return f"{value[0]}\n" if f.kind == "tristate" else f"{f.allowed.index(value) + 1}\n"


DVT_PROBES = [p for p in load_config(ProbesConfig, config_path("probes.yaml")).probes if p.expect.top == "dvt"]


@pytest.mark.parametrize("probe", DVT_PROBES, ids=[p.name for p in DVT_PROBES])
def test_every_dvt_probe_reaches_see_a_doctor_soon_within_five_questions(model, probe):
    """A person with a documented DVT presentation, answering truthfully (don't know for what the
    probe leaves out), is sent at least "see a doctor soon" after at most five questions."""
    out = io.StringIO()
    result = run_session(model, input=_Answers(probe.case, out), output=out, max_questions=5)
    assert LEVELS.index(result["prediction"]["triage"]) >= LEVELS.index("see_doctor_soon"), out.getvalue()[-2000:]


def test_a_session_asks_what_the_triage_waits_on_and_a_dont_know_does_not_keep_it_going(model, kb):
    """People with runner's knee who know every answer but whether the leg and calf are swollen
    and tender: the session stops once every question `ask_next` lists has been asked, a "don't
    know" included (a question answered so stays unanswered, and listed, for good: before, such a
    session ran to its maximum)."""
    from pipeline.core.schema import field
    from pipeline.core.wording import QUESTIONS, SPAN_QUESTION

    cases = generate_cases(kb, 400, seed=5)
    cases = cases[cases["condition"] == "runners_knee"].head(12).drop(columns=["condition", "severity"])
    by_question = {q: n for n, q in QUESTIONS.items()} | {SPAN_QUESTION: "symptom_duration_days"}
    for record in cases.to_dict("records"):
        unknown = ("leg_swelling", "calf_tenderness")
        case = {k: (int(v) if k == "age" else {True: "yes", False: "no"}.get(v, v)) for k, v in record.items()
                if k not in unknown and not pd.isna(v)}
        case.update({n: "no" for n in QUESTIONS if n not in case and n not in unknown and field(n).kind == "tristate"})
        out = io.StringIO()
        # a long session may list a new question with each answer; the guard is against a "don't
        # know" keeping it going to its maximum, whatever that is
        result = run_session(model, input=_Answers(case, out), output=out, max_questions=30)
        assert result["questions"] < 30, out.getvalue()[-1500:]
        if result["stopped_because"].startswith("no likely answer"):
            asked = {name for name, _ in result["answers"]}
            listed = [by_question[q] for q in result["prediction"]["ask_next"].split("|") if q]
            assert set(listed) <= asked, (listed, asked)


def test_one_condition_left_ends_a_session_only_once_the_triage_waits_on_no_question(model, kb):
    """A one-condition differential ends a session only when no likely answer to an open question
    would change the triage: a 57-year-old with veins standing out and a leg cramp at 91% was
    sent to self-care, unasked whether the calf hurt when pressed, which would send a clot's
    case the same day."""
    from pipeline.core.wording import QUESTIONS, SPAN_QUESTION

    by_question = {q: n for n, q in QUESTIONS.items()} | {SPAN_QUESTION: "symptom_duration_days"}
    cases = generate_cases(kb, 3000, seed=11)
    cases = pd.concat([cases[cases["condition"] == "dvt"].head(60), cases[cases["condition"] != "dvt"].head(60)])
    one_left = 0
    for record in cases.drop(columns=["condition", "severity"]).to_dict("records"):
        case = {k: (int(v) if k == "age" else {True: "yes", False: "no"}.get(v, v)) for k, v in record.items()
                if not pd.isna(v)}
        out = io.StringIO()
        result = run_session(model, input=_Answers(case, out), output=out, max_questions=15)
        if result["stopped_because"] == "one condition remains in the differential":
            one_left += 1
            asked = {name for name, _ in result["answers"]}
            listed = [by_question[q] for q in (result["prediction"]["ask_next"] or "").split("|") if q]
            assert set(listed) <= asked, (listed, out.getvalue()[-1500:])
    assert one_left >= 5  # the rule is exercised


def test_a_session_stops_for_want_of_questions_only_when_none_past_its_dont_knows_would_change_the_triage(model, kb):
    """A row lists three questions; a session that had those answered "don't know" (unknown to the
    model, so listed again) stopped saying no likely answer would change the triage, while a
    question past them would have: a 46-year-old woman with a tender calf was never asked about
    surgery, cancer, veins or a whole leg swollen, each of which would send her the same day. The
    stop now holds only when nothing in the whole ranking is left to ask."""
    from pipeline.interact.ask import _every_question_to_settle, _ranking_every_question

    cases = generate_cases(kb, 3000, seed=12)
    cases = pd.concat([cases[cases["condition"] == "dvt"].head(40), cases[cases["condition"] != "dvt"].head(40)])
    rng = np.random.default_rng(3)
    unlimited = _ranking_every_question(model)
    stopped = 0
    for record in cases.drop(columns=["condition", "severity"]).to_dict("records"):
        case = {k: (int(v) if k == "age" else {True: "yes", False: "no"}.get(v, v)) for k, v in record.items()
                if not pd.isna(v) and (k in ("age", "sex") or rng.random() > 0.3)}  # a third not known
        out = io.StringIO()
        result = run_session(model, input=_Answers(case, out), output=out, max_questions=15)
        if result["stopped_because"].startswith("no likely answer"):
            stopped += 1
            asked = {name for name, _ in result["answers"]}
            left = [n for n in _every_question_to_settle(result["case"], model, model.kb, unlimited) if n not in asked]
            assert not left, (left, out.getvalue()[-1500:])
    assert stopped >= 5  # the stop is exercised


def test_questions_about_an_injury_are_never_offered_after_no_injury_and_odd_digits_are_asked_again(model):
    """`+ words` offers what the main flow would ask: nothing about what happened at an injury
    after "no injury" (the pop, pain that came later, swelling within hours), no pregnancy to a
    woman past the fertile ages; an age typed with a superscript digit is asked again, not a crash."""
    from pipeline.interact.ask import _find

    none = {"age": 30, "sex": "male", "injury_event": "none"}
    fall = {**none, "injury_event": "fall_onto_knee"}
    for words, name in [("pop", "heard_pop"), ("hours or days", "pain_delayed_onset"),
                        ("swell", "swelling_within_hours")]:
        assert name not in _find(words, set(), none, 49) and name in _find(words, set(), fall, 49), words
    assert [_find("pregnant", set(), {"age": age, "sex": "female"}, 49) for age in (49, 50)] == [["pregnant"], []]
    result, text = _session(model, "4\u00b2\n30\nm\n" + "d\n" * 5, max_questions=2)
    assert result["case"]["age"] == 30 and "Please enter a whole number from 12 to 100" in text


def test_an_older_questions_file_with_its_two_unread_settings_still_loads_with_a_warning():
    from pipeline.interact.questions import AskConfig

    with pytest.warns(UserWarning, match="triage_check_questions had no effect and are no longer read"):
        ask = AskConfig.model_validate({"min_score": 0.02, "min_confidence": 0.9, "min_questions": 5,
                                        "triage_check_questions": 3})
    assert ask.min_questions == 5
