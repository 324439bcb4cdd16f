"""Featurizing: the schema-derived ``CaseFeaturizer`` against a generic scikit-learn encoder.

- ``CaseFeaturizer().fit(frame).transform(frame)`` on the typed DataFrame from ``generate_cases``
  (1M rows; both calls parse the frame);
- the same on the cases as text (``codes_to_text_frame``: ``yes``/``no``/blank and category names,
  as a CSV holds them; 200k rows), the like-for-like input for the generic encoder;
- a generic ``ColumnTransformer``: ``OneHotEncoder(handle_unknown="ignore")`` over the tri-state
  and category columns as text, mean imputation with missing indicators and standard scaling
  for the numbers; ``fit`` then ``transform`` on the same 200k text rows.

Each is timed in its own child (median of 3 after one warm-up). There is no target: the rows are
for comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .harness import log, make_row, time_in_child

__all__ = ["featurizer_case", "featurizer_text_case", "generic_case", "run"]

FULL_SIZE, QUICK_SIZE = 1_000_000, 100_000
GENERIC_SIZE, QUICK_GENERIC_SIZE = 200_000, 20_000


def _text_cases(n: int):
    from pipeline import load_knowledge_base
    from pipeline.core.parsing import codes_to_text_frame
    from pipeline.data.generate import generate_codes

    codes, _, _ = generate_codes(load_knowledge_base(), n, seed=0)
    return codes_to_text_frame(codes)


def featurizer_case(n: int) -> Callable[[], Any]:
    """Setup (untimed): a typed DataFrame from ``generate_cases``. Timed: ``CaseFeaturizer`` fit + transform."""
    from pipeline import generate_cases, load_knowledge_base
    from pipeline.model.features import CaseFeaturizer

    frame = generate_cases(load_knowledge_base(), n, seed=0)
    return lambda: CaseFeaturizer().fit(frame).transform(frame)


def featurizer_text_case(n: int) -> Callable[[], Any]:
    """Setup (untimed): the cases as text. Timed: ``CaseFeaturizer`` fit + transform."""
    from pipeline.model.features import CaseFeaturizer

    text = _text_cases(n)
    return lambda: CaseFeaturizer().fit(text).transform(text)


def generic_case(n: int) -> Callable[[], Any]:
    """Setup (untimed): the cases as text. Timed: a generic ``ColumnTransformer`` fit + transform."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from pipeline.core.schema import FIELDS

    text = _text_cases(n)
    coded = [f.name for f in FIELDS if f.kind in ("tristate", "category")]
    numeric = [f.name for f in FIELDS if f.kind in ("integer", "float")]

    def encode():
        encoder = ColumnTransformer([
            ("coded", OneHotEncoder(handle_unknown="ignore"), coded),
            ("numeric", make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()), numeric),
        ])
        return encoder.fit(text).transform(text)

    return encode


def run(quick: bool) -> list[dict]:
    """Rows for ``CaseFeaturizer`` on typed and text frames and for the generic encoder."""
    n = QUICK_SIZE if quick else FULL_SIZE
    n_text = QUICK_GENERIC_SIZE if quick else GENERIC_SIZE
    rows = []
    for name, case, size in (("CaseFeaturizer (typed frame)", featurizer_case, n),
                             ("CaseFeaturizer (text frame)", featurizer_text_case, n_text),
                             ("generic OneHotEncoder (text frame)", generic_case, n_text)):
        log(f"featurize: {name} on {size:,} rows ...")
        m = time_in_child(case, size)
        rows.append(make_row(f"featurize: {name}", size, m.seconds, peak_rss_mib=m.peak_rss_mib,
                             runs=m.runs, setup_peak_rss_mib=m.setup_peak_rss_mib))
    return rows
