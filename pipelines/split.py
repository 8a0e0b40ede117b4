"""Assigning rows to train / valid / test, deterministically."""

from __future__ import annotations

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from deepfm.config import SplitConfig

SPLIT, ROW_HASH = "_split", "_row_hash"
SPLITS = ("train", "valid", "test")
_RESOLUTION = 1_000_000


def assign_split(frame: DataFrame, cfg: SplitConfig, key_columns: list[str]) -> DataFrame:
    """Add `_split` and `_row_hash` (a seeded hash of the row key, used to order shards).

    A random split hashes the row key with the seed, so a row lands in the same split on every
    run, whatever the partitioning. A time split cuts at train_end and valid_end.
    """
    keys = [F.col(f"`{c}`") for c in (cfg.key or key_columns)]
    row_hash = F.xxhash64(F.lit(cfg.seed), *keys)
    frame = frame.withColumn(ROW_HASH, row_hash)
    if cfg.method == "random":
        split = _by_fraction(F.pmod(F.col(ROW_HASH), F.lit(_RESOLUTION)) / _RESOLUTION, cfg)
    else:
        ts = F.col(f"`{cfg.time_column}`")
        split = (
            F.when(ts < F.to_timestamp(F.lit(cfg.train_end)), "train")
            .when(ts < F.to_timestamp(F.lit(cfg.valid_end)), "valid")
            .otherwise("test")
        )
    return frame.withColumn(SPLIT, split)


def _by_fraction(unit: SparkColumn, cfg: SplitConfig) -> SparkColumn:
    return F.when(unit < cfg.train, "train").when(unit < cfg.train + cfg.valid, "valid").otherwise("test")
