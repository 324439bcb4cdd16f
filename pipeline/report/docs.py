"""Sections of the README generated from code and from ``reports/metrics_detail.json``, kept in step by a test.

Run ``python -m pipeline.report.docs`` to rewrite them in place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pipeline.core.paths import project_root
from pipeline.core.schema import data_dictionary_markdown
from pipeline.report.decision_metrics import coverage_table, figure, follow_up_line, triage_table
from pipeline.report.views import DETAIL_FILE
from pipeline.serve.predict import output_dictionary_markdown

__all__ = ["SECTIONS", "render_readme", "results_markdown"]


def results_markdown(metrics: dict[str, Any]) -> str:
    """The README's results section, from ``reports/metrics_detail.json`` (so it cannot go stale)."""
    lines = ["| split | accuracy | top-3 | log loss | ECE (top label) | oracle accuracy | oracle log loss |",
             "|---|---|---|---|---|---|---|"]
    for name in ("test", "shift"):
        m = metrics[name]
        cells = [figure(m[k], ".4f") for k in ("accuracy", "top3_accuracy", "log_loss", "ece_top_label", "oracle_accuracy",
                                               "oracle_log_loss")]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    if "triage" in metrics:
        fit = metrics["conformal"]["test"]
        lines += ["", "Triage against each case's reference level (its condition's level, raised by any red flag or "
                      "screen rule its answers meet), as symptom checkers are scored; `test_blanked` is `test` with "
                      "80% of the optional answers blanked:", "", triage_table(metrics), "",
                  f"The differential (fitted for {fit['target']:.0%} overall and at least {fit['band_coverage']:.0%} "
                  "in every band on the calibration cases; a band of new cases lands within sampling error of "
                  "that) by band of confidence and of answers known, beside the oracle's own 90% credible sets:",
                  "", coverage_table(metrics, "test"), "",
                  coverage_table(metrics, "test_blanked")]
        shown = {k: metrics["conformal"][k].get("shown") for k in ("test", "test_blanked")}
        if all(shown.values()):
            lines += ["", "The differential shown adds the condition that drives an expected-cost level, or that a "
                          "red flag raised the level for, where the set holds none that calls for that level (DVT, "
                          "most often): "
                      + "; ".join(f"on `{k}` in {figure(v['added_rate'], '.1%')} of cases, holding the true condition for "
                                  f"{figure(v['coverage'], '.1%')} at a mean size of {figure(v['mean_set_size'], '.2f')}"
                                  for k, v in shown.items()) + "."]
    if follow_up_line(metrics):
        lines += ["", follow_up_line(metrics, markdown=True).strip() + "."]
    q = metrics.get("questioning")
    if q:
        acc = {k: {int(n): v for n, v in q[k]["accuracy"].items()} for k in ("chosen", "random", "fixed")}
        lines += ["", f"Questioning simulation on {q['n_cases']:,} `test` cases that start from age and sex: "
                      f"top-1 accuracy after 5 chosen questions {figure(acc['chosen'][5], '.3f')}, against "
                      f"{figure(acc['random'][5], '.3f')} for random questions and {figure(acc['fixed'][5], '.3f')} "
                      f"for the schema's fixed order ({figure(acc['fixed'][max(acc['fixed'])], '.3f')} after "
                      f"{max(acc['fixed'])} fixed questions)."]
    return "\n".join(lines)


def _results_from_reports() -> str:
    path = project_root() / "reports" / DETAIL_FILE
    return results_markdown(json.loads(path.read_text(encoding="utf-8")))


SECTIONS: dict[str, Callable[[], str]] = {
    "data-dictionary": data_dictionary_markdown,
    "output-dictionary": output_dictionary_markdown,
    "results": _results_from_reports,
}


def render_readme(text: str) -> str:
    """``text`` with every ``<!-- name:start -->...<!-- name:end -->`` section regenerated."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"README has no <!-- {name}:start --> ... <!-- {name}:end --> section.")
        body = make()

        def fill(m: re.Match[str], body: str = body) -> str:
            return m.group(1) + body + "\n" + m.group(2)

        text = pattern.sub(fill, text)
    return text


if __name__ == "__main__":
    readme = project_root() / "README.md"
    readme.write_text(render_readme(readme.read_text(encoding="utf-8")), encoding="utf-8")
