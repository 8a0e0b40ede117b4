"""Joins: impressions with click events (labels), and with side tables (attributes)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from deepfm.config import ClickJoin, SideTable


class JoinError(ValueError):
    pass


def label_from_clicks(impressions: DataFrame, clicks: DataFrame, cfg: ClickJoin) -> DataFrame:
    """Add a 0/1 label: 1 when a click on the impression falls within the attribution window.

    A click counts when 0 <= click_time - impression_time <= window_seconds. Duplicate clicks
    count once, clicks without an impression are ignored, impressions without clicks get 0.
    """
    imp_key, click_key = cfg.impression_key, cfg.click_key
    imp = impressions.select(F.col(imp_key).alias("_imp_key"), F.col(cfg.impression_time).alias("_imp_t"))
    clk = clicks.select(F.col(click_key).alias("_imp_key"), F.col(cfg.click_time).alias("_clk_t"))
    lag = F.col("_clk_t").cast("long") - F.col("_imp_t").cast("long")
    clicked = (
        imp.join(clk, "_imp_key")
        .where((lag >= 0) & (lag <= cfg.window_seconds))
        .select("_imp_key")
        .distinct()
        .withColumn("_clicked", F.lit(1))
    )
    return (
        impressions.join(clicked, impressions[imp_key] == clicked["_imp_key"], "left")
        .withColumn(cfg.label, F.coalesce(F.col("_clicked"), F.lit(0)).cast("int"))
        .drop("_imp_key", "_clicked")
    )


def join_side_table(frame: DataFrame, side: DataFrame, cfg: SideTable) -> DataFrame:
    """Left-join attribute columns; rows without a match keep nulls (missing values).

    Raises:
        JoinError: the side table repeats a key, which would silently duplicate impressions.
    """
    dupes = side.groupBy(cfg.key).count().where(F.col("count") > 1)
    example = dupes.limit(3).collect()
    if example:
        keys = [row[cfg.key] for row in example]
        raise JoinError(
            f"side table '{cfg.name}' ({cfg.table.path}) has repeated values of '{cfg.key}', "
            f"e.g. {keys}; a join would duplicate rows. Deduplicate it first."
        )
    if cfg.broadcast == "always":
        side = F.broadcast(side)
    elif cfg.broadcast == "never":
        side = side.hint("merge")
    return frame.join(side, cfg.key, "left")
