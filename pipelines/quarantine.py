"""Malformed rows, kept and explained: parsed tables staged with a status, reject tables, the limit.

A job parses each input once into typed Parquet with a `_status` column, so later steps never
re-parse text; accepted rows flow on, rejected ones land in a `rejects` table with their reason,
raw line and source file, and a job whose reject rate is above its limit fails with examples.
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from deepfm.errors import UserError
from pipelines import read

log = logging.getLogger(__name__)

STATUS = "_status"


class RejectRateError(UserError, RuntimeError):
    """Too much of an input was malformed to trust the rest."""


def stage(parsed: DataFrame, path: str, source: str) -> dict[str, int]:
    """Write `read.read_table` output (of the input at `source`) to `path` with a status column;
    the row counts by status."""
    status = F.when(F.col(read.REASON).isNull(), "ok").otherwise("rejected")
    with read.unreadable_files_named(parsed.sparkSession, source):
        parsed.withColumn(STATUS, status).write.parquet(path)
    staged_rows = parsed.sparkSession.read.parquet(path)
    by_status = {
        r[STATUS]: r["n"] for r in staged_rows.groupBy(STATUS).agg(F.count(F.lit(1)).alias("n")).collect()
    }
    counts = {"accepted": by_status.get("ok", 0), "rejected": by_status.get("rejected", 0)}
    counts["input"] = counts["accepted"] + counts["rejected"]
    return counts


def staged(spark: SparkSession, path: str, status: str) -> DataFrame:
    """The accepted ("ok") rows without bookkeeping columns, or the "rejected" rows with them."""
    frame = spark.read.parquet(path).where(F.col(STATUS) == status)
    return frame.drop(STATUS, *(read.BOOKKEEPING if status == "ok" else ()))


def write_rejects(spark: SparkSession, staged_paths: dict[str, str], dest: str,
                  rows: dict[str, dict[str, Any]]) -> None:
    """One (table, reason, raw, raw_bytes, source) table for every input (raw_bytes: a line's
    bytes when they are not valid UTF-8, else null); adds `rejected_by_reason` to rows."""
    frames = [
        staged(spark, path, "rejected").select(
            F.lit(name).alias("table"),
            F.col(read.REASON).alias("reason"),
            F.col(read.RAW).alias("raw"),
            F.col(read.RAW_BYTES).alias("raw_bytes"),
            F.col(read.SOURCE).alias("source"),
        )
        for name, path in staged_paths.items()
    ]
    rejects = frames[0]
    for frame in frames[1:]:
        rejects = rejects.unionByName(frame)
    total = sum(rows[name]["rejected"] for name in staged_paths)
    rejects.coalesce(max(1, total // 1_000_000)).write.parquet(dest)
    summary = (
        spark.read.parquet(parquet_files(dest))
        .groupBy("table", F.split("reason", ": '").getItem(0).alias("kind"))
        .count()
        .collect()
    )
    for name in staged_paths:
        rows[name]["rejected_by_reason"] = dict(
            sorted(((r["kind"], r["count"]) for r in summary if r["table"] == name), key=lambda kv: -kv[1])
        )


def parquet_files(directory: str) -> str:
    """A glob of the Parquet files of a directory Spark wrote. Spark ignores a root path whose name
    starts with '_' or '.', as `_rejects/` and the hidden temporary outputs do."""
    return f"{directory.rstrip('/')}/*.parquet"


def check_reject_rate(spark: SparkSession, name: str, counts: dict[str, Any], staged_path: str, limit: float,
                      setting: str) -> None:
    """Warn about any rejects; fail above `limit` (the config key `setting`) with reasons and examples."""
    rate = counts["rejected"] / counts["input"] if counts["input"] else 0.0
    counts["reject_rate"] = rate
    if rate <= limit:
        if counts["rejected"]:
            log.warning("%s: %d of %d rows rejected (%.3f%%)", name, counts["rejected"], counts["input"], 100 * rate)
        return
    examples = staged(spark, staged_path, "rejected").select(read.REASON, read.RAW).limit(5)
    lines = "\n".join(f"  {r[read.REASON]}: {r[read.RAW]!r:.200}" for r in examples.collect())
    raise RejectRateError(
        f"{name}: {counts['rejected']} of {counts['input']} rows rejected ({100 * rate:.2f}%), above "
        f"{setting}={limit:g}. Reasons: {counts.get('rejected_by_reason', {})}. Examples:\n{lines}\n"
        f"Fix the input or the column config, or raise {setting}."
    )
