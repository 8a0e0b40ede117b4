"""Drift checks before training: a run's data against the model serving and the previous run's data.

Preprocess measures, on its training split, after fitting the vocabulary and before writing shards:
- each field's missing rate, against the reference data's (the previous date's preprocess output,
  `drift.reference_data`): a field that is suddenly missing in most rows is an upstream fault, and a
  model trained on it would learn that the field means nothing;
- each categorical field's OOV rate against the serving model's vocabulary (`drift.reference_model`):
  the share of the field's counted values that the model has never seen;
- each bucketized numeric field's population stability index (PSI) against the reference data:
  sum over buckets of (p - q) ln(p / q), over the log buckets both vocabularies count.
A figure past its `drift.*` threshold stops the run (exit 2) naming the field and the figure,
before anything is written or trained. The figures of a run that passes go into its manifest, where
the next run reads its missing rates, and the report shows them.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from deepfm.config import DriftChecksConfig
from deepfm.errors import UserError
from deepfm.features.feature_map import FeatureMap
from deepfm.features.preprocess_output import PreprocessOutput
from deepfm.training.model_versions import ModelVersionError, open_model_version
from pipelines.vocab import COUNT, FIELD, TOKEN

log = logging.getLogger(__name__)
PSI_FLOOR = 1e-4  # a bucket's share where one side never saw it: keeps the log finite


class DriftError(UserError, ValueError):
    """The run's data moved past a drift threshold: look into the day's data before training on it."""


def check_drift(cfg: DriftChecksConfig, train: DataFrame, fmap: FeatureMap, vocabulary: DataFrame) -> dict[str, Any]:
    """Measure the run's drift, refuse it past the thresholds, and return the figures for the manifest."""
    spark = train.sparkSession
    names = [f.name for f in fmap.fields]
    row = train.select(*(F.avg(F.col(f"`{n}`").isNull().cast("double")).alias(n) for n in names)).first()
    fields: dict[str, dict[str, float]] = {n: {"missing_rate": round(float(row[n] or 0.0), 5)} for n in names}
    reference = _reference_data(cfg)
    model = _reference_model(cfg)
    if reference is not None:
        before = (reference.manifest.drift or {}).get("fields", {})
        for name, figures in fields.items():
            if name in before:
                figures["missing_rate_before"] = before[name]["missing_rate"]
        bucketized = [f.name for f in fmap.categorical if f.source_role == "numeric" and not f.hash_buckets]
        if bucketized:
            for name, psi in _psi(vocabulary, spark.read.parquet(reference.vocabulary.uri), bucketized).items():
                fields[name]["psi"] = psi
    if model is not None:
        looked_up = [f.name for f in fmap.categorical if not f.hash_buckets]
        for name, rate in _oov_rates(vocabulary, spark.read.parquet(model.vocabulary.uri), looked_up).items():
            fields[name]["oov_rate_vs_serving"] = rate
    problems = _problems(cfg, fields, reference, model)
    if problems:
        raise DriftError(f"drift check: {'; '.join(problems)}: look into the day's data before training on it, or "
                         "raise the threshold (the drift.* keys)")
    return {"reference_data": str(reference.location) if reference else None,
            "reference_model": str(model.path) if model else None, "fields": fields}


def _problems(cfg: DriftChecksConfig, fields: dict[str, dict[str, float]], reference, model) -> list[str]:
    problems = []
    for name, figures in fields.items():
        before = figures.get("missing_rate_before")
        if before is not None and figures["missing_rate"] - before > cfg.max_missing_rate_increase:
            problems.append(f"field {name} is missing in {figures['missing_rate']:.1%} of the training rows against "
                            f"{before:.1%} in {reference.location} (drift.max_missing_rate_increase "
                            f"{cfg.max_missing_rate_increase})")
        psi = figures.get("psi")
        if psi is not None and psi > cfg.max_psi:
            problems.append(f"numeric field {name} has PSI {psi:.3f} against {reference.location} "
                            f"(drift.max_psi {cfg.max_psi})")
        oov = figures.get("oov_rate_vs_serving")
        if oov is not None and cfg.max_oov_rate is not None and oov > cfg.max_oov_rate:
            problems.append(f"{oov:.1%} of field {name}'s counted values are not in the vocabulary of the serving "
                            f"model {model.path} (drift.max_oov_rate {cfg.max_oov_rate})")
    return problems


def _reference_data(cfg: DriftChecksConfig) -> PreprocessOutput | None:
    if cfg.reference_data is None:
        return None
    try:
        return PreprocessOutput.open(cfg.reference_data)
    except FileNotFoundError:
        log.info("drift.reference_data %s does not exist (the first run?): no checks against earlier data",
                 cfg.reference_data)
        return None


def _reference_model(cfg: DriftChecksConfig):
    if cfg.reference_model is None:
        return None
    try:
        return open_model_version(cfg.reference_model)
    except ModelVersionError as err:
        log.info("drift.reference_model: %s: no OOV rates against a serving model", err)
        return None


def _psi(now: DataFrame, before: DataFrame, fields: list[str]) -> dict[str, float]:
    """PSI of each field's bucket shares, now against before."""
    def shares(vocabulary: DataFrame) -> dict[tuple[str, str], float]:
        rows = vocabulary.where(F.col(FIELD).isin(fields) & F.col(TOKEN).isNotNull()).select(FIELD, TOKEN, COUNT)
        counts = [(r[FIELD], r[TOKEN], r[COUNT]) for r in rows.collect()]
        totals = {f: sum(c for g, _, c in counts if g == f) for f in fields}
        return {(f, t): c / totals[f] for f, t, c in counts if totals[f]}

    p, q = shares(now), shares(before)
    out = {}
    for field in fields:
        buckets = {t for f, t in (*p, *q) if f == field}
        if buckets:
            out[field] = round(sum((p.get((field, t), 0.0) - q.get((field, t), 0.0))
                                   * math.log(max(p.get((field, t), 0.0), PSI_FLOOR)
                                              / max(q.get((field, t), 0.0), PSI_FLOOR)) for t in buckets), 5)
    return out


def _oov_rates(now: DataFrame, serving: DataFrame, fields: list[str]) -> dict[str, float]:
    """Per field: the share of this run's counted values whose token the serving vocabulary lacks."""
    known = serving.where(F.col(TOKEN).isNotNull()).select(FIELD, TOKEN, F.lit(True).alias("_known"))
    joined = now.where(F.col(FIELD).isin(fields) & F.col(TOKEN).isNotNull()).join(known, [FIELD, TOKEN], "left")
    rows = joined.groupBy(FIELD).agg(F.sum(COUNT).alias("_all"),
                                     F.sum(F.when(F.col("_known").isNull(), F.col(COUNT)).otherwise(0)).alias("_new"))
    return {r[FIELD]: round(r["_new"] / r["_all"], 5) for r in rows.collect() if r["_all"]}
