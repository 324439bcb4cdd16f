import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core.config import check_source
from pipeline.core.knowledge import KnowledgeBaseError, load_knowledge_base
from pipeline.core.paths import config_path
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




def _assert_provenance(path: str, source: str) -> None:
    """``source`` is a ref that names its year and figure, or a seed quote found in the seed (every
    ``seed: "..."`` inside it too), or an assumption: as loading checks it."""
    try:
        check_source(source)
    except ValueError as err:
        pytest.fail(f"{path}: {err}")


def test_every_number_has_provenance_every_guess_a_range_and_every_ref_a_figure():
    raw = yaml.safe_load(DEFAULT_KB_PATH.read_text(encoding="utf-8"))
    checked = 0
    for path, node in _walk(raw):
        numbers = {k: v for k, v in node.items() if _has_number(v) and k not in ("range", "given")}
        if path == "" or not numbers or path.endswith(".given.p"):  # a missingness `given` is its entry's
            continue
        assert "source" in node, f"{path} holds a number but no source"
        source = node["source"]
        _assert_provenance(path, source)
        if source.startswith(("seed: ", "assumption: ")):
            assert "range" in node, f"{path}: a guess needs a plausible range"
            ranges = node["range"] if isinstance(node["range"], dict) else {next(iter(numbers)): node["range"]}
            for key, value in numbers.items():
                low, high = ranges[key]
                assert low <= value <= high, f"{path}.{key}: {value} outside its range [{low}, {high}]"
        checked += 1
    assert checked > 400


def test_every_rule_and_cost_has_provenance_naming_its_thresholds():
    """The red flags, the screen's rules and the signs that suggest them, and the triage costs: each
    says where it comes from as a knowledge-base number does, and a rule's source names every number
    its answers compare with (the 90 of ``<=90``), a guessed one with its range."""
    triage = yaml.safe_load(config_path("triage.yaml").read_text(encoding="utf-8"))
    screen = yaml.safe_load(config_path("screen.yaml").read_text(encoding="utf-8"))
    rules = [(f"red_flags.{r['name']}", r) for r in triage["red_flags"]]
    rules += [(f"screen.{r['name']}", r) for r in screen["rules"]]
    rules += [(f"screen.{r['name']}.suggested_by", r["suggested_by"]) for r in screen["rules"] if "suggested_by" in r]
    for path, rule in rules:
        assert "source" in rule, f"{path} has no source"
        _assert_provenance(path, rule["source"])
        for answers in [*rule.get("all", {}).values(), *rule.get("any", {}).values()]:
            for a in [answers] if isinstance(answers, str) else answers:
                if a[:2] in ("<=", ">="):
                    assert re.search(rf"\b{re.escape(a[2:])}\b", rule["source"]), f"{path}: the source does not name {a}"
                    assert "assumption" not in rule["source"] or "range" in rule["source"], f"{path}: a guess needs a range"
    for condition, source in triage["cost_sources"].items():
        _assert_provenance(f"cost_sources.{condition}", source)
    assert len(rules) >= 20


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
    (lambda r: r["conditions"]["osteoarthritis"]["symptoms"].update(gout_pain={"p": 0.2, "source": "ref: X (2020) Table 1"}),
     r"conditions\.osteoarthritis\.symptoms: .*symptom fields; unknown \['gout_pain'\]"),
    (lambda r: r["conditions"]["dvt"]["onset"].update(sudden=0.9, range={"sudden": [0, 1], "gradual": [0, 1]}),
     r"conditions\.dvt\.onset: values must sum to 1"),
    (lambda r: r["conditions"]["dvt"]["symptoms"]["visible_veins"].update(p=0.99),
     r"conditions\.dvt\.symptoms\.visible_veins: .*range of p: .* does not contain the value 0\.99"),
    (lambda r: r["conditions"]["dvt"]["symptoms"]["visible_veins"].pop("range"),
     r"conditions\.dvt\.symptoms\.visible_veins: .*needs `range"),
    (lambda r: r["conditions"]["dvt"]["prior"].update(value=0.5, range=[0.0, 1.0]),
     r"prior: shares must be positive and sum to 1"),
    # durations are truncated at the age: none could be reported by a 12-year-old
    (lambda r: r["conditions"]["bakers_cyst"]["symptom_duration_days"].update(
        median_days=1e6, log_sd=0.1, range={"median_days": [1e5, 1e7], "log_sd": [0.05, 0.2]}),
     r"conditions\.bakers_cyst\.symptom_duration_days: puts 0 of its mass below 4748\.25 days"),
    # a recent episode is a share of the cases, with its own provenance
    (lambda r: r["conditions"]["osteoarthritis"]["symptom_duration_days"]["episode"].update(
        share=1.0, range={"share": [0, 1], "median_days": [1, 6], "log_sd": [0.5, 1.2]}),
     r"conditions\.osteoarthritis\.symptom_duration_days\.episode\.share: .*less than 1"),
    (lambda r: r["conditions"]["osteoarthritis"]["symptom_duration_days"]["episode"].pop("range"),
     r"conditions\.osteoarthritis\.symptom_duration_days\.episode: .*needs `range"),
    (lambda r: r["conditions"]["dvt"]["symptom_duration_days"].update(episode={"share": 0.1, "median_days": 2}),
     r"conditions\.dvt\.symptom_duration_days\.episode\.(log_sd|source): Field required"),
    # NaN passed "non-negative" and "at most 1" checks, and spread NaN through every posterior
    (lambda r: r["conditions"]["dvt"]["symptoms"]["visible_veins"].update(p=float("nan")),
     r"conditions\.dvt\.symptoms\.visible_veins\.p: Input should be a finite number"),
    (lambda r: r["conditions"]["dvt"]["onset"].update(sudden=float("nan")),
     r"conditions\.dvt\.onset: .*sudden: must be a positive number, got nan"),
    # a share of 0 ruled the condition out for that answer (P(leg cramp) 0 for a cramp of gradual onset)
    (lambda r: r["conditions"]["leg_cramp"]["onset"].update(sudden=1.0, gradual=0.0,
                                                           range={"sudden": [0.5, 1.0], "gradual": [0.0, 0.5]}),
     r"conditions\.leg_cramp\.onset: .*gradual: must be a positive number, got 0\.0"),
    # a range beyond what the number may be loaded, and `kneepain sensitivity` failed on a draw from it
    (lambda r: r["conditions"]["leg_cramp"]["symptoms"]["muscle_spasm"].update(range=[0.7, 1.5]),
     r"conditions\.leg_cramp\.symptoms\.muscle_spasm: .*range of p: \[0\.7, 1\.5\] reaches beyond what p may be "
     r"\(\[0, 1\]\)"),
    # nonsense accepted: pregnancy drawn from 12 to 5, a shift with no question unanswered, another layout
    (lambda r: r["population"]["fertile_age"].update(value=5, range=[4, 6]),
     r"population\.fertile_age: value: an age above the youngest case's \(12\) and at most 100 .*, got 5"),
    (lambda r: r["shift"]["missingness_multiplier"].update(value=-1, range=[-2, 2]),
     r"shift\.missingness_multiplier: value: must be above 0 .*, got -1"),
    (lambda r: r.update(version=7), r"version: Input should be 2, got 7"),
    # a seed quote the article does not hold was loaded; only the tests looked for it
    (lambda r: r["conditions"]["leg_cramp"]["symptoms"]["muscle_spasm"].update(
        source='seed: "a totally fabricated quote about cramps"'),
     r"conditions\.leg_cramp\.symptoms\.muscle_spasm\.source: seed quote not found in the seed article "
     r"\(seed/pain-behind-the-knee\.txt\): 'a totally fabricated quote about cramps'"),
    # a ref that names no figure was loaded; only the tests looked for one
    (lambda r: r["conditions"]["dvt"]["symptoms"]["visible_veins"].update(source="ref: Wells PS et al. (2003) NEJM"),
     r"conditions\.dvt\.symptoms\.visible_veins\.source: a ref must name where in the study its figure is"),
    (lambda r: r["conditions"]["leg_cramp"]["symptoms"]["muscle_spasm"].update(source="seed: a spasm, unquoted"),
     r"muscle_spasm\.source: .*source must be|muscle_spasm\.source: a seed quote must stand in double quotes"),
    # pydantic's words with the value given
    (lambda r: r["conditions"]["dvt"]["symptoms"]["visible_veins"].update(p=1.2, range=[0.5, 0.9]),
     r"conditions\.dvt\.symptoms\.visible_veins\.p: Input should be less than 1, got 1\.2"),
    (lambda r: r["conditions"]["dvt"]["onset"]["range"].update(sudden=[-0.1, 0.5]),
     r"conditions\.dvt\.onset: .*range of sudden: \[-0\.1, 0\.5\] reaches beyond what sudden may be \(\[0, inf\]\)"),
    # a misspelt answer was blamed on the range, which names it rightly
    (lambda r: r["conditions"]["leg_cramp"]["onset"].update(suden=r["conditions"]["leg_cramp"]["onset"].pop("sudden")),
     r"conditions\.leg_cramp\.onset: .*the numbers must be named by exactly the answers sudden, gradual; "
     r"unknown \['suden'\], missing \['sudden'\]"),
    (lambda r: r["population"]["activity"].update(runing=r["population"]["activity"].pop("running")),
     r"population\.activity: .*named by exactly the answers .*; unknown \['runing'\], missing \['running'\]"),
    (lambda r: r["conditions"]["dvt"]["severity"].update(sever=r["conditions"]["dvt"]["severity"].pop("severe")),
     r"conditions\.dvt\.severity: .*answers mild, moderate, severe; unknown \['sever'\], missing \['severe'\]"),
])
def test_bad_configs_name_the_key(tmp_path, mutate, expected):
    with pytest.raises(KnowledgeBaseError, match=expected):
        load_knowledge_base(_write(tmp_path, mutate))


def _marginal_yes(kb, name):
    return (kb.tristate[name] * kb.severity).sum(axis=1)


def test_a_seed_quote_gives_a_direction_the_numbers_keep(kb):
    """A symptom linked to a condition by the seed article is likelier in it than in the others."""
    for k, c in enumerate(CONDITIONS):
        for s, entry in kb.model.conditions[c].symptoms.items():
            if entry.source.startswith("seed:"):
                yes = _marginal_yes(kb, s)
                others = np.delete(kb.prior, k) @ np.delete(yes, k) / np.delete(kb.prior, k).sum()
                assert yes[k] > others, f"{c}.{s}: the seed links it, yet it is likelier elsewhere"


def test_no_probability_is_zero_or_one_and_no_symptom_is_a_giveaway(kb):
    for s in SYMPTOMS:
        yes = _marginal_yes(kb, s)
        assert np.all((yes > 0.01) & (yes < 0.99)), s
        posterior = kb.prior * yes / np.sum(kb.prior * yes)
        assert posterior.max() < 0.9, f"{s}=yes alone gives {posterior.max():.2f} to one condition"


@pytest.mark.parametrize("symptom", ["knee_swelling", "giving_way", "grinding", "stiffness"])
def test_shared_symptoms_really_overlap(kb, symptom):
    assert np.sum(_marginal_yes(kb, symptom) >= 0.3) >= 2


def test_a_pop_points_to_a_torn_ligament_or_meniscus(kb):
    """Wagemakers 2010: a pop in 63% of ACL tears against 27% of other knee injuries."""
    pop = kb.tristate["heard_pop"][:, 0]
    acl, meniscus = pop[CONDITIONS.index("acl_injury")], pop[CONDITIONS.index("meniscus_tear")]
    others = np.delete(pop, [CONDITIONS.index(c) for c in ("acl_injury", "meniscus_tear", "pcl_injury")])
    assert acl > 0.5 and acl > max(meniscus, others.max())
    quiet = [pop[CONDITIONS.index(c)] for c in ("leg_cramp", "bakers_cyst", "runners_knee", "dvt", "osteoarthritis")]
    assert meniscus > max(quiet)


def test_shift_is_older_and_sparser(kb):
    shifted = kb.shifted()
    ages = np.arange(kb.age_pmf.shape[1])
    assert (shifted.age_pmf @ ages).mean() > (kb.age_pmf @ ages).mean() + 5
    assert all(shifted.missingness[k] >= v for k, v in kb.missingness.items())
    assert shifted.prior[CONDITIONS.index("dvt")] > kb.prior[CONDITIONS.index("dvt")]


@pytest.mark.parametrize("fast", [True, False])
def test_yaml_is_read_as_the_pure_python_parser_reads_it(fast, monkeypatch):
    """Configs and models are read with libyaml when PyYAML has it (a model loads about 5x faster)
    and with the pure-Python parser otherwise: the same data either way, and the same error type."""
    from pipeline.core.files import load_yaml

    if fast and not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML without libyaml")
    if not fast:
        monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    for path in sorted(DEFAULT_KB_PATH.parent.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        assert load_yaml(text) == yaml.safe_load(text), path.name
        assert load_yaml(text.encode()) == yaml.safe_load(text), path.name
    with pytest.raises(yaml.YAMLError) as err:  # the pure-Python parser's message: the line, the column marked
        load_yaml("a: 1\nb:\n\tc: 2\n")
    assert "\tc: 2" in str(err.value) and "^" in str(err.value)
    with pytest.raises(yaml.YAMLError):  # safe: a tag that would build an object is refused
        load_yaml("!!python/object/apply:os.system ['true']")


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    """PyYAML keeps the last of two equal keys silently: a number given twice in the knowledge base,
    or a second section of a config, would replace the first unseen."""
    from pipeline.core.config import ConfigError, TrainConfig, load_config
    from pipeline.core.paths import config_path

    text = config_path("knowledge_base.yaml").read_text()
    line = next(i for i, t in enumerate(text.splitlines()) if t.strip().startswith("conditions:"))
    path = tmp_path / "kb.yaml"
    path.write_text(text + "\nconditions: {}\n")
    with pytest.raises(KnowledgeBaseError, match=rf"found key 'conditions' a second time \(first on line {line + 1}\)"):
        load_knowledge_base(path)
    train = tmp_path / "train.yaml"
    train.write_text(config_path("train.yaml").read_text().rstrip("\n") + "\ncv: {folds: 3}\n")
    second = len(train.read_text().splitlines())
    with pytest.raises(ConfigError, match=rf"(?s)train\.yaml: cannot read: found key 'cv' a second time .* line {second},"):
        load_config(TrainConfig, train)


@pytest.mark.parametrize("name, change, key", [
    ("generate.yaml", lambda c: c["splits"].update({"../escape": {"n": 5}}),
     r"splits\.\.\./escape\.\[key\]: String should match pattern"),
    ("generate.yaml", lambda c: c["splits"]["test"].update(n=0), r"splits\.test\.n: Input should be greater"),
    ("train.yaml", lambda c: c["models"]["mlp"].update(hidden_layer_sizes=[0]),
     r"models\.mlp\.hidden_layer_sizes\.0: Input should be greater"),
    ("train.yaml", lambda c: c.setdefault("extra_data", {}).update(weight=float("inf")),
     r"extra_data\.weight: Input should be a finite number"),
    ("train.yaml", lambda c: c.setdefault("extra_data", {}).update(weight=0),
     r"extra_data\.weight: must be above 0, got 0 \(at 0 the real cases would not be trained on\)"),
    # each of these failed after the data was read, or after the training (a FAILED run, a model
    # folder written, a registered version with no alias)
    ("train.yaml", lambda c: c.update(seed=2**32), r"seed: Input should be less than or equal to 4294967295"),
    ("train.yaml", lambda c: c.update(candidates=["logistic", "logistic"]),
     r"candidates: each candidate at most once, got \['logistic', 'logistic'\]"),
    ("train.yaml", lambda c: c["cv"].update(max_rows=30),
     r"cv: max_rows: 0 \(every row\) or at least folds x conditions = 45, .*; got 30"),
    ("train.yaml", lambda c: c["tracking"].update(alias="v1"), r"tracking\.alias: 'v1' is reserved by MLflow"),
    ("train.yaml", lambda c: c["tracking"].update(alias="Latest"), r"tracking\.alias: 'Latest' is reserved by MLflow"),
    ("train.yaml", lambda c: c["tracking"].update(alias=""), r"tracking\.alias: String should match pattern"),
    ("train.yaml", lambda c: c["tracking"].update(experiment=" "), r"tracking\.experiment: String should match pattern"),
    ("train.yaml", lambda c: c["tracking"].update(registered_model="team/kneepain"),
     r"tracking\.registered_model: String should match pattern"),
    # the shift split drawn from the default population was reported as the shift
    ("generate.yaml", lambda c: c["splits"]["shift"].pop("population"),
     r"splits\.shift\.population: must be 'shift' \(evaluation reports the shift split as drawn from it\), got 'default'"),
])
def test_a_config_value_that_would_fail_later_is_refused_at_load_naming_its_key(tmp_path, name, change, key):
    """Caught when the file is read, not minutes later inside a fit or a file write."""
    import yaml

    from pipeline.core.config import ConfigError, GenerateConfig, TrainConfig, load_config
    from pipeline.core.paths import config_path

    config = yaml.safe_load(config_path(name).read_text())
    change(config)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=key):
        load_config(GenerateConfig if name == "generate.yaml" else TrainConfig, path)


@pytest.mark.parametrize("name, misspell, expected", [
    ("train.yaml", lambda c: c["cv"].update(foldz=c["cv"].pop("folds")), r"cv\.foldz: ~\(did you mean folds\?\)"),
    ("train.yaml", lambda c: c["models"]["mlp"].update(hiden_layer_sizes=[8]),
     r"models\.mlp\.hiden_layer_sizes: ~\(did you mean hidden_layer_sizes\?\)"),
    ("train.yaml", lambda c: c.update(calibraton=c.pop("calibration")), r"\n  calibraton: ~\(did you mean calibration\?\)"),
    ("train.yaml", lambda c: c["selection"].update(zzz=1), r"selection\.zzz: ~\(its keys: log_loss_tolerance, speed_ratio\)"),
    ("triage.yaml", lambda c: c["ask_next"].update(max_question=3),
     r"ask_next\.max_question: ~\(did you mean max_questions\?\)"),
    ("knowledge_base.yaml", lambda c: c["conditions"]["osteoarthritis"].update(femal=c["conditions"]["osteoarthritis"]["female"]),
     r"conditions\.osteoarthritis\.femal: ~\(did you mean female\?\)"),
])
def test_a_misspelt_config_key_is_named_with_the_key_it_looks_like(tmp_path, name, misspell, expected):
    """A retraining experiment's misspelt setting is named with what it should be, at any depth,
    in a dict's values (a condition of the knowledge base) too, or with the section's keys (``~``
    in ``expected`` stands for "not a key of this section ")."""
    import yaml

    from pipeline.core.config import ConfigError, TrainConfig, TriageConfig, load_config
    from pipeline.core.knowledge import KnowledgeBaseError, load_knowledge_base
    from pipeline.core.paths import config_path

    config = yaml.safe_load(config_path(name).read_text())
    misspell(config)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    with pytest.raises((ConfigError, KnowledgeBaseError), match=expected.replace("~", "not a key of this section ")):
        if name == "knowledge_base.yaml":
            load_knowledge_base(path)
        else:
            load_config(TrainConfig if name == "train.yaml" else TriageConfig, path)
