"""Numeric fields in Spark SQL: clipping, the training statistics, the dense value the model reads.

The transforms themselves are in deepfm/features/transforms.py. A missing dense value becomes 0.0, the
training mean after standardization, so it neither pushes nor pulls the embedding.
"""

from __future__ import annotations

import math

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from deepfm.features.feature_map import MISSING_DENSE_VALUE, FeatureField
from deepfm.features.transforms import transform


def clipped(value: SparkColumn, clip: tuple[float, float] | None) -> SparkColumn:
    if clip is None:
        return value
    # greatest/least skip nulls, which would turn a missing value into a bound
    return F.when(value.isNotNull(), F.least(F.greatest(value, F.lit(clip[0])), F.lit(clip[1])))


def fit_dense_stats(train: DataFrame, fields: list[FeatureField]) -> dict[str, tuple[float, float]]:
    """Mean and population std of each dense field's transformed value, on non-missing rows.

    Finite for any finite values: Spark's stddev squares deviations, so a few values near 1e300
    make it infinite, and every row's standardized value then 0. Such a field's statistics are
    computed again on its values divided by their largest magnitude, and scaled back.
    """
    fitted = [f for f in fields if transform(f.transform).standardized]
    if not fitted:
        return {}
    values = {f.name: transform(f.transform).spark(clipped(F.col(f"`{f.name}`"), f.clip)) for f in fitted}
    stats = _mean_and_std(train, values, {})
    overflowed = {name for name, (mean, std) in stats.items() if not (math.isfinite(mean) and math.isfinite(std))}
    if overflowed:
        scales = train.agg(*(F.max(F.abs(values[name])).alias(name) for name in overflowed)).first().asDict()
        stats |= _mean_and_std(train, {name: values[name] for name in overflowed}, scales)
    return stats


def _mean_and_std(train: DataFrame, values: dict[str, SparkColumn],
                  scales: dict[str, float]) -> dict[str, tuple[float, float]]:
    aggs = []
    for name, value in values.items():
        scaled = value / F.lit(scales[name]) if scales.get(name) else value
        aggs += [F.mean(scaled).alias(f"{name}__mean"), F.stddev_pop(scaled).alias(f"{name}__std")]
    row = train.agg(*aggs).first()
    stats = {}
    for name in values:
        scale = scales.get(name) or 1.0
        mean, std = row[f"{name}__mean"], row[f"{name}__std"]
        # A field that is always missing or constant must not divide by zero.
        stats[name] = (float(mean or 0.0) * scale, float(std) * scale if std else 1.0)
    return stats


def dense_value(value: SparkColumn, f: FeatureField) -> SparkColumn:
    """The float the model reads for a dense field (float32)."""
    value = transform(f.transform).spark(clipped(value, f.clip))
    if transform(f.transform).standardized:
        value = (value - F.lit(f.mean)) / F.lit(f.std)
    return F.coalesce(value, F.lit(MISSING_DENSE_VALUE)).cast("float")
