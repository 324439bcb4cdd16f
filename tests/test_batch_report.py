"""`kneepain score --report`: the one-page summary of a scored batch, checked as HTML and in a browser."""

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.core.schema import CONDITIONS
from pipeline.data.datasets import read_split

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.images, self.text = set(), [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.images.append(a["src"])

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def report(trained, small_data, tmp_path_factory):
    models, _ = trained
    folder = tmp_path_factory.mktemp("batch")
    cases = read_split("shift", small_data).head(503).drop(columns=["condition", "severity"])
    cases = cases.astype(str).replace({"nan": "", "<NA>": ""})
    cases.loc[0, "age"] = "200"
    cases.loc[1, "sex"] = "robot"
    cases.loc[2, "age"] = "-1"
    cases.to_csv(folder / "clinic.csv", index=False)
    code = main(["score", str(folder / "clinic.csv"), "-o", str(folder / "scored.csv"), "--model", str(models),
                 "--report", str(folder / "batch.html"), "--quiet"])
    assert code == 1  # rows were rejected
    return folder


def test_report_numbers_cover_rows_triage_mix_atypical_and_drift(report):
    s = json.loads((report / "batch.json").read_text())
    assert (s["rows_scored"], s["rows_rejected"]) == (500, 3)
    assert sum(s["top_reject_reasons"].values()) == 3 and any(k.startswith("age:") for k in s["top_reject_reasons"])
    assert sum(s["triage"].values()) == pytest.approx(1.0) and 0 <= s["atypical_rate"] <= 1
    mix = s["case_mix"]["conditions"]
    assert sum(v["estimated"] for v in mix.values()) == pytest.approx(1.0)
    drift = {d["field"]: d for d in s["drift"]}
    # `shift` is 8 years older and leaves half again as many answers unknown
    assert drift["age"]["psi"] > 0.1 and drift["sex"]["psi"] < drift["age"]["psi"]
    optional = [d for d in s["drift"] if d["unknown_training"] > 0.02]
    assert sum(d["unknown_batch"] > d["unknown_training"] for d in optional) > 0.7 * len(optional)


def test_report_reads_the_rejects_where_they_went_and_shares_no_file(trained, report, tmp_path, capsys):
    models, _ = trained
    src = report / "clinic.csv"
    base = ["score", str(src), "--model", str(models), "--quiet"]
    # a stale rejects file beside the output is not this run's: the report counts --rejects
    (tmp_path / "o.csv.rejects.csv").write_text("stale\n")
    assert main([*base, "-o", str(tmp_path / "o.csv"), "--rejects", str(tmp_path / "r.csv"),
                 "--report", str(tmp_path / "o.html")]) == 1
    s = json.loads((tmp_path / "o.json").read_text())
    assert (s["rows_scored"], s["rows_rejected"]) == (500, 3)
    scored = pd.read_csv(tmp_path / "o.csv")
    assert s["predicted"] == {c: (scored["prediction"] == c).mean() for c in CONDITIONS}
    # rejects written as Parquet (by their name) are read as Parquet: the same counts and reasons
    assert main([*base, "-o", str(tmp_path / "p.csv"), "--rejects", str(tmp_path / "r.parquet"),
                 "--report", str(tmp_path / "p.html")]) == 1
    p = json.loads((tmp_path / "p.json").read_text())
    assert (p["rows_rejected"], p["top_reject_reasons"]) == (3, s["top_reject_reasons"])
    for extra in (["--rejects", str(tmp_path / "x.json"), "--report", str(tmp_path / "x.html")],  # the numbers' file
                  ["--rejects", str(tmp_path / "y.html"), "--report", str(tmp_path / "y.html")]):
        assert main([*base, "-o", str(tmp_path / "x.csv"), *extra]) == 2
        assert "would be the same file" in capsys.readouterr().err
        assert not (tmp_path / "x.csv").exists()
    assert main([*base, "-o", str(tmp_path / "z.csv"), "--float-digits", "2", "--report", str(tmp_path / "z.html")]) == 2
    assert "--float-digits 6 or more" in capsys.readouterr().err


def test_a_small_batch_gets_no_case_mix_and_is_told_why(trained, report, tmp_path):
    """Shares estimated from a few rows are noise: under 500 the page says so instead (as --adapt-priors refuses)."""
    models, _ = trained
    small = tmp_path / "small.csv"
    pd.read_csv(report / "clinic.csv", dtype=str, keep_default_na=False).iloc[3:13].to_csv(small, index=False)
    assert main(["score", str(small), "-o", str(tmp_path / "o.csv"), "--model", str(models), "--quiet",
                 "--report", str(tmp_path / "o.html")]) == 0
    s = json.loads((tmp_path / "o.json").read_text())
    assert s["rows_scored"] == 10 and s["case_mix"] is None
    assert s["case_mix_note"] == "not estimated: 10 rows were scored, and the case mix is estimated from 500 or more " \
                                 "(as --adapt-priors needs)"
    page = _Page()
    page.feed((tmp_path / "o.html").read_text())
    assert "case-mix" in page.ids and "plot-case_mix" not in page.ids
    assert any("not estimated: 10 rows" in t for t in page.text)
    # nor is drift measured on ten rows (every field read as a large shift)
    assert "drift" not in s and s["drift_note"] == "not measured: 10 rows were scored, and drift is measured on 500 or more"
    assert "drift" in page.ids and "plot-drift" not in page.ids


def test_drift_is_measured_on_the_rows_scored_whatever_the_chunking(trained, report, tmp_path):
    """Rows rejected for repeating an earlier id (in another chunk or file) are not in the
    drift table, as they are not in the output: the table is the one input's alone."""
    models, _ = trained
    clinic = pd.read_csv(report / "clinic.csv", dtype=str, keep_default_na=False)
    assert clinic["case_id"].is_unique
    clinic.assign(age="90", symptom_duration_days="3000").to_csv(tmp_path / "again.csv", index=False)
    drifts = []
    for rows in ("7", "16384"):
        assert main(["score", str(report / "clinic.csv"), str(tmp_path / "again.csv"), "-o", str(tmp_path / f"o{rows}.csv"),
                     "--model", str(models), "--quiet", "--chunk-rows", rows,
                     "--report", str(tmp_path / f"o{rows}.html")]) == 1
        drifts.append(json.loads((tmp_path / f"o{rows}.json").read_text())["drift"])
    alone = json.loads((report / "batch.json").read_text())["drift"]
    assert drifts[0] == drifts[1] == alone


def test_a_batch_with_no_row_scored_shows_no_figures(trained, report, tmp_path):
    """A header-only file, or one whose every row is rejected: the page says no row was scored
    rather than showing 0% at every level, an atypical rate of nan and a drift in every field."""
    models, _ = trained
    rows = pd.read_csv(report / "clinic.csv", dtype=str, keep_default_na=False).iloc[3:8]
    for name, frame, code in (("header_only", rows.iloc[:0], 0), ("all_rejected", rows.assign(age="300"), 1)):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        assert main(["score", str(tmp_path / f"{name}.csv"), "-o", str(tmp_path / f"{name}.out.csv"), "--model",
                     str(models), "--quiet", "--report", str(tmp_path / f"{name}.html")]) == code
        s = json.loads((tmp_path / f"{name}.json").read_text())
        assert s["rows_scored"] == 0 and not {"triage", "atypical_rate", "drift"} & set(s), name
        page = _Page()
        page.feed((tmp_path / f"{name}.html").read_text())
        assert any("No row was scored" in t for t in page.text), name
        assert not {"triage", "case-mix", "drift"} & page.ids and not page.images, name


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_stop_while_the_report_is_written_says_the_output_is_whole(trained, report, tmp_path, capsys, monkeypatch,
                                                                     signum):
    import os
    import signal
    import time

    from pipeline.report import batch_report

    def stopped(*args, **kwargs):  # the signal arrives while the report reads the inputs again
        os.kill(os.getpid(), getattr(signal, signum))
        time.sleep(5)

    monkeypatch.setattr(batch_report, "write_batch_report", stopped)
    models, _ = trained
    code = main(["score", str(report / "clinic.csv"), "-o", str(tmp_path / "o.csv"), "--model", str(models), "--quiet",
                 "--report", str(tmp_path / "o.html"), "--adapt-priors"])
    err = capsys.readouterr().err.strip()
    # the case mix, written before the report, is not said to be missing
    assert code == 2 and err.endswith(f"stopped by {signum} after {tmp_path / 'o.csv'} was written in full; the batch "
                                      "report was not written"), err
    assert len(pd.read_csv(tmp_path / "o.csv")) == 500 and not (tmp_path / "o.html").exists()
    assert (tmp_path / "o.csv.priors.json").exists()


def test_the_reports_drawing_modules_are_imported_before_the_output_is_written(trained, report, tmp_path):
    """matplotlib's compiled modules fail their import for good when a stop lands in it: with
    --report they are imported before scoring, where a stop leaves no output, not after it."""
    import subprocess
    import sys

    models, _ = trained
    script = ("import sys\n"
              "from pipeline.serve import batch\n"
              "score = batch.score_files\n"
              "def scored(*args, **kwargs):\n"
              "    print('agg' if 'matplotlib.backends.backend_agg' in sys.modules else 'none', file=sys.stderr)\n"
              "    return score(*args, **kwargs)\n"
              "batch.score_files = scored\n"
              "from pipeline.cli import main\n"
              f"sys.exit(main(['score', {str(report / 'clinic.csv')!r}, '-o', {str(tmp_path / 'o.csv')!r}, '--model', "
              f"{str(models)!r}, '--quiet', '--report', {str(tmp_path / 'o.html')!r}]))\n")
    job = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert job.returncode == 1 and job.stderr.splitlines()[0] == "agg", job.stderr  # 1: the file has rejected rows
    assert (tmp_path / "o.html").exists()


def test_report_page_is_self_contained_html_with_every_section(report):
    page = _Page()
    page.feed((report / "batch.html").read_text())
    assert {"rows", "triage", "case-mix", "drift", "atypical-rate", "plot-triage", "plot-case_mix", "plot-drift"} <= page.ids
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(page.text)
    assert "not a diagnosis" in text and "Estimated case mix" in text and "Saerens" in text


def test_report_renders_in_a_headless_browser(report, tmp_path):
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless Chromium on PATH (apt-get install chromium-headless-shell)")
    url = (report / "batch.html").as_uri()
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1100,2600"]
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    assert 'id="drift"' in dom and "Estimated case mix" in dom
    shot = tmp_path / "batch.png"
    subprocess.run([*args, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a drawn page, not a blank one


def test_an_input_given_twice_is_refused_before_any_page_is_written(trained, report, tmp_path):
    """An input given twice was scored twice, and its page counted its rejected rows once: the job
    is refused instead, and neither the output nor the page is written."""
    models, _ = trained
    clinic = report / "clinic.csv"
    assert main(["score", str(clinic), str(clinic), "-o", str(tmp_path / "twice.csv"), "--model", str(models),
                 "--report", str(tmp_path / "twice.html"), "--quiet"]) == 2
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]


def test_one_row_no_row_and_reasons_past_the_table_are_said_as_they_are(trained, report, tmp_path):
    """"1 rows were scored"; a batch with no row scored had predicted shares of 0 for every
    condition (shares of nothing); and the reasons past the top 8 were left out without a word."""
    models, _ = trained
    clinic = pd.read_csv(report / "clinic.csv", dtype=str, keep_default_na=False)
    clinic.iloc[3:4].to_csv(tmp_path / "one.csv", index=False)
    assert main(["score", str(tmp_path / "one.csv"), "-o", str(tmp_path / "one_out.csv"), "--model", str(models),
                 "--quiet", "--report", str(tmp_path / "one.html")]) == 0
    assert json.loads((tmp_path / "one.json").read_text())["case_mix_note"].startswith("not estimated: 1 row was scored,")
    bad = clinic.iloc[3:15].copy()
    bad["sex"] = [f"other-{i}" for i in range(12)]  # one kind: not allowed
    for i, column in enumerate(["smoker", "sedentary", "fever", "locking", "grinding", "stiffness", "weakness",
                                "tingling", "bruising", "skin_red"]):
        bad.iloc[i, bad.columns.get_loc(column)] = "maybe"  # ten kinds more, one row each
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert main(["score", str(tmp_path / "bad.csv"), "-o", str(tmp_path / "bad_out.csv"), "--model", str(models),
                 "--quiet", "--report", str(tmp_path / "bad.html")]) == 1
    s = json.loads((tmp_path / "bad.json").read_text())
    assert (s["rows_scored"], s["predicted"], s["reject_reason_kinds"]) == (0, None, 11)
    assert len(s["top_reject_reasons"]) == 8 and s["top_reject_reasons"]["sex: not allowed"] == 12
    page = _Page()
    page.feed((tmp_path / "bad.html").read_text())
    assert any("3 other kinds of reason not shown" in t for t in page.text)
