"""Numeric fields in Spark SQL: clipping, the training statistics, the dense value the model reads.

The transforms themselves are in deepfm/transforms.py. A missing dense value becomes 0.0, the
training mean after standardization, so it neither pushes nor pulls the embedding.
"""

from __future__ import annotations

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from deepfm.feature_map import MISSING_DENSE_VALUE, FeatureField
from deepfm.transforms import transform


def clipped(value: SparkColumn, clip: tuple[float, float] | None) -> SparkColumn:
    if clip is None:
        return value
    # greatest/least skip nulls, which would turn a missing value into a bound
    return F.when(value.isNotNull(), F.least(F.greatest(value, F.lit(clip[0])), F.lit(clip[1])))


def fit_dense_stats(train: DataFrame, fields: list[FeatureField]) -> dict[str, tuple[float, float]]:
    """Mean and population std of each dense field's transformed value, on non-missing rows."""
    fitted = [f for f in fields if transform(f.transform).standardized]
    if not fitted:
        return {}
    aggs = []
    for f in fitted:
        value = transform(f.transform).spark(clipped(F.col(f"`{f.name}`"), f.clip))
        aggs += [F.mean(value).alias(f"{f.name}__mean"), F.stddev_pop(value).alias(f"{f.name}__std")]
    row = train.agg(*aggs).first()
    stats = {}
    for f in fitted:
        mean, std = row[f"{f.name}__mean"], row[f"{f.name}__std"]
        # A field that is always missing or constant must not divide by zero.
        stats[f.name] = (float(mean or 0.0), float(std) if std else 1.0)
    return stats


def dense_value(value: SparkColumn, f: FeatureField) -> SparkColumn:
    """The float the model reads for a dense field (float32)."""
    value = transform(f.transform).spark(clipped(value, f.clip))
    if transform(f.transform).standardized:
        value = (value - F.lit(f.mean)) / F.lit(f.std)
    return F.coalesce(value, F.lit(MISSING_DENSE_VALUE)).cast("float")
