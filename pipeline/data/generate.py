"""Vectorised sampling of synthetic case vignettes from the knowledge base.

One draw per field for all cases at once: no Python loop runs per case. The order of draws is
fixed (condition, severity, context, onset, symptoms, then missing answers), so a seed gives the
same cases on every run.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from pipeline.core.config import GenerateConfig
from pipeline.core.files import sha256_file, tmp_path, write_json_atomic
from pipeline.core.knowledge import AGES, KnowledgeBase, duration_masses_below
from pipeline.core.parsing import codes_to_frame
from pipeline.core.schema import (
    CATEGORY_FIELDS,
    CONDITIONS,
    CONTEXT_TRISTATES,
    FIELDS,
    ID_COLUMN,
    LABEL_COLUMN,
    ONSET_TRISTATES,
    SEVERITIES,
    SEVERITY_COLUMN,
    SYMPTOMS,
    UNKNOWN,
    field,
    max_duration_days,
)

__all__ = ["SAMPLE_BLOCK_ROWS", "generate_cases", "generate_codes", "sample_block_seed", "split_seed", "write_splits"]


def _draw_categorical(rng: np.random.Generator, probs: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """One category per case from ``probs[cls]`` (rows sum to 1), by inverse CDF per class."""
    cdf = np.cumsum(probs, axis=1)
    cdf[:, -1] = 1.0
    u = rng.random(len(cls))
    out = np.empty(len(cls), dtype=np.int16)
    for k in range(probs.shape[0]):
        idx = cls == k
        out[idx] = np.searchsorted(cdf[k], u[idx], side="right")
    return out


def _round_significant(x: np.ndarray, digits: int = 4, *, down: bool = False) -> np.ndarray:
    scale = np.power(10.0, digits - 1 - np.floor(np.log10(np.abs(x))))
    return (np.floor if down else np.round)(x * scale) / scale


def _durations(rng: np.random.Generator, params: np.ndarray, episode: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """Days from each case's log-normal (``params``: log-median, log-sd per case) or, with
    probability ``episode``'s share, its recent episode's (``episode``: share, log-median, log-sd
    per case), truncated above at ``bound`` (the symptoms began after birth), rounded to 4
    significant digits without passing it.

    One normal draw per case, mapped by the inverse CDF onto the truncated normal, so the seed's
    later draws are those of the untruncated model; where the bound's CDF is 1 in floating point
    the draw is kept as it is. Where any case can have an episode, one uniform draw per case then
    picks its log-normal with the chance that each has below the bound (the truncated mixture's
    own)."""
    z = rng.standard_normal(len(params))
    if np.any(episode[:, 0] > 0):
        usual, recent = duration_masses_below(params, episode, bound)
        params = np.where((rng.random(len(params)) * (usual + recent) < recent)[:, None], episode[:, 1:], params)
    keep = ndtr((np.log(bound) - params[:, 0]) / params[:, 1])
    z = np.where(keep < 1.0, ndtri(ndtr(z) * keep), z)
    days = np.exp(params[:, 0] + params[:, 1] * z)
    rounded = _round_significant(days)
    over = rounded > bound
    rounded[over] = _round_significant(days[over], down=True)
    return rounded


SAMPLE_BLOCK_ROWS = 65_536  # `kneepain sample` draws and writes its cases this many at a time


def sample_block_seed(seed: int, block: int) -> int | np.random.SeedSequence:
    """The seed of block ``block`` of ``kneepain sample --seed seed``: ``seed`` itself for the first
    (so a sample of at most :data:`SAMPLE_BLOCK_ROWS` cases is ``generate_codes(kb, n, seed=seed)``'s),
    then streams spawned from it, independent of each other and of the first."""
    return seed if block == 0 else np.random.SeedSequence(seed, spawn_key=(block,))


def generate_codes(kb: KnowledgeBase, n: int, *,
                   seed: int | np.random.SeedSequence) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Draw ``n`` cases as schema codes. Returns ``(codes, condition_index, severity_index)``."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n == {n!r}, must be a non-negative integer.")
    rng = np.random.default_rng(seed)
    n = int(n)
    cond = _draw_categorical(rng, kb.prior[None, :], np.zeros(n, dtype=np.int16))
    sev = _draw_categorical(rng, kb.severity, cond)
    codes: dict[str, np.ndarray] = {}

    def bernoulli(p: np.ndarray) -> np.ndarray:
        return (rng.random(n) < p).astype(np.int8)

    female = bernoulli(kb.female[cond]).astype(bool)
    codes["sex"] = np.where(female, 0, 1).astype(np.int8)  # allowed = (female, male)
    codes["age"] = AGES[_draw_categorical(rng, kb.age_pmf, cond)].astype(np.float64)
    fertile = female & (codes["age"] <= kb.fertile_age[1])
    p_preg = np.where(fertile, kb.pregnant[cond], np.where(female, kb.pregnant_other, 0.0))
    codes["pregnant"] = bernoulli(p_preg)
    bmi = rng.normal(kb.bmi[cond, 0], kb.bmi[cond, 1])
    codes["bmi"] = np.round(np.clip(bmi, field("bmi").minimum, field("bmi").maximum), 1)
    for name in CONTEXT_TRISTATES:
        if name == "hormonal_therapy":  # the rates of women and of men differ
            codes[name] = bernoulli(np.where(female, kb.tristate[name][cond, 0], kb.hormonal_men[cond]))
        elif name != "pregnant":
            codes[name] = bernoulli(kb.tristate[name][cond, 0])
    for name in CATEGORY_FIELDS:
        if name != "sex":
            codes[name] = _draw_categorical(rng, kb.category[name], cond).astype(np.int8)
    for name in ONSET_TRISTATES:
        codes[name] = bernoulli(kb.tristate[name][cond, 0])
    codes["symptom_duration_days"] = _durations(rng, kb.duration[cond], kb.duration_episode[cond],
                                                max_duration_days(codes["age"]))
    for name in SYMPTOMS:
        codes[name] = bernoulli(kb.tristate[name][cond, sev])
    # missing answers: first the fields others depend on, then those whose chance of being unknown
    # depends on a reported answer (missing at random given what is observed)
    draws = {f.name: rng.random(n) for f in FIELDS if not f.required}
    for f in sorted((f for f in FIELDS if not f.required), key=lambda f: f.name in kb.missingness_given):
        if f.name in kb.missingness_given:
            given, p_by_answer = kb.missingness_given[f.name]
            p_hide = p_by_answer[codes[given]]  # code -1 (unknown) takes the last entry: the base rate
        else:
            p_hide = kb.missingness[f.name]
        hide = draws[f.name] < p_hide
        codes[f.name] = np.where(hide, np.nan if f.kind in ("integer", "float") else UNKNOWN,
                                 codes[f.name]).astype(codes[f.name].dtype)
    return {f.name: codes[f.name] for f in FIELDS}, cond.astype(np.int8), sev.astype(np.int8)


def generate_cases(kb: KnowledgeBase, n: int, *, seed: int | np.random.SeedSequence) -> pd.DataFrame:
    """Draw ``n`` labelled synthetic cases.

    Returns
    -------
    DataFrame of shape (n, n_fields + 2)
        The schema's fields (categoricals, nullable booleans, numbers with NaN for unknown), plus
        ``condition`` (the label) and ``severity`` (the latent severity).
    """
    codes, cond, sev = generate_codes(kb, n, seed=seed)
    frame = codes_to_frame(codes)
    frame[LABEL_COLUMN] = pd.Categorical.from_codes(cond, categories=list(CONDITIONS))
    frame[SEVERITY_COLUMN] = pd.Categorical.from_codes(sev, categories=list(SEVERITIES))
    return frame


def split_seed(seed: int, split: str) -> np.random.SeedSequence:
    """The seed of one split: derived from the base seed and the split's name (adding a split changes no other)."""
    return np.random.SeedSequence(seed, spawn_key=(zlib.crc32(split.encode()),))


def write_splits(kb: KnowledgeBase, config: GenerateConfig, out_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Generate every split of ``config`` into ``out_dir``/<split>.parquet and a ``manifest.json``.

    Files are written to a temporary name and renamed, so a split is complete or absent.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shifted = kb.shifted()
    frames: dict[str, pd.DataFrame] = {}
    manifest: dict[str, Any] = {"seed": config.seed, "knowledge_base_digest": kb.digest(), "splits": {}}
    for name, split in config.splits.items():
        base = shifted if split.population == "shift" else kb
        frame = generate_cases(base, split.n, seed=split_seed(config.seed, name))
        frame.insert(0, ID_COLUMN, [f"{name}-{i:07d}" for i in range(split.n)])
        path = out_dir / f"{name}.parquet"
        tmp = tmp_path(path)
        frame.to_parquet(tmp, index=False, compression="zstd")
        os.replace(tmp, path)
        frames[name] = frame
        manifest["splits"][name] = {"n": split.n, "population": split.population, "file": path.name,
                                    "sha256": sha256_file(path)}
    write_json_atomic(out_dir / "manifest.json", manifest)
    return frames
