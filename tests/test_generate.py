import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline import generate_cases
from pipeline.core.config import GenerateConfig
from pipeline.core.files import sha256_file
from pipeline.core.knowledge import AGES, duration_mass_below
from pipeline.core.parsing import parse_cases
from pipeline.core.schema import CATEGORY_FIELDS, CONDITIONS, FIELDS, SYMPTOMS, field, max_duration_days
from pipeline.data.generate import generate_codes, write_splits

# Statistical tests: two-sided, family-wise level 0.001 over all comparisons in a test (Bonferroni),
# on 200k cases from a fixed seed.
FAMILY_ALPHA = 1e-3


def test_generated_cases_pass_the_schema(kb):
    frame = generate_cases(kb, 5000, seed=3)
    assert list(frame.columns[:len(FIELDS)]) == [f.name for f in FIELDS]
    parsed = parse_cases(frame)  # raises on any illegal value
    assert parsed.valid.all()
    for name in CATEGORY_FIELDS:
        assert set(frame[name].dropna().unique()) <= set(field(name).allowed)
    assert frame["age"].between(12, 100).all()
    assert set(frame["condition"].unique()) <= set(CONDITIONS)
    assert set(frame["severity"].unique()) <= {"mild", "moderate", "severe"}
    assert not frame.loc[frame["sex"] == "male", "pregnant"].eq(True).any()


def test_symptom_frequencies_match_the_knowledge_base(kb, big_sample):
    codes, cond, _ = big_sample
    n_tests = len(CONDITIONS) * (len(SYMPTOMS) + 2)
    z_crit = stats.norm.isf(FAMILY_ALPHA / n_tests / 2)
    for name in (*SYMPTOMS, "heard_pop", "pain_delayed_onset"):
        expected = (kb.tristate[name] * kb.severity).sum(axis=1)
        for k in range(len(CONDITIONS)):
            answered = codes[name][(cond == k) & (codes[name] >= 0)]
            p = expected[k]
            z = (answered.mean() - p) / np.sqrt(p * (1 - p) / len(answered))
            assert abs(z) < z_crit, f"{CONDITIONS[k]}.{name}: {answered.mean():.4f} vs {p:.4f} (z={z:.1f})"


def test_context_frequencies_match_the_knowledge_base(kb, big_sample):
    codes, cond, _ = big_sample
    tables = {name: kb.category[name] for name in ("activity", "onset", "injury_event")}
    tables["age"] = kb.age_pmf
    n_tests = len(CONDITIONS) * len(tables)
    for name, probs in tables.items():
        for k in range(len(CONDITIONS)):
            values = codes[name][(cond == k) & ~np.isnan(codes[name].astype(float)) & (codes[name] >= 0)]
            if name == "age":
                values = (values - AGES[0]).astype(int)
                # pool the sparse tails so every cell expects at least 5 cases
                expected = probs[k] * len(values)
                keep = expected >= 5
                observed = np.bincount(values, minlength=len(AGES))
                obs = np.append(observed[keep], observed[~keep].sum())
                exp = np.append(expected[keep], expected[~keep].sum())
                obs, exp = (obs, exp) if exp[-1] > 0 else (obs[:-1], exp[:-1])
            else:
                obs = np.bincount(values, minlength=probs.shape[1])
                exp = probs[k] * len(values)
            p = stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue
            assert p > FAMILY_ALPHA / n_tests, f"{CONDITIONS[k]}.{name}: chi-square p={p:.2g}"


def test_missingness_rates_match(kb, big_sample):
    codes, _, _ = big_sample
    n = len(codes["sex"])
    for f in FIELDS:
        if f.required:
            assert not np.any(np.isnan(codes[f.name].astype(float))) and not np.any(codes[f.name] == -1)
            continue
        unknown = np.isnan(codes[f.name]) if f.kind in ("integer", "float") else codes[f.name] == -1
        if f.name in kb.missingness_given:  # missing at random: the rate depends on a reported answer
            given, p_by_answer = kb.missingness_given[f.name]
            strata = [(codes[given] == a, p) for a, p in zip([*range(len(p_by_answer) - 1), -1], p_by_answer)]
        else:
            strata = [(np.ones(n, dtype=bool), kb.missingness[f.name])]
        for where, p in strata:
            if where.sum() < 1000 or p == 0:
                continue
            z = (unknown[where].mean() - p) / np.sqrt(p * (1 - p) / where.sum())
            assert abs(z) < 5, f"{f.name}: {unknown[where].mean():.4f} unknown vs {p}"


def test_clinically_typical_cases(kb, big_sample):
    codes, cond, _ = big_sample
    acl, dvt = cond == CONDITIONS.index("acl_injury"), cond == CONDITIONS.index("dvt")
    twist = field("injury_event").allowed.index("twist_or_direction_change")
    assert np.median(codes["age"][acl]) < 32
    assert np.bincount(codes["injury_event"][acl & (codes["injury_event"] >= 0)]).argmax() == twist
    assert codes["heard_pop"][acl & (codes["heard_pop"] >= 0)].mean() > 0.5
    assert np.median(codes["age"][dvt]) > 55
    for risk, factor in (("recent_immobilisation", 2.0), ("active_cancer", 2.0), ("previous_vte", 2.0),
                         ("sedentary", 1.0), ("smoker", 1.0)):  # the Wells items carry the weight
        known = codes[risk] >= 0
        assert codes[risk][dvt & known].mean() > factor * codes[risk][~dvt & known].mean(), risk
    assert codes["leg_swelling"][dvt & (codes["leg_swelling"] >= 0)].mean() > 0.5  # Goodacre 2005: sensitivity ~0.6


def _config(seed):
    return GenerateConfig.model_validate(
        {"seed": seed, "splits": {"train": {"n": 3000}, "shift": {"n": 1000, "population": "shift"}}})


def test_splits_are_byte_identical_for_a_seed_and_differ_for_another(kb, tmp_path):
    write_splits(kb, _config(7), tmp_path / "a")
    write_splits(kb, _config(7), tmp_path / "b")
    write_splits(kb, _config(8), tmp_path / "c")
    for split in ("train", "shift"):
        a, b, c = (sha256_file(tmp_path / d / f"{split}.parquet") for d in "abc")
        assert a == b and a != c
    manifest = (tmp_path / "a" / "manifest.json").read_text()
    assert sha256_file(tmp_path / "a" / "train.parquet") in manifest
    frame = pd.read_parquet(tmp_path / "a" / "train.parquet")
    assert frame["case_id"].is_unique and len(frame) == 3000


def test_splits_have_independent_seeds(kb, tmp_path):
    frames = write_splits(kb, GenerateConfig.model_validate(
        {"seed": 1, "splits": {"x": {"n": 500}, "y": {"n": 500}}}), tmp_path)
    assert not frames["x"].drop(columns="case_id").equals(frames["y"].drop(columns="case_id"))


def test_durations_follow_the_mixture_truncated_at_the_patients_age(kb):
    """With durations long enough for the age bound to cut many of them, none passes (age + 1) x
    365.25 days and the rest follow the truncated law exactly: the probability transform
    F(d) / F(bound) of each case's own law is uniform (Kolmogorov-Smirnov), both for the
    conditions with one log-normal and for those whose cases may count from a recent episode (a
    mixture of two), and the episode's share of the durations is the truncated mixture's."""
    k = len(CONDITIONS)
    log_median, log_sd = np.log(np.geomspace(300, 30_000, k)), np.linspace(0.6, 1.6, k)
    mixed = np.arange(k) % 3 == 0
    episode = np.column_stack([np.where(mixed, 0.3, 0.0), np.where(mixed, np.log(4.0), log_median),
                               np.where(mixed, 0.8, log_sd)])
    long = dataclasses.replace(kb, duration=np.column_stack([log_median, log_sd]), duration_episode=episode)
    codes, cond, _ = generate_codes(long, 50_000, seed=4)
    days, bound = codes["symptom_duration_days"], max_duration_days(codes["age"])
    known = ~np.isnan(days)
    days, bound, cond = days[known], bound[known], cond[known]
    assert (days <= bound).all()
    usual, recent = long.duration[cond], long.duration_episode[cond]
    cut = 1 - duration_mass_below(usual, recent, bound)
    assert cut.mean() > 0.1  # the bound matters: an untruncated draw would pass it this often
    pit = duration_mass_below(usual, recent, days) / duration_mass_below(usual, recent, bound)
    for group in (mixed[cond], ~mixed[cond]):
        assert stats.kstest(pit[group], "uniform").pvalue > FAMILY_ALPHA
    # a week or less: almost only the episode's (its median is 4 days, the usual course's 300 or more)
    short = days[mixed[cond]] <= 7
    expected = (duration_mass_below(usual, recent, 7.0) / duration_mass_below(usual, recent, bound))[mixed[cond]]
    assert expected.mean() > 0.2
    assert abs(short.mean() - expected.mean()) < 4 * np.sqrt(expected.mean() / short.size)


def test_hormonal_therapy_is_drawn_at_each_sexs_own_rate(kb):
    """The pill or HRT: a woman's rate for women and a man's (a tenth of it or less) for men, each
    shifted by the condition's odds ratio, within sampling error."""
    codes, cond, _ = generate_codes(kb, 60_000, seed=12)
    answered = codes["hormonal_therapy"] >= 0
    female = codes["sex"] == field("sex").allowed.index("female")
    for group, rate in ((female, kb.tristate["hormonal_therapy"][:, 0]), (~female, kb.hormonal_men)):
        rows = group & answered
        expected = rate[cond[rows]].mean()
        assert abs((codes["hormonal_therapy"][rows] == 1).mean() - expected) < 4 * np.sqrt(expected / rows.sum())
    assert kb.hormonal_men.max() < kb.tristate["hormonal_therapy"][:, 0].min() / 10


def test_bad_n_is_refused(kb):
    with pytest.raises(ValueError, match="n == -1"):
        generate_cases(kb, -1, seed=0)


def test_kneepain_sample_draws_and_writes_a_block_at_a_time(kb, tmp_path, monkeypatch):
    """`kneepain sample` draws and writes 65,536 rows at a time, so its memory stays flat: up to one
    block the file is generate_codes(kb, n, seed)'s cases; a longer one starts with that block and
    goes on with fresh draws, under one header, its ids in order."""
    import pipeline.data.generate as generate
    from pipeline.cli import main
    from pipeline.core.parsing import codes_to_text_frame

    assert main(["sample", "--n", "1000", "--seed", "5", "-o", str(tmp_path / "small.csv")]) == 0
    codes, _, _ = generate_codes(kb, 1000, seed=5)
    small = codes_to_text_frame(codes)
    small.insert(0, "case_id", [f"sample-{i:06d}" for i in range(1000)])
    assert (tmp_path / "small.csv").read_text(encoding="utf-8") == small.to_csv(index=False)

    sizes = []
    real = generate.generate_codes
    monkeypatch.setattr(generate, "generate_codes", lambda kb, n, **kw: sizes.append(n) or real(kb, n, **kw))
    block = generate.SAMPLE_BLOCK_ROWS
    for n in (block, block + 4_464):
        assert main(["sample", "--n", str(n), "--seed", "5", "-o", str(tmp_path / f"s{n}.csv")]) == 0
    assert sizes == [block, block, 4_464]  # never more than a block drawn at once
    one, two = (pd.read_csv(tmp_path / f"s{n}.csv", dtype=str, keep_default_na=False) for n in (block, block + 4_464))
    pd.testing.assert_frame_equal(two.head(block), one)
    assert two["case_id"].tolist() == [f"sample-{i:06d}" for i in range(block + 4_464)]
    assert two["age"].str.fullmatch(r"\d+").all()  # whole numbers in every block
    rest = two.iloc[block:].drop(columns="case_id").reset_index(drop=True)
    assert not rest.equals(one.head(4_464).drop(columns="case_id"))  # fresh draws, not the first block again


def test_kneepain_sample_writes_csv_or_parquet_to_a_file_or_csv_to_standard_output_and_nothing_else(tmp_path,
                                                                                                   capsysbinary):
    from pipeline.cli import main

    assert main(["sample", "--n", "300", "-o", str(tmp_path / "s.csv")]) == 0
    capsysbinary.readouterr()
    assert main(["sample", "--n", "300", "-o", "-"]) == 0
    told = capsysbinary.readouterr()
    assert told.out == (tmp_path / "s.csv").read_bytes() and b"300 unlabelled cases" in told.err
    for output, problem in [("s.txt", "kneepain sample writes CSV or Parquet, by the extension; give a .csv or "
                                      ".parquet path, or - for CSV on standard output"),
                            ("missing/s.csv", "no such folder for the output"),
                            ("s.csv/x.csv", "s.csv: is a file, not a folder, so the output")]:
        assert main(["sample", "-o", str(tmp_path / output)]) == 2
        assert problem.encode() in capsysbinary.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


def test_kneepain_sample_as_parquet_holds_the_csv_cases_in_typed_columns(tmp_path, monkeypatch):
    """The same seed gives the same cases in Parquet as in CSV, across blocks: answers as text with
    nulls for blanks, age as int64 and the other numbers as float64, one schema for every block."""
    import pyarrow.parquet as pq

    import pipeline.data.generate as generate
    from pipeline.cli import main

    monkeypatch.setattr(generate, "SAMPLE_BLOCK_ROWS", 128)
    for name in ("s.csv", "s.parquet"):
        assert main(["sample", "--n", "300", "--seed", "3", "-o", str(tmp_path / name)]) == 0
    table = pq.read_table(tmp_path / "s.parquet")
    assert str(table.schema.field("age").type) == "int64" and str(table.schema.field("bmi").type) == "double"
    assert str(table.schema.field("calf_tenderness").type) == "string" and table.column("calf_tenderness").null_count > 0
    as_text = table.to_pandas().astype(object).map(lambda v: "" if pd.isna(v) else str(v))
    pd.testing.assert_frame_equal(as_text, pd.read_csv(tmp_path / "s.csv", dtype=str, keep_default_na=False),
                                  check_dtype=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s.parquet"]


@pytest.mark.slow
def test_kneepain_sample_stopped_or_killed_leaves_no_temporary_file(tmp_path):
    """A stop signal removes the half-written file at once; one killed outright leaves its
    temporary, which the next sample on the same output removes."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    kneepain = Path(sys.executable).parent / "kneepain"

    def started() -> subprocess.Popen:
        proc = subprocess.Popen([str(kneepain), "sample", "--n", "100000000", "-o", str(tmp_path / "big.csv")],
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not any(p.stat().st_size > 1_000_000 for p in tmp_path.glob(".big.csv.tmp-*")):
            assert proc.poll() is None and time.monotonic() < deadline, "sample ended before it could be stopped"
            time.sleep(0.05)
        return proc

    for signum in (signal.SIGTERM, signal.SIGHUP):
        proc = started()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and f"stopped by {signal.Signals(signum).name}" in err, err
        assert list(tmp_path.iterdir()) == []
    proc = started()
    proc.kill()
    proc.communicate(timeout=60)
    assert [p.name for p in tmp_path.iterdir()][0].startswith(".big.csv.tmp-")
    from pipeline.cli import main

    assert main(["sample", "--n", "10", "-o", str(tmp_path / "big.csv")]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["big.csv"]


@pytest.mark.parametrize("command", [["sample", "-o", "-"], ["show"], ["generate", "--engine", "dask"]])
def test_a_seed_that_is_no_seed_is_named(command, capsys):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([*command, "--seed", "-1"])
    assert exit_.value.code == 2
    assert "argument --seed: '-1' is not a seed; give a whole number >= 0" in capsys.readouterr().err


def test_kneepain_generate_refuses_the_dask_engines_options_without_it(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["generate", "--n", "10", "--seed", "3", "--out", str(tmp_path / "g")]) == 2
    assert "--n, --seed: for --engine dask only" in capsys.readouterr().err and not (tmp_path / "g").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["generate", "--engine", "dask", "--n", "100", "--partitions", "0"], "--partitions == 0, must be in 1..100"),
    (["generate", "--engine", "dask", "--n", "100", "--partitions", "1000"], "--partitions == 1000, must be in 1..100"),
    (["show", "--n", "1000000000000"], "--n == 1000000000000, must be in 1..10,000"),
    # options that were silently ignored: the run went ahead without what they asked for
    (["train", "--scheduler", "tcp://127.0.0.1:1"], "--scheduler: for --backend dask only"),
    (["train", "--extra-weight", "5"], "--extra-weight and --extra-holdout weigh and split real cases"),
    # a weight of 0 trained without the real cases and dropped the training share without a word
    (["train", "--extra-data", "cases.csv", "--extra-weight", "0"],
     "--extra-weight: must be above 0, got 0 (at 0 the real cases would not be trained on); to measure a model "
     "on your cases without training on them, run `kneepain evaluate --data FILE`"),
    (["train", "--extra-data", "cases.csv", "--extra-weight", "-1", "--extra-holdout", "1"],
     "--extra-weight: must be above 0, got -1"),
    (["evaluate", "--no-mlflow", "--data", "."], "--no-mlflow: for --data FILE (labelled cases) only"),
    (["evaluate", "--bootstrap", "0", "--data", "."], "--bootstrap: for --data FILE (labelled cases) only"),
    # two resamples gave an "interval" whose ends were two draws
    (["evaluate", "--bootstrap", "99", "--data", "cases.csv"], "--bootstrap == 99, must be >= 100"),
])
def test_an_option_out_of_range_or_without_its_use_is_refused_before_any_work(argv, message, tmp_path, capsys):
    """--partitions 0 was read as not given, 1000 for 100 cases an unexpected ValueError, and show
    --n 10^12 tried to allocate 5 TiB; evaluate --no-mlflow on a data folder logged to MLflow."""
    from pipeline.cli import main

    assert main([*argv, *(["--out", str(tmp_path / "g")] if argv[0] != "show" else [])]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "g").exists(), err


def test_a_block_of_cases_writes_whole_numbers_as_all_of_them_would(kb):
    """A block's integer field is written as the whole set of cases has it: with a decimal point
    when an unknown value elsewhere makes the field a float (blocks of `kneepain sample`)."""
    from pipeline.core.parsing import codes_to_text_frame, whole_number_fields

    codes, _, _ = generate_codes(kb, 10, seed=1)
    codes["age"] = codes["age"].astype(np.float64)
    codes["age"][7] = np.nan
    block = {k: v[:5] for k, v in codes.items()}
    expected = codes_to_text_frame(codes).iloc[:5].to_csv(index=False)
    assert codes_to_text_frame(block, whole_number_fields(codes)).to_csv(index=False) == expected
    assert codes_to_text_frame(block).to_csv(index=False) != expected  # alone, the block has no unknown age


def test_kneepain_report_names_a_reports_folder_without_an_evaluation(tmp_path, capsys, monkeypatch):
    """`report --reports` of a folder holding no evaluation printed the data summary and said
    nothing of the model; the default folder before any evaluation says how to make one."""
    import json

    from pipeline.cli import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "summary.json").write_text(json.dumps({"class_counts": {"train": {"dvt": 3}},
                                                   "oracle": {"test": {"accuracy": 0.5}}}))
    assert main(["report", "--data", str(data), "--reports", str(tmp_path / "nowhere")]) == 2
    told = capsys.readouterr()
    assert f"--reports {tmp_path / 'nowhere'}: no such folder." in told.err and told.out == ""  # before any summary
    assert main(["report", "--data", str(data), "--reports", str(data)]) == 2  # a folder, but no evaluation's
    assert f"--reports {data}: holds no metrics_detail.json" in capsys.readouterr().err
    monkeypatch.setenv("KNEEPAIN_HOME", str(tmp_path))  # a project folder without reports/
    assert main(["report", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "Class counts per split" in out
    assert "No model evaluated yet (reports/metrics_detail.json does not exist)" in out


def test_kneepain_sample_into_a_standard_output_that_fails_says_so(tmp_path):
    """Run unbuffered, at a file-size limit `sample -o -` wrote part of its cases and said it
    wrote them all (exit 0); buffered, it was `unexpected OSError`."""
    import os
    import subprocess
    import sys

    from processes import limit_file_size

    for unbuffered in ("1", ""):
        with open(tmp_path / "cut.csv", "wb") as out:
            job = subprocess.run([sys.executable, "-m", "pipeline.cli", "sample", "--n", "2000", "-o", "-"], stdout=out,
                                 stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": unbuffered},
                                 preexec_fn=limit_file_size, timeout=120)
        assert job.returncode == 2 and job.stderr.strip() == "kneepain sample: error: -: cannot write: File too large."


def test_generate_refuses_a_config_without_a_split_the_pipeline_reads(tmp_path, capsys):
    """A split misspelt `tset` was generated beside the earlier `test.parquet`, which train and
    evaluate then read; the command names the split missing and writes nothing."""
    import yaml

    from pipeline.cli import main
    from pipeline.core.paths import config_path

    config = yaml.safe_load(config_path("generate.yaml").read_text())
    config["splits"]["tset"] = config["splits"].pop("test")
    path = tmp_path / "generate.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["generate", "--config", str(path), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kneepain generate: error: {path}: splits: no test, which train and evaluate read") \
        and err.count("\n") == 1, err
    assert not (tmp_path / "data").exists()
