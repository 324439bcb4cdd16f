"""How much the answers depend on the knowledge base's own guesses.

Every ``assumption`` (and every size taken from a ``seed`` quote) in the knowledge base carries a
plausible ``range``. :func:`sensitivity` draws those numbers uniformly within their ranges many
times (priors and distributions renormalised after each draw) and reports, for each draw, the
oracle's top-1 accuracy on cases generated from that draw, the oracle's P(DVT) on the documented
probe cases (``configs/probes.yaml``) and the triage mix of the expected-cost decision. A
one-at-a-time sweep (each number at its low and its high end, the rest as written) ranks the
numbers by how far they move P(DVT) on the DVT probes: the tornado. No retraining is needed: the
oracle is exact and fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.cases import as_parsed
from pipeline.core.config import LEVELS, ProbesConfig, TriageConfig
from pipeline.core.knowledge import KnowledgeBase, knowledge_base_from_dict
from pipeline.core.oracle import oracle_posterior
from pipeline.core.parsing import ParsedCases
from pipeline.core.schema import CONDITIONS
from pipeline.data.generate import generate_codes
from pipeline.decision.triage import cost_levels

__all__ = ["Parameter", "assumption_parameters", "draw_knowledge_base", "plot_tornado", "sensitivity"]

# a condition's mappings whose numbers must sum to 1 (renormalised after a draw), as must the
# population's activity mix and the priors
_SUMS_TO_ONE = ("severity", "onset", "injury_event")
_DVT = CONDITIONS.index("dvt")
_NO_ERRORS = pd.DataFrame({"row": [], "column": [], "value": [], "reason": []})


@dataclass(frozen=True)
class Parameter:
    """One number of the knowledge base that is a guess: where it is, its value and its range."""

    path: tuple[str, ...]  # keys down to the mapping, e.g. ("conditions", "dvt", "symptoms", "leg_swelling")
    key: str  # the number's key in that mapping, e.g. "p"
    value: float
    low: float
    high: float

    @property
    def name(self) -> str:
        return ".".join(self.path) + ("" if self.key in ("p", "value", "odds_ratio") else f".{self.key}")


def _numbers(node: dict[str, Any]) -> dict[str, float]:
    """The numbers of a knowledge-base mapping (not its source, range or missingness ``given``)."""
    return {k: v for k, v in node.items() if k not in ("source", "range", "given")
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def assumption_parameters(raw: dict[str, Any]) -> list[Parameter]:
    """Every ``assumption`` or ``seed`` number of the knowledge base's YAML, with its range."""
    out: list[Parameter] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if not isinstance(node, dict) or path[:1] == ("shift",):  # a test scenario, not a guess about the world
            return
        source = node.get("source")
        if isinstance(source, str) and source.startswith(("assumption:", "seed:")) and "range" in node:
            ranges = node["range"]
            for key, value in _numbers(node).items():
                low, high = ranges[key] if isinstance(ranges, dict) else ranges
                if high > low:
                    out.append(Parameter(path, key, float(value), float(low), float(high)))
        for key, child in node.items():
            walk(child, (*path, str(key)))

    walk(raw, ())
    return out


def _set(raw: dict[str, Any], p: Parameter, value: float) -> None:
    node = raw
    for key in p.path:
        node = node[key]
    node[p.key] = value


def _renormalise(raw: dict[str, Any]) -> dict[str, Any]:
    """A drawn knowledge base made whole again: the distributions that must sum to 1 (and the
    priors) renormalised, and the range of each renormalised mapping widened to hold its new
    numbers. (Every other drawn number lies within its own range; the rest are as written.)"""
    renormalised = [raw["population"]["activity"], *(b[k] for b in raw["conditions"].values() for k in _SUMS_TO_ONE)]
    for node in renormalised:
        numbers = _numbers(node)
        total = sum(numbers.values())
        node.update({k: v / total for k, v in numbers.items()})
    priors = [b["prior"] for b in raw["conditions"].values()]
    total = sum(prior["value"] for prior in priors)
    for prior in priors:
        prior["value"] /= total
    for node in [*renormalised, *priors]:
        ranges = node.get("range")
        if isinstance(ranges, dict):
            node["range"] = {k: [min(lo, node[k]), max(hi, node[k])] for k, (lo, hi) in ranges.items()}
        elif isinstance(ranges, list):
            (k,) = _numbers(node)
            node["range"] = [min(ranges[0], node[k]), max(ranges[1], node[k])]
    return raw


def _copy_paths(raw: dict[str, Any], paths: list[tuple[str, ...]]) -> dict[str, Any]:
    """``raw`` with each mapping on ``paths`` copied (the rest shared): what a draw changes is its own."""
    drawn = dict(raw)
    copied = {id(drawn)}
    for path in paths:
        node = drawn
        for key in path:
            child = node[key]
            if id(child) not in copied:
                node[key] = child = dict(child)
                copied.add(id(child))
            node = child
    return drawn


def _changed_paths(raw: dict[str, Any], params: list[Parameter]) -> list[tuple[str, ...]]:
    """The mappings a draw sets (``params``) or renormalises (:func:`_renormalise`)."""
    return [p.path for p in params] + [("population", "activity")] + [
        ("conditions", c, k) for c in raw["conditions"] for k in (*_SUMS_TO_ONE, "prior")]


def draw_knowledge_base(raw: dict[str, Any], params: list[Parameter], values: np.ndarray) -> KnowledgeBase:
    """The knowledge base with ``params`` set to ``values`` (``raw`` is left as it is)."""
    drawn = _copy_paths(raw, _changed_paths(raw, params))  # a deep copy cost more than validating the draw
    for p, v in zip(params, values):
        _set(drawn, p, float(v))
    return knowledge_base_from_dict(_renormalise(drawn), where="a sensitivity draw")


def _evaluate(kb: KnowledgeBase, triage: TriageConfig, probes: ProbesConfig, probe_cases: ParsedCases, *, n: int,
              seed: int) -> dict[str, Any]:
    codes, cond, _ = generate_codes(kb, n, seed=seed)
    parsed = ParsedCases(codes, np.ones(n, dtype=bool), _NO_ERRORS)  # generated codes are valid
    post = oracle_posterior(kb, parsed).to_numpy()
    levels = cost_levels(triage, post)
    probe_post = oracle_posterior(kb, probe_cases).to_numpy()
    return {"oracle_accuracy": float(np.mean(post.argmax(axis=1) == cond)),
            "triage_mix": {lv: float(np.mean(levels == i)) for i, lv in enumerate(LEVELS)},
            "p_dvt": {p.name: float(probe_post[i, _DVT]) for i, p in enumerate(probes.probes)}}


def sensitivity(raw: dict[str, Any], triage: TriageConfig, probes: ProbesConfig, *, draws: int = 200,
                n: int = 20_000, seed: int = 0, top: int = 10) -> dict[str, Any]:
    """Draw the guessed numbers within their ranges; summarise how the answers move.

    Returns a JSON-ready dict: ``base`` (the answers of the knowledge base as written), ``spread``
    (per answer the mean and the 5th and 95th percentiles over the draws), and ``tornado`` (the ``top`` numbers
    that move the mean P(DVT) of the DVT probes most, with that mean at each end of their range).
    """
    params = assumption_parameters(raw)
    base_values = np.array([p.value for p in params])
    probe_cases = as_parsed([p.case for p in probes.probes])  # parsed once for every draw
    base = _evaluate(draw_knowledge_base(raw, params, base_values), triage, probes, probe_cases, n=n, seed=seed)
    rng = np.random.default_rng(seed)
    runs = [_evaluate(draw_knowledge_base(raw, params, rng.uniform([p.low for p in params], [p.high for p in params])),
                      triage, probes, probe_cases, n=n, seed=seed + 1 + i) for i in range(draws)]

    def band(values: list[float]) -> dict[str, float]:
        a = np.asarray(values)
        return {"mean": float(a.mean()), "p05": float(np.quantile(a, 0.05)), "p95": float(np.quantile(a, 0.95))}

    summary = {"oracle_accuracy": band([r["oracle_accuracy"] for r in runs]),
               "triage_mix": {lv: band([r["triage_mix"][lv] for r in runs]) for lv in LEVELS},
               "p_dvt": {p.name: band([r["p_dvt"][p.name] for r in runs]) for p in probes.probes}}
    dvt_probes = [p for p in probes.probes if p.expect.top == "dvt" or (p.expect.dvt_at_least or 0) > 0]
    cases = as_parsed([p.case for p in dvt_probes]) if dvt_probes else None
    swings = []
    for i, p in enumerate(params):
        ends = []
        for v in (p.low, p.high):
            values = base_values.copy()
            values[i] = v
            kb = draw_knowledge_base(raw, params, values)
            ends.append(float(oracle_posterior(kb, cases).to_numpy()[:, _DVT].mean()) if cases is not None else 0.0)
        swings.append((abs(ends[1] - ends[0]), p, ends))
    swings.sort(key=lambda s: -s[0])
    base_dvt = float(np.mean([base["p_dvt"][p.name] for p in dvt_probes])) if dvt_probes else 0.0
    return {"n_parameters": len(params), "draws": draws, "cases_per_draw": n, "base": base, "spread": summary,
            "tornado": {"metric": "mean P(DVT) over the DVT probes", "base": base_dvt,
                        "rows": [{"parameter": p.name, "value": p.value, "low": p.low, "high": p.high,
                                  "metric_at_low": lo, "metric_at_high": hi, "swing": sw}
                                 for sw, p, (lo, hi) in swings[:top]]}}


def plot_tornado(result: dict[str, Any], path: str | Path) -> Path:
    """The tornado plot of :func:`sensitivity`'s ``tornado`` rows."""
    from pipeline.report.plots import figure, save

    t = result["tornado"]
    rows = t["rows"][::-1]
    fig = figure(11.0, 0.45 * len(rows) + 1.6)
    ax = fig.add_subplot()
    for i, r in enumerate(rows):
        lo, hi = r["metric_at_low"], r["metric_at_high"]
        ax.barh(i, hi - t["base"], left=t["base"], color="#c0504d", height=0.6)
        ax.barh(i, lo - t["base"], left=t["base"], color="#4f81bd", height=0.6)
    ax.axvline(t["base"], color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [f"{r['parameter']} [{r['low']:g}, {r['high']:g}]" for r in rows], fontsize=7)
    ax.set_xlabel(f"{t['metric']}\nblue: the number at the low end of its range; red: at the high end")
    ax.set_title("Knowledge-base guesses that move the DVT answer most")
    return save(fig, path)
