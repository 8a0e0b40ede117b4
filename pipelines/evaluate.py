"""The evaluate job: exact metrics and a report from predictions with labels, at any scale.

Spark reduces the predictions to one row per distinct (slice value, probability) with its row and
click counts; AUC, logloss, calibration and the ROC curve are then exact on that table (sklearn
with sample weights), never averages of per-batch or per-partition figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deepfm.config import Config, EvaluateConfig
from deepfm.features.preprocess_output import PreprocessOutput
from deepfm.serving.inference import PROBABILITY
from deepfm.storage.location import Location
from deepfm.tracking.report import check_replaceable, write_report
from deepfm.training.metrics import calibration, grouped_metrics, roc_points
from deepfm.training.model_versions import CURVES, ModelVersion, open_model_version
from pipelines import score
from pipelines.read import InputError
from pipelines.spark import try_cast
from pipelines.steps import step

log = logging.getLogger(__name__)

OTHER, MISSING = "(other)", "(missing)"


@dataclass(frozen=True)
class EvaluateResult:
    report: Location
    metrics: dict[str, Any]
    model: Location | None  # the model version evaluated, when the report names one


def run_evaluate(spark: SparkSession, cfg: Config) -> EvaluateResult:
    ev: EvaluateConfig = cfg.require("evaluate")
    check_replaceable(ev.output)  # before any work: the report would not be written
    model = open_model_version(ev.model) if ev.model else None
    if model is not None and ev.data is not None:
        model.load()  # a model that cannot be loaded fails here, before the executors score with it
    label = ev.label or (model.feature_map.label if model else "label")
    with step("aggregate predictions by value"):
        frame, source = _predictions(spark, ev, model, label)
        counts, unlabelled = aggregate(frame, label, ev.slice)
    metrics = report_metrics(counts, ev.calibration_bins, ev.slice, ev.max_slices)
    metrics.update({"source": source, "label": label, "rows_without_label": unlabelled,
                    **({"model_version": model.name, "model_digest": model.weights_digest} if model
                       else {name: _single_value(frame, name) for name in ("model_version", "model_digest")})})
    if model is not None:
        metrics["drift"] = training_drift(model)
    overall = metrics["overall"]
    log.info("AUC %.4f, logloss %.4f, observed CTR %.4f, predicted CTR %.4f over %d rows",
             overall["auc"], overall["logloss"], overall["ctr_observed"], overall["ctr_predicted"], overall["rows"])
    roc = roc_points(*(counts[c].to_numpy() for c in ("p", "rows", "clicks")))
    report = write_report(ev.output, metrics, roc, model.path / CURVES if model else None)
    log.info("report: %s", report)
    return EvaluateResult(report, metrics, model.path if model else None)


def training_drift(model: ModelVersion) -> dict[str, Any] | None:
    """The drift checks' figures of the data the model was trained on, as its preprocess recorded them
    (pipelines/drift_checks.py); None when the model names no such data, or it is gone."""
    record = model.record()
    if record is None:
        return None
    try:
        drift = PreprocessOutput.open(record.data).manifest.drift
    except (OSError, ValueError) as err:
        log.info("no drift figures for the report: the training data %s cannot be read (%s)", record.data, err)
        return None
    return None if drift is None else {"data": record.data, **drift}


def _predictions(spark: SparkSession, ev: EvaluateConfig, model: ModelVersion | None, label: str
                 ) -> tuple[DataFrame, str]:
    if ev.predictions is not None:
        frame = spark.read.parquet(ev.predictions)
        missing = [c for c in (PROBABILITY, label, ev.slice) if c and c not in frame.columns]
        if missing:
            raise InputError(f"predictions {ev.predictions} lack column(s) {missing} (columns: {frame.columns})")
        return frame, ev.predictions
    assert model is not None and ev.data is not None  # EvaluateConfig guarantees both
    keep = [label, *([ev.slice] if ev.slice and ev.slice != label else [])]
    encoded = score.encoded_split(spark, ev.data, model, keep)
    return score.predict(encoded, model, keep), f"{ev.data} scored with {model.path}"


def aggregate(frame: DataFrame, label: str, slice_column: str | None) -> tuple[pd.DataFrame, int]:
    """(slice, p, rows, clicks) per distinct prediction, and the number of rows without a label.

    One pass over the predictions: the checks ride along in the same aggregation.
    """
    y = try_cast(F.col(f"`{label}`"), "double")  # a label that is not a number reads as missing
    slice_value = (F.coalesce(F.col(f"`{slice_column}`").cast("string"), F.lit(MISSING)) if slice_column
                   else F.lit(""))
    counts = (
        frame.groupBy(slice_value.alias("slice"), F.col(PROBABILITY).cast("double").alias("p"))
        .agg(F.count(y).alias("rows"), F.sum(y).alias("clicks"),
             F.sum(y.isNull().cast("long")).alias("unlabelled"),
             F.sum((y.isNotNull() & ~y.isin(0.0, 1.0)).cast("long")).alias("not_binary"))
        .toPandas()
    )
    if counts["not_binary"].sum():
        raise InputError(f"label column '{label}' must hold 0 or 1; {int(counts['not_binary'].sum())} rows do not")
    if counts["p"].isna().any():
        raise InputError(f"column '{PROBABILITY}' has null or NaN predictions")
    unlabelled = int(counts["unlabelled"].sum())
    if unlabelled:
        log.warning("%d rows have no label and are left out of the metrics", unlabelled)
    counts = counts[counts["rows"] > 0].drop(columns=["unlabelled", "not_binary"]).reset_index(drop=True)
    if counts.empty:
        raise InputError("no labelled predictions to evaluate")
    return counts, unlabelled


def report_metrics(counts: pd.DataFrame, bins: int, slice_column: str | None, max_slices: int) -> dict[str, Any]:
    overall = counts.groupby("p", as_index=False)[["rows", "clicks"]].sum()
    arrays = (overall["p"].to_numpy(), overall["rows"].to_numpy(), overall["clicks"].to_numpy())
    metrics: dict[str, Any] = {"overall": grouped_metrics(*arrays), "calibration": calibration(*arrays, bins)}
    if slice_column:
        sizes = counts.groupby("slice")["rows"].sum().sort_values(ascending=False, kind="stable")
        top = set(sizes.index[:max_slices])
        named = counts.assign(slice=np.where(counts["slice"].isin(top), counts["slice"], OTHER))
        values = []
        for value, part in named.groupby("slice", sort=False):
            part = part.groupby("p", as_index=False)[["rows", "clicks"]].sum()
            values.append({"value": value, **grouped_metrics(part["p"].to_numpy(), part["rows"].to_numpy(),
                                                             part["clicks"].to_numpy())})
        metrics["slices"] = {"column": slice_column, "values": sorted(values, key=lambda v: -v["rows"])}
    return metrics


def _single_value(frame: DataFrame, column: str) -> str | None:
    """The one value of a column the scores carry (model_version, model_digest), or "mixed: a, b"."""
    if column not in frame.columns:
        return None
    values = [r[0] for r in frame.select(column).distinct().limit(2).collect()]
    return values[0] if len(values) == 1 else "mixed: " + ", ".join(map(str, values))
