import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core.knowledge import KnowledgeBaseError, _normalise, load_knowledge_base
from pipeline.core.paths import config_path, seed_path
from pipeline.core.schema import CONDITIONS, SYMPTOMS

DEFAULT_KB_PATH = config_path("knowledge_base.yaml")


def _walk(node, path=""):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def _has_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_every_number_has_provenance_and_seed_quotes_are_verbatim():
    raw = yaml.safe_load(DEFAULT_KB_PATH.read_text(encoding="utf-8"))
    seed = _normalise(seed_path().read_text(encoding="utf-8"))
    checked = 0
    for path, node in _walk(raw):
        if path == "" or not any(_has_number(v) for v in node.values()):
            continue
        assert "source" in node, f"{path} holds a number but no source"
        source = node["source"]
        assert re.match(r"^(seed: \"|ref: |assumption: )", source), f"{path}: bad source {source!r}"
        if source.startswith("seed: "):
            quote = re.match(r'seed: "([^"]+)"', source).group(1)
            assert _normalise(quote) in seed, f"{path}: quote not in the seed: {quote!r}"
        if source.startswith("ref: "):
            assert re.search(r"\b(19|20)\d\d\b", source), f"{path}: a reference needs a year"
        checked += 1
    assert checked > 300


def _write(tmp_path, mutate) -> Path:
    raw = yaml.safe_load(DEFAULT_KB_PATH.read_text(encoding="utf-8"))
    mutate(raw)
    path = tmp_path / "kb.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.parametrize("mutate,expected", [
    (lambda r: r["conditions"]["dvt"]["symptoms"]["leg_swelling"].update(p=1.5),
     r"conditions\.dvt\.symptoms\.leg_swelling\.p: .*less than 1"),
    (lambda r: r["conditions"].update(gout=r["conditions"]["dvt"]),
     r"conditions: .*must be exactly .*; unknown \['gout'\]"),
    (lambda r: r["conditions"]["acl_injury"]["heard_pop"].pop("source"),
     r"conditions\.acl_injury\.heard_pop\.source: Field required"),
    (lambda r: r["conditions"]["acl_injury"]["heard_pop"].update(source="my hunch"),
     r"conditions\.acl_injury\.heard_pop\.source: .*assumption"),
    (lambda r: r["conditions"]["osteoarthritis"]["symptoms"].update(fever={"p": 0.2, "source": "assumption: fever sometimes"}),
     r"conditions\.osteoarthritis\.symptoms: .*symptom fields; unknown \['fever'\]"),
    (lambda r: r["conditions"]["dvt"]["onset"].update(sudden=0.9),
     r"conditions\.dvt\.onset: values must sum to 1"),
    (lambda r: r["conditions"]["dvt"]["prior"].update(value=0.5),
     r"prior: shares must be positive and sum to 1"),
])
def test_bad_configs_name_the_key(tmp_path, mutate, expected):
    with pytest.raises(KnowledgeBaseError, match=expected):
        load_knowledge_base(_write(tmp_path, mutate))


def _marginal_yes(kb, name):
    return (kb.tristate[name] * kb.severity).sum(axis=1)


def test_seed_linked_symptoms_are_likely(kb):
    for c in CONDITIONS:
        for s, entry in kb.model.conditions[c].symptoms.items():
            if entry.source.startswith("seed:"):
                assert entry.p >= 0.4, f"{c}.{s}: the seed links it, p is only {entry.p}"


def test_no_probability_is_zero_or_one_and_no_symptom_is_a_giveaway(kb):
    for s in SYMPTOMS:
        yes = _marginal_yes(kb, s)
        assert np.all((yes > 0.01) & (yes < 0.99)), s
        posterior = kb.prior * yes / np.sum(kb.prior * yes)
        assert posterior.max() < 0.9, f"{s}=yes alone gives {posterior.max():.2f} to one condition"


@pytest.mark.parametrize("symptom", ["knee_swelling", "giving_way", "grinding", "stiffness", "swelling_behind_knee"])
def test_shared_symptoms_really_overlap(kb, symptom):
    assert np.sum(_marginal_yes(kb, symptom) >= 0.3) >= 2


def test_pop_is_shared_by_meniscus_and_acl(kb):
    pop = kb.tristate["heard_pop"][:, 0]
    assert pop[CONDITIONS.index("meniscus_tear")] >= 0.4 and pop[CONDITIONS.index("acl_injury")] >= 0.4


def test_shift_is_older_and_sparser(kb):
    shifted = kb.shifted()
    ages = np.arange(kb.age_pmf.shape[1])
    assert (shifted.age_pmf @ ages).mean() > (kb.age_pmf @ ages).mean() + 5
    assert all(shifted.missingness[k] >= v for k, v in kb.missingness.items())
    assert shifted.prior[CONDITIONS.index("dvt")] > kb.prior[CONDITIONS.index("dvt")]
