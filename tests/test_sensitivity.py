"""kneepain sensitivity: the knowledge base's guesses drawn within their ranges."""

import json

import numpy as np
import yaml

from pipeline.cli import main
from pipeline.core.knowledge import read_knowledge_base_yaml
from pipeline.core.paths import config_path
from pipeline.report.sensitivity import assumption_parameters, draw_knowledge_base


def test_every_guess_is_a_parameter_and_a_draw_at_the_written_values_is_the_knowledge_base(kb):
    raw = read_knowledge_base_yaml()
    params = assumption_parameters(raw)
    assert len(params) > 100
    assert all(p.low <= p.value <= p.high and p.low < p.high for p in params)
    same = draw_knowledge_base(raw, params, np.array([p.value for p in params]))
    np.testing.assert_allclose(same.prior, kb.prior, rtol=1e-12)
    for name in kb.tristate:
        np.testing.assert_allclose(same.tristate[name], kb.tristate[name], rtol=1e-12)



def test_draws_share_nothing_they_change_with_the_written_knowledge_base():
    """Each draw starts from the file as written: drawing at the ends of the ranges (and
    renormalising) leaves the parsed file, and so the next draw, as it was."""
    import copy

    raw = read_knowledge_base_yaml()
    before = copy.deepcopy(raw)
    params = assumption_parameters(raw)
    low = draw_knowledge_base(raw, params, np.array([p.low for p in params]))
    assert raw == before
    high = draw_knowledge_base(raw, params, np.array([p.high for p in params]))
    assert raw == before
    assert not np.allclose(low.prior, high.prior)
    again = draw_knowledge_base(raw, params, np.array([p.low for p in params]))
    np.testing.assert_array_equal(again.prior, low.prior)
    for name in low.tristate:
        np.testing.assert_array_equal(again.tristate[name], low.tristate[name])

def test_the_command_draws_valid_bases_that_move_the_answers_and_writes_json_and_a_tornado_plot(tmp_path):
    """One run (the tornado moves every guess to both ends of its range, most of the cost):
    the draws are valid knowledge bases, the answers move, and the files are written."""
    raw = yaml.safe_load(config_path("knowledge_base.yaml").read_text(encoding="utf-8"))
    (tmp_path / "kb.yaml").write_text(yaml.safe_dump(raw))
    assert main(["sensitivity", "--kb", str(tmp_path / "kb.yaml"), "--out", str(tmp_path / "r"), "--draws", "4",
                 "--n", "2000", "--seed", "1"]) == 0
    r = json.loads((tmp_path / "r" / "sensitivity.json").read_text())
    assert r["n_parameters"] == len(assumption_parameters(raw)) and r["draws"] == 4
    acc = r["spread"]["oracle_accuracy"]
    assert 0.5 < acc["p05"] <= acc["mean"] <= acc["p95"] < 1
    assert abs(sum(r["base"]["triage_mix"].values()) - 1) < 1e-9
    rows = r["tornado"]["rows"]
    assert len(rows) == 10 and all(a["swing"] >= b["swing"] for a, b in zip(rows, rows[1:]))
    assert rows[0]["swing"] > 0
    assert (tmp_path / "r" / "tornado.png").stat().st_size > 10_000
