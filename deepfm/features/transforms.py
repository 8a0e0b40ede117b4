"""The numeric transforms: one registry that config validation, the vocabulary, preprocess's Spark
SQL and the Arrow/numpy encoder all look a transform up in.

- `log_bucketize`: v > 2 becomes 3 + floor(ln(v)^2), else floor(v) (the Criteo winners' trick, also
  used by the BARS benchmark); the bucket is then a categorical value, looked up in the vocabulary.
  The published form, floor(ln(v)^2) alone, puts 3 and 4 in the bucket of 1: the offset keeps the
  values kept as they are apart from the bucketized ones (on the synthetic teacher, the collision
  alone cost 0.001 AUC).
- `log1p_standardize`: sign(v) * ln(1 + |v|), then standardized with training mean and std.
  The signed form keeps negative counts (Criteo's I2) finite.
- `standardize`: (v - mean) / std with training statistics.
- `none`: the raw value.

Clipping, when configured, applies to the raw value first. Each transform is written once per
engine the pipeline computes in: `numpy` (deepfm/features/encode.py: the scoring workers, the MLflow model)
and `spark` (column expressions: preprocess); `tests/pipelines/test_transforms_golden.py` holds
the two to one golden file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class NumericTransform:
    name: str
    bucketizes: bool  # the result is a bucket id, a categorical value of the vocabulary
    standardized: bool  # the result is centred and scaled with the training split's mean and std
    # The clipped raw value to the bucket, or to the value whose mean and std are fitted.
    numpy: Callable[[np.ndarray], np.ndarray]  # float64, NaN where missing (stays NaN)
    spark: Callable[[Any], Any]  # a pyspark Column, null where missing (stays null)


def _log_bucket_numpy(values: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(values > 2, 3 + np.floor(np.log(values) ** 2), np.floor(values))


def _log_bucket_spark(value: Any) -> Any:
    from pyspark.sql import functions as F

    return F.when(value > 2, 3 + F.floor(F.pow(F.log(value), 2))).otherwise(F.floor(value)).cast("long")


def _signed_log1p_numpy(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


def _signed_log1p_spark(value: Any) -> Any:
    from pyspark.sql import functions as F

    return F.signum(value) * F.log1p(F.abs(value))


def _identity(value: Any) -> Any:
    return value


TRANSFORMS: dict[str, NumericTransform] = {t.name: t for t in (
    NumericTransform("log_bucketize", True, False, _log_bucket_numpy, _log_bucket_spark),
    NumericTransform("log1p_standardize", False, True, _signed_log1p_numpy, _signed_log1p_spark),
    NumericTransform("standardize", False, True, _identity, _identity),
    NumericTransform("none", False, False, _identity, _identity),
)}
# The names config accepts: a YAML typo is refused, listing them.
TransformName = Literal[tuple(TRANSFORMS)]  # type: ignore[valid-type]


def transform(name: str | None) -> NumericTransform:
    """A field's transform; None (a categorical field) is `none`."""
    return TRANSFORMS[name or "none"]
