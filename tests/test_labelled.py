"""`kneepain evaluate --data FILE`: a user's labelled cases, intervals, rejects, the MLflow run."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.core.metrics import ece_top_label
from pipeline.data.datasets import read_split
from pipeline.report.intervals import MIN_BOOTSTRAP_CASES, bootstrap_interval, wilson_interval
from pipeline.serve.predict import predict


def test_wilson_interval_matches_known_values():
    assert wilson_interval(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    low, high = wilson_interval(45, 50)
    assert low == pytest.approx(0.7864, abs=1e-4) and high == pytest.approx(0.9565, abs=1e-4)
    assert np.isnan(wilson_interval(0, 0)).all()
    # all or none: the bound is 1 or 0 exactly (the floats gave 0.9999999999999999 for 45 of 45)
    assert all(wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0 for n in range(1, 200))
    with pytest.raises(ValueError, match="successes == 11"):
        wilson_interval(11, 10)


def test_bootstrap_interval_brackets_the_mean():
    x = np.random.default_rng(0).normal(size=400)
    low, high = bootstrap_interval(lambda i: float(x[i].mean()), len(x), n_boot=300, seed=1)
    assert low < x.mean() < high and high - low == pytest.approx(2 * 1.96 / 20, rel=0.25)


def test_bootstrap_interval_refuses_too_few_resamples_for_its_ends():
    with pytest.raises(ValueError, match="n_boot == 99, must be >= 100"):
        bootstrap_interval(lambda i: float(i.mean()), 50, n_boot=99)


def test_bootstrap_interval_of_a_biased_figure_still_holds_the_estimate():
    # the binned calibration error of a small sample is inflated by resampling; the bias correction
    # moves the interval back over the estimate
    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(9), size=150)
    y = np.array([rng.choice(9, p=p) for p in proba])
    stat = lambda i: ece_top_label(proba[i], y[i])
    low, high = bootstrap_interval(stat, len(y), n_boot=300, seed=0, floor=0.0)
    assert 0.0 <= low <= stat(np.arange(len(y))) <= high


def test_bootstrap_interval_of_a_score_capped_at_one_stays_at_or_under_it():
    """Resampling a few cases pulls a macro F1 down, and the bias shift carried the upper end past
    1 (0.87 [0.61, 1.06] on 12 labelled cases): the interval is clipped to the ceiling."""
    from pipeline.report.labelled import _macro_f1  # evaluate's own

    rng = np.random.default_rng(12)
    highs = []
    for _ in range(20):
        y = rng.integers(0, 4, 15)
        pred = np.where(rng.random(15) < 0.85, y, rng.integers(0, 4, 15))
        stat = lambda i, y=y, pred=pred: _macro_f1(pred[i], y[i])
        low, high = bootstrap_interval(stat, len(y), n_boot=200, seed=0, floor=0.0, ceiling=1.0)
        assert 0.0 <= low <= high <= 1.0
        highs.append(high)
    assert max(highs) == 1.0  # the cap is reached, not merely never approached


@pytest.fixture(scope="module")
def labelled_csv(small_data, tmp_path_factory):
    frame = read_split("test", small_data).head(300).drop(columns=["severity"])
    text = frame.astype(str).replace({"nan": "", "<NA>": ""})
    text["reference_level"] = ""
    text.loc[0, "reference_level"] = "emergency"
    text.loc[1, "condition"] = "=sprained_ankle"
    text.loc[2, "age"] = "-4"
    text.loc[3, "reference_level"] = "later"
    text["leg_swellng"] = "yes"  # misspelt: read as no field at all
    path = tmp_path_factory.mktemp("own") / "clinic.csv"
    # label columns spelt as a spreadsheet may spell them: matched as case fields are
    text.rename(columns={"reference_level": "Reference_Level", "condition": " condition"}).to_csv(path, index=False)
    return path


def test_evaluate_on_a_labelled_file_reports_intervals_and_rejects(trained, labelled_csv, tmp_path, monkeypatch, capsys):
    import mlflow

    models, uri = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(labelled_csv), "--model", str(models), "--out", str(out),
                 "--bootstrap", "100"]) == 1  # three rows rejected: left out, and said by the exit code as `score` says it
    m = json.loads((out / "metrics.json").read_text())
    assert (m["n_rows"], m["n"], m["n_rejected"]) == (300, 297, 3)
    for key in ("accuracy", "top3_accuracy", "log_loss", "brier", "macro_f1"):
        low, high = m[f"{key}_ci"]
        assert low <= m[key] <= high, key
    low, high = m["ece_if_calibrated"]  # the ECE has a calibrated model's range instead, above 0 on 297 cases
    assert 0 < low < high < 0.5 and "ece_ci" not in m
    assert set(m["per_condition"]["dvt"]["recall"]) == {"value", "ci", "n"}
    assert sum(map(sum, m["confusion_matrix"]["counts"])) == 297
    assert "1 rows" in m["triage"]["reference"] and 0 <= m["triage"]["safe_advice_rate"]["value"] <= 1
    # each triage rate is a share of the cases it names, counted here from predict()'s own answers
    valid = pd.read_csv(labelled_csv, dtype=str, keep_default_na=False).drop(index=[1, 2, 3])
    scored = predict(valid.drop(columns=[" condition", "Reference_Level", "leg_swellng"]), model=models)
    non_dvt = (valid[" condition"] != "dvt").to_numpy()
    emergency = (scored["triage"] == "emergency").to_numpy()
    t = m["triage"]
    assert t["non_dvt_emergency_rate"]["n"] == non_dvt.sum() == 297 - t["n_dvt"]
    assert t["non_dvt_emergency_rate"]["value"] == pytest.approx(emergency[non_dvt].mean())
    assert t["dvt_emergency_rate"]["value"] == pytest.approx(emergency[~non_dvt].mean())
    assert t["over_triage_emergency_rate"]["n"] == 297
    rejects = (out / "rejects.csv").read_text()
    assert "'=sprained_ankle" in rejects and "later" in rejects and "-4" in rejects  # a formula is shown, not run
    # each reject names its case as well as its row: row numbers break once a file is sorted or filtered
    table = pd.read_csv(out / "rejects.csv", dtype=str, keep_default_na=False)
    ids = pd.read_csv(labelled_csv, dtype=str, keep_default_na=False)["case_id"]
    assert table.columns.tolist() == ["row", "case_id", "column", "value", "reason"]
    assert table["row"].tolist() == ["1", "2", "3"] and table["case_id"].tolist() == ids[1:4].tolist()
    assert m["ignored_columns"] == ["leg_swellng"]
    told = capsys.readouterr()
    # the summary and report.md both say it (stderr alone, beside a clean report, was missed)
    ignored = "Ignoring columns that are not case fields: leg_swellng (did you mean leg_swelling?): every case's answer"
    assert ignored in told.out and ignored in (out / "report.md").read_text(encoding="utf-8")
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "report.md", "rejects.csv", "confusion_matrix.png",
                                                "reliability.png"}
    assert "accuracy" in told.out
    run = mlflow.MlflowClient(uri).get_run(m["mlflow_run_id"])
    inputs = run.inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == ["clinic"]
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "evaluation"
    assert run.data.metrics["accuracy"] == pytest.approx(m["accuracy"])
    assert run.data.tags["kneepain.model_run_id"] == json.loads((models / "manifest.json").read_text())["mlflow_run_id"]


def test_a_file_lacking_conditions_gets_strict_json_with_null_for_what_it_cannot_measure(trained, labelled_csv,
                                                                                          tmp_path):
    """A clinic's file seldom holds every condition: the recall of one it lacks is not a number,
    written null (strict JSON has no NaN: jq and JavaScript refuse a bare NaN)."""
    models, _ = trained
    frame = pd.read_csv(labelled_csv, dtype=str, keep_default_na=False).iloc[4:]
    two = frame[frame[" condition"].isin(["dvt", "osteoarthritis"])]
    path, out = tmp_path / "two.csv", tmp_path / "eval"
    two.to_csv(path, index=False)
    assert main(["evaluate", "--data", str(path), "--model", str(models), "--out", str(out), "--bootstrap", "100",
                 "--no-mlflow"]) == 0

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    m = json.loads((out / "metrics.json").read_text(), parse_constant=refuse)
    assert m["per_condition"]["leg_cramp"]["recall"]["value"] is None
    assert m["per_condition"]["dvt"]["recall"]["value"] >= 0
    # what macro F1 averages over is said: a condition the file lacks but the model predicted counts as 0
    assert "a condition this file lacks but the model predicted counts with an F1 of 0" in (out / "report.md").read_text()


def test_a_calibrated_model_s_ece_falls_in_its_calibrated_range_and_a_miscalibrated_one_above_it():
    """The binned ECE of 50 cases is about 0.09 for a perfectly calibrated model: a bootstrap
    interval of it held the model's 50,000-case ECE (0.004) in almost no 50-case set. Labels drawn
    from the probabilities (a calibrated model by construction) land in the range about 95% of
    the time; an over-confident model's land above it."""
    import functools

    from pipeline.core.metrics import ece_top_label
    from pipeline.core.schema import CONDITIONS
    from pipeline.report.intervals import calibrated_range

    def ece(proba, labels):
        return ece_top_label(proba, labels, 15)

    rng = np.random.default_rng(7)
    inside = above = 0
    for _ in range(60):
        proba = rng.dirichlet(np.full(len(CONDITIONS), 0.3), size=50)
        cumulative = np.cumsum(proba, axis=1)
        labels = np.minimum((cumulative < rng.random((50, 1))).sum(axis=1), len(CONDITIONS) - 1)
        low, high = calibrated_range(functools.partial(ece, proba), proba, n_draws=200, seed=1)
        inside += low <= ece(proba, labels) <= high
        sharp = proba ** 3 / (proba ** 3).sum(axis=1, keepdims=True)  # the same labels, over-confident probabilities
        low, high = calibrated_range(functools.partial(ece, sharp), sharp, n_draws=200, seed=1)
        above += ece(sharp, labels) > high
    assert inside >= 50 and above >= 30, (inside, above)  # 95% of 60 is 57: 50 or fewer has chance < 1e-3


def test_labels_are_matched_as_column_names_are_and_as_the_report_names_them(small_data):
    """`Baker's cyst` and `Leg Cramp` (the report's own names) were rejected as "not a condition",
    and a reference level of `unknown` rejected its row, whose condition was valid."""
    from pipeline.data.real import validate_labelled

    given = ["Baker's cyst", "bakers cyst", "Leg Cramp", " ACL-injury ", "DVT", "Deep vein thrombosis",
             "runner\u2019s knee", "acl", "", "gout"]
    levels = ["See doctor soon", "self care", "see-doctor", "unknown", "Unknown", "", "EMERGENCY", "", "", "later"]
    cases = read_split("test", small_data).head(len(given)).assign(condition=given, reference_level=levels)
    found = validate_labelled(cases)
    assert found.valid["condition"].tolist() == ["bakers_cyst", "bakers_cyst", "leg_cramp", "acl_injury", "dvt", "dvt",
                                                 "runners_knee"]
    assert found.reference.tolist() == [2, 0, 1, -1, -1, -1, 3]  # unknown is not set, as a blank is
    reasons = dict(zip(found.rejects["row"], found.rejects["reason"]))
    assert sorted(reasons) == [7, 8, 9] and found.rejects["column"].tolist() == ["condition"] * 3 + ["reference_level"]
    assert reasons[7].startswith("not a condition; allowed: leg_cramp, ") and reasons[8].startswith("missing: ")
    assert "ACL injury" in reasons[7] and "ACL tear or OA" in reasons[7]  # every name, and that others are read


def test_labels_are_read_by_the_other_names_clinical_records_give_the_conditions(small_data):
    """`ACL tear`, `OA`, `Baker cyst`, `popliteal cyst`, `torn meniscus` and the like were rejected
    as "not a condition", and a condition whose every case was so labelled vanished from the
    evaluation; each names one of the nine and nothing else, so "arthritis" stays refused."""
    from pipeline.core.schema import CONDITIONS
    from pipeline.data.real import CONDITION_SYNONYMS, validate_labelled

    given = ["ACL tear", "OA", "Baker cyst", "Popliteal cyst", "torn meniscus", "Hamstring strain", "PCL rupture",
             "patellofemoral pain", "Osteo-arthritis", "arthritis"]
    cases = read_split("test", small_data).head(len(given)).assign(condition=given)
    found = validate_labelled(cases)
    assert found.valid["condition"].tolist() == ["acl_injury", "osteoarthritis", "bakers_cyst", "bakers_cyst",
                                                 "meniscus_tear", "hamstring_injury", "pcl_injury", "runners_knee",
                                                 "osteoarthritis"]
    assert found.rejects["row"].tolist() == [9]
    names = [n for names in CONDITION_SYNONYMS.values() for n in names]
    assert len(names) == len(set(names)) and set(CONDITION_SYNONYMS) == set(CONDITIONS)


def test_an_evaluation_of_a_file_is_not_written_over_the_stages_reports(trained, labelled_csv, tmp_path, capsys):
    """`--out reports` replaced the DVC stage's headline metrics.json, which git tracks, without a word."""
    models, _ = trained
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in ("metrics.json", "metrics_detail.json", "model_card.md"):
        (reports / name).write_text("the stage's\n")
    assert main(["evaluate", "--data", str(labelled_csv), "--model", str(models), "--out", str(reports),
                 "--no-mlflow"]) == 2
    assert ("holds the evaluation stage's reports (metrics_detail.json, model_card.md), whose metrics.json this "
            "evaluation would replace") in capsys.readouterr().err
    assert sorted(p.name for p in reports.iterdir()) == ["metrics.json", "metrics_detail.json", "model_card.md"]
    assert (reports / "metrics.json").read_text() == "the stage's\n"


def test_an_evaluation_is_not_written_among_the_cases_it_may_be_of(trained, labelled_csv, tmp_path, capsys):
    """`--out data/real` wrote the reports, and a rejects.csv of rows, among the real cases that
    `train --extra-data` and DVC read; a folder of an earlier evaluation (its own rejects.csv) is
    still written over."""
    import shutil

    models, _ = trained
    real = tmp_path / "real"
    real.mkdir()
    shutil.copy(labelled_csv, real / "clinic.csv")
    assert main(["evaluate", "--data", str(real / "clinic.csv"), "--model", str(models), "--out", str(real),
                 "--no-mlflow"]) == 2
    assert (f"--out {real}: holds case files (clinic.csv), among which the reports and a rejects.csv would be "
            "written; give a folder of its own for the reports (default reports/evaluations/clinic).") \
        in capsys.readouterr().err
    assert sorted(p.name for p in real.iterdir()) == ["clinic.csv"]
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "rejects.csv").write_text("row,reject_reason\n")
    assert main(["evaluate", "--data", str(real / "clinic.csv"), "--model", str(models), "--out", str(earlier),
                 "--no-mlflow", "--bootstrap", "100"]) in (0, 1)
    assert (earlier / "metrics.json").exists()


@pytest.mark.parametrize("data", ["file", "folder"])
def test_an_evaluation_is_not_written_into_a_model_folder(trained, small_data, labelled_csv, tmp_path, capsys, data):
    """`--out models` wrote the reports and plots among the model's files (which DVC caches as one
    output) without a word, for a file of labelled cases and for a data folder alike."""
    import shutil

    models, _ = trained
    folder = tmp_path / "models"
    shutil.copytree(models, folder)
    before = sorted(p.name for p in folder.iterdir())
    given = ["--data", str(labelled_csv), "--no-mlflow"] if data == "file" else ["--data", str(small_data)]
    assert main(["evaluate", *given, "--model", str(folder), "--out", str(folder)]) == 2
    assert f"--out {folder}: is a model folder" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == before
    # a data folder (its manifest.json is the generator's) is refused as what it is, not as a model's
    assert main(["evaluate", "--data", str(labelled_csv), "--no-mlflow", "--model", str(folder),
                 "--out", str(small_data)]) == 2
    err = capsys.readouterr().err
    assert "holds a manifest.json that is not a model's (a data folder's?)" in err and "is a model folder" not in err
    # a model folder whose manifest.json is damaged is still a model folder
    (folder / "manifest.json").write_text("{")
    assert main(["evaluate", "--data", str(labelled_csv), "--no-mlflow", "--model", str(models),
                 "--out", str(folder)]) == 2
    assert f"--out {folder}: is a model folder" in capsys.readouterr().err


def test_figures_on_the_few_rows_left_after_most_were_rejected_say_so(trained, labelled_csv, tmp_path, capsys):
    """A spreadsheet's decimal commas rejected 382 of 400 rows, and the figures on the 18 left (those
    with no BMI) came with no word that they rest on a few rows unlike the rest; the reason now
    names the decimal comma too."""
    models, _ = trained
    frame = pd.read_csv(labelled_csv, dtype=str, keep_default_na=False).iloc[4:64]
    frame.loc[frame.index[:40], "bmi"] = "27,5"
    frame.to_csv(tmp_path / "commas.csv", index=False)
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(models), "--no-mlflow", "--bootstrap", "100", "--out", str(out),
                 "--data", str(tmp_path / "commas.csv")]) == 1
    said = "Most rows were rejected (40 of 60): the figures are on the 20 left, which need not be like the rest"
    told = capsys.readouterr().out
    assert said in told and said in (out / "report.md").read_text(encoding="utf-8")
    assert "bmi: not a number (a decimal comma? numbers are written with a point: 30.1, not 30,1)" in told


def test_scoring_a_labelled_file_ignores_its_label_columns_without_a_word(trained, labelled_csv, tmp_path, capsys):
    """`kneepain score` on a labelled file warned that it ignored `reference_level` but said
    nothing of `condition`: both are labelled cases' columns, which scoring has no use for."""
    models, _ = trained
    assert main(["score", str(labelled_csv), "-o", str(tmp_path / "scored.csv"), "--model", str(models),
                 "--quiet"]) == 1  # the file's three bad rows
    err = capsys.readouterr().err
    assert "ignoring columns that are not case fields: leg_swellng (did you mean leg_swelling?)" in err, err
    assert "Reference_Level" not in err and "condition" not in err.split("ignoring")[1].split("\n")[0]


def test_a_form_like_column_name_is_named_with_the_field_it_looks_like():
    """`Smoker (Y/N)`, `BMI (kg/m²)`, `Duration (days)` and `ID` were ignored without a hint (only
    `Fever?` got one): their answers read as unknown in every case."""
    from pipeline.core.parsing import ignored_columns_message

    assert ignored_columns_message(["ID", "BMI (kg/m²)", "Smoker (Y/N)", "Duration (days)", "Fever?", "pain",
                                    "notes", "Swelling", "Onset?"]) == (
        "ignoring columns that are not case fields: ID (did you mean case_id?), BMI (kg/m²) (did you mean bmi?), "
        "Smoker (Y/N) (did you mean smoker?), Duration (days) (did you mean symptom_duration_days?), Fever? (did "
        "you mean fever?), pain, notes, Swelling, Onset? (did you mean onset?)")  # "pain" and "swelling" are words
    # of several fields: no guess; "onset" is a field's whole name, though a word of pain_delayed_onset too
    # (a swelling of the knee, the leg, behind the knee, within hours: a spelling cannot say which; it
    # was guessed as leg_swelling, the nearest by letters)


def test_an_input_among_the_evaluations_files_is_refused_not_overwritten(trained, labelled_csv, tmp_path, capsys):
    """A labelled file named rejects.csv in the --out folder was deleted (no row rejected) or
    overwritten by the reject lines; an --out that is a file, or inside one, failed with the
    system's error once the evaluation had run."""
    import shutil

    models, _ = trained
    folder = tmp_path / "clinic"
    folder.mkdir()
    data = Path(shutil.copy(labelled_csv, folder / "rejects.csv"))
    before = data.read_bytes()
    assert main(["evaluate", "--data", str(data), "--model", str(models), "--out", str(folder), "--no-mlflow",
                 "--bootstrap", "100"]) == 2
    assert f"{data}: the evaluation's rejects.csv would be the input file {data}: evaluating would overwrite your " \
           "data; give --out another folder." in capsys.readouterr().err
    assert data.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["rejects.csv"]
    from pipeline.core.errors import BatchInputError
    from pipeline.stages import evaluate_file

    with pytest.raises(BatchInputError, match="would be the input file"):  # the library's call as the command's
        evaluate_file(models, data, folder, track=False, n_boot=100)
    assert data.read_bytes() == before
    (tmp_path / "afile").write_text("notes\n")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        assert main(["evaluate", "--data", str(labelled_csv), "--model", str(models), "--out", str(out), "--no-mlflow",
                     "--bootstrap", "100"]) == 2
        assert (f"{tmp_path / 'afile'}: is a file, not a folder, so the evaluation's metrics.json {out / 'metrics.json'} "
                "cannot be written" in capsys.readouterr().err)
    assert main(["evaluate", "--model", str(models), "--out", str(tmp_path / "afile")]) == 2  # a data folder's too
    assert f"{tmp_path / 'afile'}: is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "notes\n"


def test_an_evaluation_stopped_while_its_files_are_written_leaves_the_earlier_one_whole(trained, labelled_csv, tmp_path,
                                                                                         monkeypatch, capsys):
    """The plots were drawn into the folder first: a stop left a broken plot beside the earlier
    evaluation's metrics.json and report.md. Now the files are renamed into place once all are
    written, so the folder holds one evaluation or the other."""
    import os
    import signal

    from pipeline.report import plots

    models, _ = trained
    out = tmp_path / "eval"
    args = ["evaluate", "--data", str(labelled_csv), "--model", str(models), "--out", str(out), "--no-mlflow",
            "--bootstrap", "100"]
    assert main(args) == 1  # three rows rejected
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(earlier) == {"metrics.json", "rejects.csv", "confusion_matrix.png", "reliability.png", "report.md"}

    def stopped(*args, **kwargs):  # as `kill` stops it (SIGTERM ended the process at once, its files half written)
        os.kill(os.getpid(), signal.SIGTERM)

    def not_handled(signum, frame):  # where evaluate leaves SIGTERM to Python, which ends the process
        raise RuntimeError("SIGTERM reached the default handler")

    monkeypatch.setattr(plots, "plot_reliability", stopped)  # after the confusion matrix is drawn
    fewer = tmp_path / "fewer.csv"  # other cases: another confusion matrix
    fewer.write_text("".join(labelled_csv.read_text().splitlines(keepends=True)[:150]))
    before = signal.signal(signal.SIGTERM, not_handled)
    try:
        assert main([*args[:2], str(fewer), *args[3:]]) == 2
    finally:
        signal.signal(signal.SIGTERM, before)
    assert "kneepain evaluate: error: stopped by SIGTERM" in capsys.readouterr().err
    # a run killed outright (SIGKILL) leaves its temporary folder: the next run into the folder removes it
    from pipeline.core.files import _host

    killed = out / f".report.md.tmp-{_host()}-999999999-0123456789ab"  # a process id no process has
    killed.mkdir()
    (killed / "confusion_matrix.png").write_bytes(b"")
    monkeypatch.undo()
    assert main(args) == 1 and not killed.exists()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier  # no temporary folder left either


def test_an_evaluation_read_by_a_pipe_closed_early_keeps_its_exit_code(trained, labelled_csv, tmp_path):
    """`kneepain evaluate ... | head -1` ended with "unexpected BrokenPipeError" and exit 2, its files
    written: the reader had what it wanted, and the exit code still says rows were left out (1)."""
    import subprocess
    import sys

    models, _ = trained
    command = (f"{sys.executable} -m pipeline.cli evaluate --data {labelled_csv} --model {models} --out "
               f"{tmp_path / 'eval'} --no-mlflow --bootstrap 100 | true; exit ${{PIPESTATUS[0]}}")  # a reader gone before a line
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr == "", done.stderr
    assert (tmp_path / "eval" / "report.md").exists()


def test_the_default_folder_says_when_it_held_another_file_of_the_same_name(trained, labelled_csv, tmp_path,
                                                                             monkeypatch, capsys):
    """`clinic.csv` and `clinic.parquet` share reports/evaluations/clinic/: the second replaced the
    first without a word."""
    models, _ = trained
    monkeypatch.setenv("KNEEPAIN_HOME", str(tmp_path))
    frame = pd.read_csv(labelled_csv, dtype=str, keep_default_na=False).iloc[4:60]
    frame.to_csv(tmp_path / "clinic.csv", index=False)
    frame.to_parquet(tmp_path / "clinic.parquet", index=False)
    run = ["evaluate", "--model", str(models), "--no-mlflow", "--bootstrap", "100", "--data"]
    assert main([*run, str(tmp_path / "clinic.csv")]) == 0
    assert main([*run, str(tmp_path / "clinic.csv")]) == 0  # the same file again: nothing to say
    assert "holds the evaluation of" not in capsys.readouterr().err
    assert main([*run, str(tmp_path / "clinic.parquet")]) == 0
    folder = tmp_path / "reports" / "evaluations" / "clinic"
    assert (f"warning: {folder} holds the evaluation of {tmp_path / 'clinic.csv'}, another file of the same name; "
            "this one replaces it") in capsys.readouterr().err
    assert json.loads((folder / "metrics.json").read_text())["source"] == str(tmp_path / "clinic.parquet")


def test_a_handful_of_cases_gets_no_bootstrap_interval_rather_than_a_false_one(trained, labelled_csv, tmp_path, capsys):
    """One case resampled is always that case: a zero-width interval would claim certainty."""
    models, _ = trained
    assert np.isnan(bootstrap_interval(lambda i: float(i.mean()), MIN_BOOTSTRAP_CASES - 1)).all()
    assert not np.isnan(bootstrap_interval(lambda i: float(i.mean()), MIN_BOOTSTRAP_CASES, n_boot=100)).any()
    frame = pd.read_csv(labelled_csv, dtype=str, keep_default_na=False).iloc[4:10]
    path, out = tmp_path / "six.csv", tmp_path / "eval"
    frame.to_csv(path, index=False)
    assert main(["evaluate", "--data", str(path), "--model", str(models), "--out", str(out), "--no-mlflow"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 6 and m["log_loss_ci"] == [None, None] and "fewer than 10 cases" in m["intervals"]
    low, high = m["accuracy_ci"]  # a proportion keeps its Wilson interval, wide
    assert high - low > 0.3
    told = capsys.readouterr().out
    assert "no interval" in told and "nan" not in told
    report = (out / "report.md").read_text()
    assert "| n/a |" in report and "nan" not in report
    # no rejected row: no rejects file, and the report points to none
    assert m["n_rejected"] == 0 and not (out / "rejects.csv").exists() and "rejects.csv" not in report
    (tmp_path / "empty.csv").write_text(",".join(frame.columns) + "\n")
    assert main(["evaluate", "--data", str(tmp_path / "empty.csv"), "--model", str(models), "--out",
                 str(tmp_path / "e2"), "--no-mlflow"]) != 0
    assert "the file has no rows (a header only)" in capsys.readouterr().err


def test_rows_the_model_was_fitted_on_are_left_out_however_the_file_was_saved(trained, small_data, tmp_path,
                                                                             monkeypatch, capsys):
    """Training rows saved again as CSV have other bytes than the training file: found by their
    answers and condition, they are left out and counted (`kneepain evaluate` exits with 1, as for
    rejected rows: it exited with 0 with three rows in four left out), and a file of nothing else
    is refused."""
    from pipeline.core.errors import BatchInputError
    from pipeline.report.labelled import format_labelled
    from pipeline.stages import evaluate_file

    models, _ = trained
    seen = read_split("train", small_data).head(40).drop(columns=["severity"])
    new = read_split("test", small_data).head(100).drop(columns=["severity"])
    path = tmp_path / "mixed.csv"
    pd.concat([new.head(50), seen, new.tail(50)]).to_csv(path, index=False)
    result = evaluate_file(models, path, tmp_path / "eval", track=False, n_boot=100, data=small_data)
    m = result.metrics
    # the fixture's model was also trained on a file given with --extra-data, whose path is not kept
    assert m["n"] == 100 and m["fitted_rows"] == {"left_out": 40, "rows": list(range(50, 90)),
                                                   "checked_against": ["train", "valid", "calib"],
                                                   "not_checked": ["extra"], "folder": str(small_data)}
    assert ("Left out 40 rows with the answers and condition of a row the model was fitted on (rows 50, 51, 52, "
            "53, 54, 55, 56, 57, 58, 59, ...; all in metrics.json") in format_labelled(m)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["fitted_rows"]["left_out"] == 40
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "synthetic").symlink_to(small_data)
    monkeypatch.setenv("KNEEPAIN_HOME", str(project))
    assert main(["evaluate", "--data", str(path), "--model", str(models), "--out", str(tmp_path / "eval5"),
                 "--no-mlflow", "--bootstrap", "100"]) == 1
    assert "Left out 40 rows" in capsys.readouterr().out
    monkeypatch.delenv("KNEEPAIN_HOME")
    alone = tmp_path / "seen.csv"
    seen.to_csv(alone, index=False)
    with pytest.raises(BatchInputError, match="every valid row \\(40\\) has the answers and condition of a row"):
        evaluate_file(models, alone, tmp_path / "eval2", track=False, n_boot=100, data=small_data)
    narrow = tmp_path / "seen32.parquet"  # numbers saved as 32-bit floats, as some exporters write them
    seen.astype({"bmi": "float32", "symptom_duration_days": "float32"}).to_parquet(narrow)
    with pytest.raises(BatchInputError, match="every valid row \\(40\\)"):
        evaluate_file(models, narrow, tmp_path / "eval2", track=False, n_boot=100, data=small_data)
    # the same condition changed is another case; and where the fitting files cannot be found, it says so
    relabelled = seen.assign(condition=np.where(seen["condition"] == "dvt", "leg_cramp", "dvt"))
    relabelled.to_csv(alone, index=False)
    elsewhere = evaluate_file(models, alone, tmp_path / "eval3", track=False, n_boot=100, data=tmp_path).metrics
    assert elsewhere["n"] == 40 and elsewhere["fitted_rows"]["not_checked"] == ["train", "valid", "calib", "extra"]
    told = format_labelled(elsewhere)
    assert "Not checked row by row against: train, valid, calib (not found in" in told
    # the file given with --extra-data has no place to be found in: no advice that cannot help
    assert ("Not checked row by row against the labelled cases the model was trained on (--extra-data): those among "
            "these rows cannot be left out") in told
    assert evaluate_file(models, alone, tmp_path / "eval4", track=False, n_boot=100,
                         data=small_data).metrics["fitted_rows"]["left_out"] == 0


def test_evaluate_without_condition_column_is_one_clear_error(trained, small_data, tmp_path, capsys):
    models, _ = trained
    path = tmp_path / "unlabelled.csv"
    read_split("test", small_data).head(20).drop(columns=["condition", "severity"]).to_csv(path, index=False)
    assert main(["evaluate", "--data", str(path), "--model", str(models), "--no-mlflow", "--out",
                 str(tmp_path / "eval")]) == 2
    assert "no 'condition' column" in capsys.readouterr().err


def test_evaluate_refuses_a_file_the_model_was_fitted_on(trained, small_data, tmp_path, capsys):
    """Figures on the cases a model was trained (or calibrated) on are not held out: the file with
    the bytes the manifest records is refused, naming how the model used it."""
    models, _ = trained
    for path, how in [(models.parent / "extra.csv", "trained on (--extra-data) this file"),
                      (small_data / "valid.parquet", "calibrated on this file")]:
        assert main(["evaluate", "--data", str(path), "--model", str(models), "--out", str(tmp_path / "eval"),
                     "--no-mlflow"]) == 2
        err = capsys.readouterr().err
        assert how in err and "would not be held out" in err and err.count("\n") == 1, err
    assert not (tmp_path / "eval").exists()
    # the same cases in another file are not recognised: only the exact bytes are
    copy = tmp_path / "copy.csv"
    copy.write_bytes((models.parent / "extra.csv").read_bytes() + b"\n")
    assert main(["evaluate", "--data", str(copy), "--model", str(models), "--out", str(tmp_path / "eval"),
                 "--no-mlflow", "--bootstrap", "100"]) == 1  # evaluated (its invalid rows left out, as in training)


def test_extra_data_on_the_command_line_is_read_from_the_current_folder(small_data, small_config_path, tmp_path,
                                                                         monkeypatch, capsys):
    """As every path a shell gives: `cd data/real && kneepain train --extra-data clinic.csv` means
    this folder's clinic.csv, not the project folder's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KNEEPAIN_HOME", str(tmp_path / "project"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["train", "--config", str(small_config_path), "--data", str(small_data), "--out",
                 str(tmp_path / "models"), "--extra-data", "clinic.csv"]) == 2
    assert f"extra_data.path: {tmp_path / 'clinic.csv'} does not exist." in capsys.readouterr().err
    (tmp_path / "folder.csv").mkdir()
    assert main(["train", "--config", str(small_config_path), "--data", str(small_data), "--out",
                 str(tmp_path / "models"), "--extra-data", "folder.csv"]) == 2
    assert f"extra_data.path: {tmp_path / 'folder.csv'} is a folder, not a file of labelled cases." in \
        capsys.readouterr().err
    # a file of which no row is valid names its problems with their values, not an "unexpected ValueError"
    cases = read_split("test", small_data).head(40).assign(condition="3")
    cases.to_csv(tmp_path / "clinic.csv", index=False)
    assert main(["train", "--config", str(small_config_path), "--data", str(small_data), "--out",
                 str(tmp_path / "models"), "--extra-data", "clinic.csv"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kneepain train: error: extra data {tmp_path / 'clinic.csv'}: no valid labelled row among "
                          "40; the first problems: row 0 (case_id 'test-0000000'), column 'condition', value '3': "), err
    assert "unexpected" not in err and len(err.splitlines()) == 1 and not (tmp_path / "models").exists()
    # a header only says so (it said "the first problems:" and nothing after them)
    (tmp_path / "clinic.csv").write_text(",".join(cases.columns) + "\n")
    assert main(["train", "--config", str(small_config_path), "--data", str(small_data), "--out",
                 str(tmp_path / "models"), "--extra-data", "clinic.csv"]) == 2
    assert capsys.readouterr().err.strip() == (f"kneepain train: error: extra data {tmp_path / 'clinic.csv'}: the file "
                                               "has no rows (a header only): add its cases, then train again.")
    # a share that holds out every case is the option's error (it was an "unexpected ValueError" at 0.999)
    # (a clinic's own cases: a row of the synthetic test split is rejected as such before the share is taken)
    from pipeline import generate_cases, load_knowledge_base

    own = generate_cases(load_knowledge_base(), 40, seed=5).drop(columns=["severity"])
    own.assign(condition="dvt").to_csv(tmp_path / "clinic.csv", index=False)
    assert main(["train", "--config", str(small_config_path), "--data", str(small_data), "--out",
                 str(tmp_path / "models"), "--extra-data", "clinic.csv", "--extra-holdout", "0.999"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("kneepain train: error: --extra-holdout (extra_data.holdout) 0.999: holding out 0.999 of 40 "
                   "distinct cases (40) leaves none to train on; give a smaller share."), err


def test_the_training_log_names_a_condition_with_no_valid_real_case(small_data, tmp_path, monkeypatch):
    """All 20 ACL cases of a clinic's file were labelled `ACL sprain` and rejected: the log's
    held-out counts simply lacked acl_injury, with no word that the model learnt it from the
    synthetic cases alone."""
    from pipeline.core.config import TrainConfig, load_config
    from pipeline.core.paths import config_path
    from pipeline.stages import read_extra_cases

    cases = read_split("test", small_data).head(200)
    cases = cases.assign(condition=cases["condition"].astype(str).replace({"acl_injury": "ACL sprain"}))
    cases.to_csv(tmp_path / "clinic.csv", index=False)
    config = load_config(TrainConfig, config_path("train.yaml"))
    config = TrainConfig.model_validate(config.model_dump() | {"extra_data": {"path": str(tmp_path / "clinic.csv"),
                                                                             "weight": 1.0, "holdout": 0.25}})
    lines = read_extra_cases(config).summary_lines()
    assert lines[0].startswith(f"Extra cases from {tmp_path / 'clinic.csv'}: ")
    assert (f"  warning: no valid case of acl_injury in {tmp_path / 'clinic.csv'}: for them the model learns from "
            "the synthetic cases alone") in "\n".join(lines)
    assert any("value 'ACL sprain': not a condition" in line for line in lines)


def test_a_holdout_too_large_to_stratify_is_drawn_at_random(small_data):
    """Holding out 75% of 27 cases (3 of each condition) leaves 7 to train on: too few for one of each."""
    from pipeline.data.real import holdout_split

    cases = read_split("test", small_data).groupby("condition", observed=True).head(3)
    assert cases["condition"].value_counts().tolist() == [3] * 9
    to_train, held = holdout_split(cases, 0.75, seed=0)
    assert (len(to_train), len(held)) == (7, 20)
    assert sorted(pd.concat([to_train, held])["case_id"]) == sorted(cases["case_id"])


def test_a_condition_with_one_case_is_trained_on_and_the_others_stay_stratified(small_data):
    """One PCL case in a clinic's file made the whole holdout random: per condition, 1 to 5 of 14
    meniscus tears were held out by seed, and the PCL case was held out as often as not, leaving
    the model none of its condition."""
    from pipeline.data.real import holdout_split

    cases = read_split("test", small_data)
    tens = cases[cases["condition"].isin(["meniscus_tear", "osteoarthritis", "dvt"])].groupby(
        "condition", observed=True).head(10)
    single = cases[cases["condition"] == "pcl_injury"].head(1)
    both = pd.concat([tens, single], ignore_index=True)
    for seed in range(5):
        to_train, held = holdout_split(both, 0.3, seed=seed)
        assert single["case_id"].iloc[0] in set(to_train["case_id"])
        assert held["condition"].astype(str).value_counts().to_dict() == {"meniscus_tear": 3, "osteoarthritis": 3,
                                                                          "dvt": 3}, seed
        assert sorted(pd.concat([to_train, held])["case_id"]) == sorted(both["case_id"])


def test_a_malformed_record_is_one_rejected_row_of_the_evaluation(trained, labelled_csv, tmp_path, capsys):
    """As `kneepain score` does: a record with a field too many is rejected with its reason, and the
    other rows are evaluated; a file that is neither CSV nor Parquet is named as such."""
    models, _ = trained
    lines = labelled_csv.read_text().splitlines()
    bad = tmp_path / "clinic.csv"
    bad.write_text("\n".join([lines[0], *lines[5:100], lines[100] + ",extra", *lines[101:160]]) + "\n")
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(bad), "--model", str(models), "--out", str(out), "--no-mlflow",
                 "--bootstrap", "100"]) == 1
    m = json.loads((out / "metrics.json").read_text())
    assert (m["n_rows"], m["n_rejected"], m["n"]) == (155, 1, 154)
    rejects = pd.read_csv(out / "rejects.csv", dtype=str, keep_default_na=False)
    assert rejects["row"].tolist() == ["95"] and rejects["column"].tolist() == [""]
    assert rejects["case_id"].tolist() == [""]  # a record's fields may be shifted: its id is not taken as read
    assert "fields; the header has" in rejects["reason"][0]
    (tmp_path / "clinic.txt").write_text(bad.read_text())
    assert main(["evaluate", "--data", str(tmp_path / "clinic.txt"), "--model", str(models)]) == 2
    assert "is read as CSV or Parquet, by its extension" in capsys.readouterr().err


def test_macro_f1_of_a_file_averages_the_conditions_it_holds_or_is_predicted_to():
    from pipeline.report.labelled import _macro_f1

    y = np.array([0, 0, 1, 1, 7])
    assert _macro_f1(y.copy(), y) == 1.0  # three conditions, each perfect; the other six are not failures
    pred = np.array([0, 0, 1, 2, 7])  # one case of condition 1 called 2: F1 1, 2/3, 0 and 1 over four present
    assert _macro_f1(pred, y) == pytest.approx((1 + 2 / 3 + 0 + 1) / 4)


def test_repeated_cases_under_other_ids_stay_on_one_side_of_the_holdout(small_data):
    """A repeat visit or a double entry (the same answers and condition, another id) was split like
    any case: 26 of 133 held-out rows of a reviewer's file were rows the model was trained on."""
    from pipeline.data.real import holdout_split

    cases = read_split("test", small_data).head(400).reset_index(drop=True)
    repeats = cases.iloc[100:160].assign(case_id=lambda f: f["case_id"] + "-again")
    both = pd.concat([cases, repeats, repeats.assign(case_id=lambda f: f["case_id"] + "2")], ignore_index=True)
    to_train, held = holdout_split(both, 0.3, seed=0)
    assert len(to_train) + len(held) == len(both) and not set(to_train["case_id"]) & set(held["case_id"])
    content = [c for c in both.columns if c != "case_id"]
    trained_on = set(map(tuple, to_train[content].astype(str).to_numpy()))
    assert not [row for row in map(tuple, held[content].astype(str).to_numpy()) if row in trained_on]
    assert len(held) >= round(0.3 * 400)  # the distinct cases are split as before; repeats follow theirs
    # without repeats, the split is the one it always was
    plain_train, plain_held = holdout_split(cases, 0.3, seed=0)
    assert len(plain_held) == 120 and sorted(plain_held["case_id"]) == sorted(
        set(held["case_id"]) & set(cases["case_id"]))


def test_a_misspelt_label_column_is_named_with_what_it_looks_like(labelled_csv, tmp_path):
    """A misspelt `reference_level` was only "not a case field" (and the clinician's levels went
    unused without a hint); a misspelt `condition` was "no 'condition' column" alone."""
    import re

    from pipeline.core.errors import BatchInputError
    from pipeline.core.parsing import ignored_columns_message
    from pipeline.core.schema import LABELLED_COLUMNS
    from pipeline.data.real import validate_labelled

    assert ignored_columns_message(["referance_level"], "f.csv", also=LABELLED_COLUMNS) == (
        "f.csv: ignoring columns that are not case fields: referance_level (did you mean reference_level?)")
    frame = pd.read_csv(labelled_csv, dtype=str, keep_default_na=False).rename(columns={" condition": "Condtion"})
    with pytest.raises(BatchInputError, match=re.escape("f.csv: no 'condition' column (is 'Condtion' it, misspelt?); ")):
        validate_labelled(frame, where="f.csv")
    for other in ("diagnosis", "Label", "Target"):  # another name for the same column
        with pytest.raises(BatchInputError, match=re.escape(f"no 'condition' column (is {other!r} it? Name that "
                                                            "column condition); ")):
            validate_labelled(frame.rename(columns={"Condtion": other}), where="f.csv")


def test_missing_value_markers_in_labelled_cases_are_named_with_how_to_write_them(trained, small_data, tmp_path,
                                                                                    capsys):
    """An R export of labelled cases (NA for a missing answer): the evaluation says which rejected
    answers were another tool's missing-value marker and how to write them, and so does the
    error when no row is left."""
    models, _ = trained
    cases = read_split("shift", small_data).head(200).astype(object)
    cases.loc[:59, "fever"] = "NA"
    cases.loc[60:64, "fever"] = "."
    path = tmp_path / "from_r.csv"
    cases.to_csv(path, index=False)
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", str(path), "--model", str(models), "--no-mlflow", "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["missing_markers"] == {"NA": 60, ".": 5}
    assert ("  Rejected answers that mark a missing answer in other tools: 'NA' (60 answers), '.' (5 answers). Only a "
            "blank or 'unknown' is read as unknown: write missing answers as blanks (pandas' to_csv does; in R, "
            "write.csv(x, na = \"\")) and evaluate again.") in printed.splitlines()
    cases["fever"] = "NA"
    cases.to_csv(path, index=False)
    assert main(["evaluate", "--data", str(path), "--model", str(models), "--no-mlflow", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no valid labelled row among 200" in err and "in other tools: 'NA' (200 answers)" in err
    first = cases["case_id"].iloc[0]
    assert f"the first problems: row 0 (case_id {first!r}), column 'fever', value 'NA': " in err  # each with its value
    assert err.strip().endswith("and evaluate again.")


def test_extra_cases_that_are_rows_of_a_synthetic_split_are_rejected_not_trained_on(small_data, small_config_path,
                                                                                  tmp_path):
    """Rows of `valid` given with --extra-data were trained on, and the validation log loss measured
    on them (0.4298 against 0.4431) moved the champion alias; rows of `test` made the evaluation's
    figures no longer held out; rows of `train` held out were reported as held-out real cases the
    model had been fitted on (10 of 39 in one run). Each such row is rejected, saying which split
    and why; a clinic's own cases are all taken."""
    from pipeline import generate_cases, load_knowledge_base
    from pipeline.core.config import TrainConfig, load_config
    from pipeline.stages import read_extra_cases

    own = generate_cases(load_knowledge_base().shifted(), 50, seed=91).drop(columns=["severity"])
    own.insert(0, "case_id", [f"clinic-{i}" for i in range(50)])
    valid, test, train = (read_split(name, small_data).drop(columns=["severity"]) for name in ("valid", "test", "train"))
    rows = pd.concat([own.iloc[:25], valid.head(30), own.iloc[25:], test.head(20), train.head(10)], ignore_index=True)
    rows.to_csv(tmp_path / "clinic.csv", index=False)
    config = load_config(TrainConfig, small_config_path)
    config = config.model_copy(update={"extra_data": config.extra_data.model_copy(
        update={"path": str(tmp_path / "clinic.csv"), "holdout": 0.2})})
    extra = read_extra_cases(config, small_data)
    assert extra.rejects["row"].tolist() == [*range(25, 55), *range(80, 110)]
    assert extra.rejects["case_id"].tolist() == [*valid["case_id"].head(30), *test["case_id"].head(20),
                                                 *train["case_id"].head(10)]
    reasons = extra.rejects.set_index("row")["reason"]
    assert reasons[25].startswith("the same case (every answer and the condition) as a row of the synthetic valid "
                                  f"split in {small_data}, which calibrates the model and gives the validation log "
                                  "loss that moves the champion alias"), reasons[25]
    assert "synthetic test split" in reasons[99] and "evaluation's held-out figures" in reasons[99]
    assert reasons[100].startswith("the same case (every answer and the condition) as a row of the synthetic train "
                                   f"split in {small_data}, which the model is trained on already"), reasons[100]
    assert extra.n_rejected == 60 and len(extra.to_train) + len(extra.held_out) == 50
    taken = pd.concat([extra.to_train, extra.held_out])["case_id"]
    assert sorted(taken) == sorted(own["case_id"])
    assert read_extra_cases(config).n_rejected == 0  # without the data folder nothing is looked for


def test_train_refuses_an_out_that_is_a_file_the_data_folder_or_holds_another_manifest(small_data, small_config_path,
                                                                                         tmp_path, capsys, monkeypatch):
    """`--out data/synthetic` replaced the data's manifest.json (its seed and each split's SHA-256,
    in neither git nor DVC) with the model's; `--out afile` trained in full, then failed with a bare
    "[Errno 17] File exists". Each is refused before any training, naming --out."""
    import shutil

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # were one to train
    data = Path(shutil.copytree(small_data, tmp_path / "synthetic"))
    before = (data / "manifest.json").read_bytes()
    (tmp_path / "afile").write_text("hi\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text('{"seed": 1, "splits": {}}')
    for out, message in [(tmp_path / "afile", "is a file; give a folder for the model"),
                         (data, "is the --data folder; the model's manifest.json would replace the data's"),
                         (other, "holds a manifest.json that is not a model's (a data folder's?)")]:
        assert main(["train", "--config", str(small_config_path), "--data", str(data), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"kneepain train: error: --out {out}: {message}") and err.count("\n") == 1, err
    # the stage's function refuses them too, for a notebook or script that calls it
    from pipeline.core.config import ScreenConfig, TrainConfig, TriageConfig, load_config
    from pipeline.core.paths import config_path
    from pipeline.stages import train_stage

    configs = [load_config(TrainConfig, small_config_path), load_config(TriageConfig, config_path("triage.yaml")),
               load_config(ScreenConfig, config_path("screen.yaml"))]
    with pytest.raises(FileExistsError, match="is the --data folder"):
        train_stage(*configs, config_path("knowledge_base.yaml"), data, data)
    assert (tmp_path / "afile").read_text() == "hi\n" and sorted(p.name for p in other.iterdir()) == ["manifest.json"]
    assert (data / "manifest.json").read_bytes() == before


def test_train_and_evaluate_refuse_splits_drawn_from_another_knowledge_base(small_data, small_config_path, trained,
                                                                           tmp_path, capsys, monkeypatch):
    """With a knowledge base edited and the splits not generated again, `evaluate` measured the model
    against the new one's oracle (the model "beat the oracle") and `train` kept the new one in the
    model beside data drawn from the old; both are refused before any work, naming the data's
    manifest. A knowledge base that differs only in its sources, prose and layout is the same one."""
    import shutil

    import yaml

    from pipeline.core.knowledge import load_knowledge_base
    from pipeline.core.paths import config_path
    from pipeline.data.datasets import check_generated_from

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # were one to train
    data = Path(shutil.copytree(small_data, tmp_path / "synthetic"))
    raw = yaml.safe_load(config_path("knowledge_base.yaml").read_text(encoding="utf-8"))
    raw["conditions"]["dvt"]["onset"]["source"] += " (reworded)"
    raw["shift"]["description"] += " (reworded)"
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    check_generated_from(load_knowledge_base(same), data, "nothing")  # no error
    raw["conditions"]["leg_cramp"]["symptoms"]["muscle_spasm"]["p"] = 0.8
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    drawn = f"{data / 'manifest.json'}: the splits were drawn from another knowledge base"
    for command in (["train", "--config", str(small_config_path), "--out", str(tmp_path / "m")],
                    ["evaluate", "--model", str(trained[0]), "--out", str(tmp_path / "r")]):
        assert main([*command, "--data", str(data), "--kb", str(changed)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"kneepain {command[0]}: error: {drawn}") and err.count("\n") == 1, err
        assert "Generate them again (`kneepain generate`, or `dvc repro`)" in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()


def test_the_differential_figures_of_an_evaluation_are_those_of_the_column_users_see(trained, small_data):
    """`evaluate --data` reported the coverage and size of the conformal set alone as the
    differential's (0.920 and 1.31 on 300 cases, where the `differential` column scored from the
    same file holds the true condition for 0.927 at 1.56): the column's are reported beside them
    (`differential.shown`), and the summary and report lead with them."""
    from pipeline.report.labelled import evaluate_labelled
    from pipeline.serve.loading import load_model

    cases = read_split("test", small_data).head(400)
    model = load_model(trained[0])
    metrics, _, _ = evaluate_labelled(model, cases, n_boot=100, seed=0)
    shown = predict(cases.drop(columns=["condition", "severity"]), model=model)["differential"].str.split("|")
    truth = cases["condition"].to_numpy()
    d = metrics["differential"]
    assert d["shown"]["coverage"]["value"] == pytest.approx(np.mean([t in s for t, s in zip(truth, shown)]), abs=1e-12)
    assert d["shown"]["mean_set_size"]["value"] == pytest.approx(shown.str.len().mean(), abs=1e-12)
    # the conformal set's figures keep their names (runs logged before are compared on them)
    assert d["mean_set_size"]["value"] <= d["shown"]["mean_set_size"]["value"]
    assert d["coverage"]["value"] <= d["shown"]["coverage"]["value"] and d["target"] == 0.9


def test_the_summary_says_how_many_kinds_of_reject_reason_it_does_not_list(trained, small_data):
    """Six kinds of rejected row: the summary listed five and dropped the sixth without a word."""
    from pipeline.report.labelled import evaluate_labelled, format_labelled
    from pipeline.serve.loading import load_model

    frame = read_split("test", small_data).drop(columns=["severity"]).head(60).astype({"condition": str})
    frame = frame.astype({c: object for c in ("age", "sex", "bmi", "injury_event", "leg_swelling")})
    for row, column, value in [(0, "age", 300), (1, "sex", "robot"), (2, "bmi", -1), (3, "injury_event", "kick"),
                               (4, "leg_swelling", "maybe"), (5, "condition", "gout")]:
        frame.loc[row, column] = value
    metrics, _, _ = evaluate_labelled(load_model(trained[0]), frame, n_boot=100, seed=0, where="clinic")
    assert metrics["n_rejected"] == 6 and metrics["reject_reason_kinds"] == 6
    assert len(metrics["top_reject_reasons"]) == 5
    assert "  and 1 other kind of reason: every rejected row and its reasons are in rejects.csv" in \
        format_labelled(metrics).splitlines()


def test_cases_repeated_under_other_ids_are_counted_and_said(trained, small_data):
    """40 cases given twice under other ids were evaluated as 80, with intervals of 80 and no word
    (training keeps such repeats on one side of its holdout): the summary and report say how many
    rows repeat another's case, and that the intervals are narrower than the distinct cases'."""
    from pipeline.report.labelled import evaluate_labelled, format_labelled
    from pipeline.serve.loading import load_model

    rows = read_split("test", small_data).drop(columns=["severity"]).head(40)
    twice = pd.concat([rows, rows.assign(case_id=rows["case_id"].astype(str) + "-dup")], ignore_index=True)
    loaded = load_model(trained[0])
    metrics, _, _ = evaluate_labelled(loaded, twice, n_boot=100, seed=0, where="clinic")
    assert (metrics["n"], metrics["repeated_rows"]) == (80, 40)
    assert ("40 rows of the 80 evaluated repeat the answers and condition of another row (a double entry, or a "
            "repeat visit under another id?): each is counted, so the figures weigh those cases more and the "
            "intervals are those of 80 cases, narrower than the 40 distinct ones would give.") in format_labelled(metrics)
    once, _, _ = evaluate_labelled(loaded, rows, n_boot=100, seed=0, where="clinic")
    assert once["repeated_rows"] == 0 and "repeat" not in format_labelled(once)
