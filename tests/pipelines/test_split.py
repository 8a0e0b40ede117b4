from datetime import datetime, timedelta

from pyspark.sql import functions as F

from deepfm.config import SplitConfig
from pipelines.split import ROW_HASH, SPLIT, assign_split


def _rows(spark, n=20_000):
    return spark.range(n).select(F.col("id").alias("k"), (F.col("id") % 7).cast("string").alias("c"))


def test_random_split_fractions_and_determinism(spark):
    cfg = SplitConfig(seed=11, train=0.7, valid=0.2, test=0.1)
    frame = _rows(spark)
    first = assign_split(frame, cfg, ["k", "c"])
    counts = {r[SPLIT]: r["count"] for r in first.groupBy(SPLIT).count().collect()}
    n = 20_000
    # binomial standard deviation at n=20k is ~0.3%; 1.5% is > 4 sigma
    assert abs(counts["train"] / n - 0.7) < 0.015
    assert abs(counts["valid"] / n - 0.2) < 0.015
    assert abs(counts["test"] / n - 0.1) < 0.015
    # the same row lands in the same split whatever the partitioning
    again = assign_split(frame.repartition(7), cfg, ["k", "c"])
    a = {r["k"]: (r[SPLIT], r[ROW_HASH]) for r in first.collect()}
    b = {r["k"]: (r[SPLIT], r[ROW_HASH]) for r in again.collect()}
    assert a == b
    # another seed moves rows
    other = assign_split(frame, SplitConfig(seed=12, train=0.7, valid=0.2, test=0.1), ["k", "c"])
    moved = sum(a[r["k"]][0] != r[SPLIT] for r in other.collect())
    assert moved > 0.3 * n


def test_split_key_subset(spark):
    frame = spark.createDataFrame([(1, "x"), (1, "y"), (2, "x")], "user long, item string")
    out = assign_split(frame, SplitConfig(key=["user"]), ["user", "item"]).collect()
    by_user = {}
    for r in out:
        by_user.setdefault(r["user"], set()).add(r[SPLIT])
    assert len(by_user[1]) == 1  # rows sharing the key stay together


def test_time_split(spark):
    t0 = datetime(2026, 1, 1)
    frame = spark.createDataFrame([(i, t0 + timedelta(hours=i)) for i in range(72)], "k long, ts timestamp")
    cfg = SplitConfig(method="time", time_column="ts", train_end="2026-01-02 00:00:00",
                      valid_end="2026-01-02 12:00:00")
    got = {r["k"]: r[SPLIT] for r in assign_split(frame, cfg, ["k", "ts"]).collect()}
    assert all(got[i] == "train" for i in range(24))
    assert all(got[i] == "valid" for i in range(24, 36))
    assert all(got[i] == "test" for i in range(36, 72))
