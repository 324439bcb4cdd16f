"""The documents a newcomer reads stay in step with the code."""

import re
from pathlib import Path

import pipeline
from pipeline.core.schema import CONDITIONS, FIELDS

ROOT = Path(__file__).resolve().parent.parent


def test_the_case_schema_document_lists_every_field_and_condition():
    text = (ROOT / "docs" / "case-schema.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", text, flags=re.M))
    assert {f.name for f in FIELDS} <= documented, {f.name for f in FIELDS} - documented
    for c in CONDITIONS:
        assert f"`{c}`" in text


def test_the_design_document_names_every_module_in_its_room():
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    package = Path(pipeline.__file__).parent
    for room in sorted(p for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        row = re.search(rf"^\| `{room.name}/` \| ([^|]+) \|", text, flags=re.M)
        assert row, f"docs/design.md has no row for {room.name}/"
        listed = set(re.findall(r"`([a-z_]+)`", row.group(1)))
        modules = {p.stem for p in room.glob("*.py") if p.stem != "__init__"}
        assert listed == modules, (room.name, modules ^ listed)


def _documents() -> list[Path]:
    """The README and the pages under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _headings(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (fenced code skipped)."""
    anchors, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#+ (.+)", line)):
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def test_every_link_between_the_documents_leads_somewhere():
    """A relative link in the README or docs/ names a file that exists, and a heading of it that
    exists where it names one (so moving a section cannot leave a dead link behind)."""
    checked = 0
    for doc in _documents():
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            name, _, anchor = target.partition("#")
            path = (doc.parent / name).resolve() if name else doc
            assert path.exists(), f"{doc.name}: {target} names no file"
            if anchor:
                assert anchor in _headings(path), f"{doc.name}: {target} names no heading of {path.name}"
            checked += 1
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in _documents()[1:] if f"](docs/{p.name}" not in readme]
    assert not unlinked, f"the README links to no {unlinked}"
    assert checked >= 10


def test_the_readme_and_docs_name_only_modules_that_exist():
    text = "\n".join(doc.read_text(encoding="utf-8") for doc in _documents())
    for dotted in set(re.findall(r"`(pipeline(?:\.[a-z_]+)+)", text)):
        parts = dotted.split(".")
        if len(parts) == 2 and parts[1] in pipeline.__all__ + ["__version__"]:
            continue  # the public API
        # the longest importable prefix must be a module or package of the project
        path = ROOT.joinpath(*parts[:-1]) / (parts[-1] + ".py")
        folder = ROOT.joinpath(*parts)
        parent = ROOT.joinpath(*parts[:-1]).with_suffix(".py")
        assert path.exists() or folder.is_dir() or parent.exists(), dotted


def test_figures_a_report_could_not_measure_read_n_a_in_the_readme_and_the_summary(tmp_path):
    """A report's JSON holds null where a figure could not be measured (a split without a DVT):
    the README's results and `kneepain report` print it as n/a."""
    import json

    from pipeline.core.files import write_report_json
    from pipeline.report.decision_metrics import format_decision_table
    from pipeline.report.docs import results_markdown

    metrics = json.loads((ROOT / "reports" / "metrics_detail.json").read_text(encoding="utf-8"))
    metrics["test"]["ece_top_label"] = float("nan")
    metrics["triage"]["test"]["dvt_same_day_rate"] = float("nan")
    metrics["conformal"]["test"]["coverage"] = float("nan")
    write_report_json(tmp_path / "m.json", metrics)
    read = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert read["test"]["ece_top_label"] is None
    text = results_markdown(read)
    assert text.count("n/a") == 3 and "nan" not in text
    assert "test_blanked" in format_decision_table(read)  # pandas prints the null as NaN


# flags of other tools that the documents show in their commands
_OTHER_TOOLS_FLAGS = {"--backend-store-uri": "mlflow ui", "--env-manager": "mlflow models", "--gil": "py-spy",
                      "--threads": "py-spy", "--nthreads": "dask worker", "--only-changed": "dvc exp show",
                      "--temp": "dvc exp run", "--queue": "dvc exp run",
                      "--quick": "python -m benchmarks"}


def test_every_option_the_documents_name_is_one_the_command_line_has():
    """A ``--flag`` in the README or docs/ is an option of a ``kneepain`` command (or of the other
    tool whose command shows it), so renaming or removing an option cannot leave the documents stale."""
    import argparse

    from pipeline.cli import build_parser

    parser = build_parser()
    options = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                options |= set(command._option_string_actions)
    named = {flag for doc in _documents() for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", doc.read_text(encoding="utf-8"))}
    assert not named - options - set(_OTHER_TOOLS_FLAGS), sorted(named - options - set(_OTHER_TOOLS_FLAGS))
    assert {"--columns", "--keep-input-columns", "--top-k", "--float-digits", "--texts"} <= named
