"""Real labelled cases a user brings: validated row by row, and split into a part to train on and
a part held out to evaluate on (`kneepain evaluate --data FILE`, `kneepain train --extra-data FILE`).

A labelled file is any CSV or Parquet file in the case schema with the true ``condition`` and,
optionally, a clinician's ``reference_level`` (one of the four triage levels). A row that fails
validation is listed with its column, value and reason, never fatal for the others.
"""

from __future__ import annotations

import difflib
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.model_selection import train_test_split

from pipeline.core.casefiles import check_columns, parse_read
from pipeline.core.config import LEVELS
from pipeline.core.errors import BatchInputError
from pipeline.core.formulas import csv_safe
from pipeline.core.parsing import ParsedCases, parse_cases
from pipeline.core.schema import (
    BETWEEN_WORDS,
    CONDITION_LABELS,
    CONDITIONS,
    ID_COLUMN,
    LABEL_COLUMN,
    REFERENCE_COLUMN,
    normalise_header,
    visible,
)
from pipeline.data.datasets import labels
from pipeline.data.fingerprints import case_fingerprints

__all__ = ["CONDITION_SYNONYMS", "REFERENCE_COLUMN", "LabelledCases", "holdout_split", "rejects_csv", "validate_labelled"]



class LabelledCases(NamedTuple):
    """:func:`validate_labelled`'s result."""

    valid: pd.DataFrame  # the rows with a valid case, a known condition and, if given, a valid reference level
    reference: np.ndarray  # per valid row, the index into LEVELS of its reference_level, -1 where not given
    rejects: pd.DataFrame  # row (0-based, header excluded), case_id (where the file has ids), column, value, reason;
    # a row may have several
    ignored: tuple[str, ...]  # the columns that are neither case fields nor labels, as the file names them
    rows: np.ndarray  # per valid row, its row in ``frame`` (0-based)
    parsed: ParsedCases  # the valid rows' answers as parsed


def _text(series: pd.Series) -> pd.Series:
    """Labels as matched: lower case, without apostrophes, spaces and hyphens between words read as
    one underscore (``Baker's cyst`` and ``See doctor soon`` are ``bakers_cyst`` and
    ``see_doctor_soon``), as the report names them and as column names are matched."""
    text = series.astype("string").fillna("")
    # a zero-width space after "osteoarthritis" was "not a condition" (each distinct label made visible once)
    codes, uniques = pd.factorize(text)
    text = pd.Series(pd.array([visible(u) for u in uniques], dtype="string").take(codes) if len(uniques) else text,
                     index=series.index)
    text = text.str.strip().str.lower().str.replace("['\u2019]", "", regex=True)
    return text.str.replace(BETWEEN_WORDS, "_", regex=True)


# the report's names of the conditions that are not their codes once matched (deep vein thrombosis),
# and the other names clinical records give them (as matched: ACL tear, OA, popliteal cyst), each
# naming one of the nine and nothing else ("arthritis" or "blood clot" would not)
CONDITION_SYNONYMS = {
    "leg_cramp": ["cramp", "leg_cramps", "muscle_cramp", "nocturnal_leg_cramp"],
    "bakers_cyst": ["baker_cyst", "popliteal_cyst"],
    "runners_knee": ["patellofemoral_pain", "patellofemoral_pain_syndrome", "pfps", "pfp"],
    "hamstring_injury": ["hamstring_strain", "hamstring_tear", "pulled_hamstring"],
    "meniscus_tear": ["meniscal_tear", "torn_meniscus", "meniscus_injury", "meniscal_injury"],
    "acl_injury": ["acl_tear", "acl_rupture", "torn_acl", "anterior_cruciate_ligament_injury",
                   "anterior_cruciate_ligament_tear", "anterior_cruciate_ligament_rupture"],
    "pcl_injury": ["pcl_tear", "pcl_rupture", "torn_pcl", "posterior_cruciate_ligament_injury",
                   "posterior_cruciate_ligament_tear", "posterior_cruciate_ligament_rupture"],
    "dvt": ["deep_venous_thrombosis"],
    "osteoarthritis": ["oa", "knee_oa", "osteo_arthritis", "knee_osteoarthritis", "osteoarthritis_of_the_knee"],
}
# what a labelled file may call its condition column instead (matched as names are: normalise_header)
_LABEL_OTHER_NAMES = ("diagnosis", "label", "labels", "target", "class", "dx", "true_condition", "true_label",
                      "cause", "y")
_CONDITION_NAMES = {name: code for code, name in zip(CONDITION_LABELS, _text(pd.Series(CONDITION_LABELS.values())))
                    if name != code} | {name: code for code, names in CONDITION_SYNONYMS.items() for name in names}
_NOT_SET = ("", "unknown")  # a reference level read as not set, as a blank or `unknown` answer is unknown


def validate_labelled(frame: pd.DataFrame, *, where: str = "cases",
                      malformed: dict[int, str] | None = None) -> LabelledCases:
    """Split labelled cases into the valid rows and the reject lines (:class:`LabelledCases`).

    ``condition`` and ``reference_level`` are matched as case fields are
    (:func:`pipeline.core.schema.normalise_header`: ``Reference Level`` is ``reference_level``). ``malformed`` (row -> reason,
    from :func:`pipeline.core.casefiles.read_case_records`) are CSV records of the wrong number of
    fields: each is rejected for that alone, since its fields may be shifted.

    Raises
    ------
    BatchInputError
        ``frame`` has no ``condition`` column, or names a label column twice.
    CaseValidationError
        A required case column is missing.
    """
    frame = _labels_named(frame, where)
    if LABEL_COLUMN not in frame.columns:
        names = [str(c) for c in frame.columns]
        near = difflib.get_close_matches(LABEL_COLUMN, names, n=1, cutoff=0.8)
        other = [n for n in names if normalise_header(n) in _LABEL_OTHER_NAMES]
        hint = (f" (is {near[0]!r} it, misspelt?)" if near else
                f" (is {other[0]!r} it? Name that column {LABEL_COLUMN})" if other else "")
        raise BatchInputError(f"{where}: no {LABEL_COLUMN!r} column{hint}; "
                              f"labelled cases need the true condition, one of {', '.join(CONDITIONS)}.")
    parsed = parse_read(frame, malformed or {})
    problems = [parsed.errors[["row", "column", "value", "reason"]]]
    condition = _text(frame[LABEL_COLUMN]).replace(_CONDITION_NAMES)
    bad = ~condition.isin(CONDITIONS).to_numpy()
    allowed = (f"allowed: {', '.join(CONDITIONS)} (or the report's names: {', '.join(CONDITION_LABELS.values())}; "
               "or a common other name such as ACL tear or OA: docs/own-cases.md)")
    problems.append(pd.DataFrame({"row": np.flatnonzero(bad), "column": LABEL_COLUMN,
                                  "value": frame[LABEL_COLUMN].astype("string").fillna("").to_numpy()[bad],
                                  "reason": np.where(condition.to_numpy()[bad] == "",
                                                     f"missing: labelled cases need the true condition; {allowed}",
                                                     f"not a condition; {allowed}")}))
    reference = np.full(len(frame), -1)
    if REFERENCE_COLUMN in frame.columns:
        given = _text(frame[REFERENCE_COLUMN])
        wrong = (~given.isin(_NOT_SET) & ~given.isin(LEVELS)).to_numpy()
        problems.append(pd.DataFrame({"row": np.flatnonzero(wrong), "column": REFERENCE_COLUMN,
                                      "value": frame[REFERENCE_COLUMN].astype("string").to_numpy()[wrong],
                                      "reason": f"not a triage level; allowed: {', '.join(LEVELS)}, or blank "
                                                "or unknown where not set"}))
        lookup = {level: i for i, level in enumerate(LEVELS)}
        reference = given.map(lambda v: lookup.get(v, -1)).to_numpy(dtype=np.int64)
    rejects = pd.concat([p for p in problems if len(p)], ignore_index=True) if any(len(p) for p in problems) \
        else pd.DataFrame(columns=["row", "column", "value", "reason"])
    if malformed:  # only the record's own reason (parse_read's, with no column): its labels may be shifted too
        rejects = rejects[~(rejects["row"].isin(list(malformed)) & (rejects["column"] != ""))]
    rejects = rejects.sort_values("row", kind="stable", ignore_index=True)
    if parsed.ids is not None:  # each row's case id, so that a reject is found by it (parse_read gives a
        ids = parsed.ids.astype("string").reset_index(drop=True)  # malformed record none: its fields may be shifted)
        rejects.insert(1, ID_COLUMN, ids.take(rejects["row"].to_numpy()).reset_index(drop=True))
    keep = ~np.isin(np.arange(len(frame)), rejects["row"].to_numpy())
    valid = frame.iloc[np.flatnonzero(keep)].reset_index(drop=True)
    valid = valid.assign(**{LABEL_COLUMN: condition.to_numpy()[keep]})
    return LabelledCases(valid, reference[keep], rejects, parsed.ignored_columns, np.flatnonzero(keep), parsed[keep])


def _labels_named(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """``frame`` with its label columns under their own names, however the file spells them."""
    labels = (LABEL_COLUMN, REFERENCE_COLUMN)
    rename = {c: normalise_header(c) for c in frame.columns if normalise_header(c) in labels and c not in labels}
    if not rename:
        return frame
    check_columns(list(frame.columns), where)  # two spellings of one label would become one name
    return frame.rename(columns=rename)


def rejects_csv(rejects: pd.DataFrame) -> str:
    """Reject lines as CSV text, with the spreadsheet guard of every CSV output
    (:func:`pipeline.core.formulas.csv_safe`): a value such as ``=HYPERLINK(...)`` is shown, not run."""
    table = csv_safe(pa.Table.from_pandas(rejects.astype({"column": str, "value": str, "reason": str}),
                                          preserve_index=False))
    return table.to_pandas().to_csv(index=False)


def holdout_split(cases: pd.DataFrame, fraction: float, *, seed: int,
                  parsed: ParsedCases | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(to_train, held_out)``: ``fraction`` of the (valid, labelled) cases held out, stratified by
    condition where each part has room for one of every condition (else drawn at random). A
    condition with a single case is trained on, and the others are stratified: one such case
    (common in a clinic's file) made the whole split random, and that case was as likely held out
    as not, leaving the model none of its condition.

    Cases with the same answers and condition under different ids (a repeat visit, a double
    entry) go to the same side, so a held-out case is never one the model was trained on: the
    distinct cases (by :func:`pipeline.data.fingerprints.case_fingerprints`, as `evaluate` finds
    fitted rows) are split, and each repeat follows its first. ``parsed``: the cases' answers as
    parsed, if the caller has them (:class:`LabelledCases`)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction == {fraction}, must be in [0, 1).")
    same = case_fingerprints(parse_cases(cases, raise_on_error=False) if parsed is None else parsed, labels(cases))
    first = np.flatnonzero(~pd.Series(same).duplicated().to_numpy())
    n_held = int(round(fraction * len(first)))
    if n_held == 0:
        return cases.reset_index(drop=True), cases.iloc[:0]
    if n_held >= len(first):
        raise ValueError(f"holding out {fraction:g} of {len(first)} distinct cases ({n_held}) leaves none to train "
                         "on; give a smaller share.")
    kind = pd.factorize(cases[LABEL_COLUMN].iloc[first])[0]  # each distinct case's condition, as a number
    many = np.bincount(kind)[kind] > 1
    pool, kinds = first[many], len(np.unique(kind[many]))  # the distinct cases of conditions with two or more
    stratify = None
    if n_held >= len(pool):  # too few to hold out without the single ones: all drawn at random
        pool = first
    elif min(n_held, len(pool) - n_held) >= kinds:  # room in each part for one of every condition
        stratify = cases[LABEL_COLUMN].iloc[pool].to_numpy()
    _, held = train_test_split(pool, test_size=n_held, random_state=seed, stratify=stratify)
    out = np.isin(same, same[held])
    return cases[~out].reset_index(drop=True), cases[out].reset_index(drop=True)
