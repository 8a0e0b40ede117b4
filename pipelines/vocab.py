"""Per-field vocabularies, built on the training split only.

Ids: 0 = missing, 1 = out-of-vocabulary, then 2, 3, ... by count descending and value ascending,
so that a rerun on the same data assigns identical ids. A field may instead be hashed into N
buckets (ids 2 .. N+1), which needs no table.

With `oov_buckets` B, the values left out (below min_count, beyond top_k, or never seen) are hashed
into the B ids after the kept ones instead of sharing id 1. The table then also holds one row per
bucket with no token: the training rows its tail values account for (what the prior and the
summary read); no value is looked up by it.
"""

from __future__ import annotations

import hashlib
import json

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from deepfm.features.feature_map import FIRST_VALUE_ID, MISSING_ID, OOV_ID, FeatureField
from deepfm.features.transforms import transform
from pipelines.numeric import clipped

FIELD, TOKEN, ID, COUNT = "field", "token", "id", "count"
VOCAB_SCHEMA = f"{FIELD} string, {TOKEN} string, {ID} int, {COUNT} long"


def token(frame_column: SparkColumn, f: FeatureField) -> SparkColumn:
    """The string a categorical field is looked up by; null when the value is missing."""
    if f.source_role == "numeric":  # a bucketizing transform's bucket
        return transform(f.transform).spark(clipped(frame_column, f.clip)).cast("string")
    return frame_column.cast("string")


def count_tokens(train: DataFrame, fields: list[FeatureField]) -> DataFrame:
    """(field, token, count) over the training rows, all fields in one pass."""
    pairs = F.array(
        *[F.struct(F.lit(f.name).alias(FIELD), token(F.col(f"`{f.name}`"), f).alias(TOKEN)) for f in fields]
    )
    return (
        train.select(F.explode(pairs).alias("p"))
        .select("p.*")
        .where(F.col(TOKEN).isNotNull())
        .groupBy(FIELD, TOKEN)
        .agg(F.count(F.lit(1)).alias(COUNT))
    )


def build_vocabulary(counts: DataFrame, fields: list[FeatureField], hash_seed: int,
                     known: DataFrame | None = None) -> DataFrame:
    """Keep tokens seen at least min_count times, or at all when `known` (field, token) holds them
    (an earlier model's values), within top_k, and number them; with oov_buckets, add each tail
    bucket's count."""
    spark = counts.sparkSession
    thresholds = spark.createDataFrame(
        [(f.name, f.min_count or 1, f.top_k, f.oov_buckets or 0) for f in fields],
        f"{FIELD} string, _min long, _top long, _buckets long",
    )
    rank = F.row_number().over(Window.partitionBy(FIELD).orderBy(F.desc(COUNT), F.asc(TOKEN)))
    counted = counts.join(F.broadcast(thresholds), FIELD)
    if known is not None:
        counted = counted.join(known.select(FIELD, TOKEN, F.lit(1).alias("_known")), [FIELD, TOKEN], "left")
        counted = counted.withColumn("_min", F.when(F.col("_known").isNotNull(), F.lit(1)).otherwise(F.col("_min")))
    frequent = counted.where(F.col(COUNT) >= F.col("_min")).withColumn("_rank", rank)
    in_top = F.col("_top").isNull() | (F.col("_rank") <= F.col("_top"))
    kept = frequent.where(in_top).select(FIELD, TOKEN, (F.col("_rank") + FIRST_VALUE_ID - 1).cast("int").alias(ID),
                                         COUNT)
    if not any(f.oov_buckets for f in fields):
        return kept
    left_out = (counted.where(F.col(COUNT) < F.col("_min")).select(FIELD, TOKEN, COUNT, "_buckets")
                .unionByName(frequent.where(~in_top).select(FIELD, TOKEN, COUNT, "_buckets")))
    kept_values = kept.groupBy(FIELD).agg(F.count(F.lit(1)).alias("_kept"))
    tail = (
        left_out.where(F.col("_buckets") > 0)
        .join(F.broadcast(kept_values), FIELD, "left")
        # the buckets follow the field's kept values
        .withColumn(ID, (hashed_id(F.col(TOKEN), F.col("_buckets"), hash_seed)
                         + F.coalesce(F.col("_kept"), F.lit(0))).cast("int"))
        .groupBy(FIELD, ID)
        .agg(F.sum(COUNT).alias(COUNT))
        .select(FIELD, F.lit(None).cast("string").alias(TOKEN), ID, COUNT)
    )
    return kept.unionByName(tail)


def hashed_id(tok: SparkColumn, buckets: int | SparkColumn, seed: int) -> SparkColumn:
    buckets = buckets if isinstance(buckets, SparkColumn) else F.lit(buckets)
    return F.pmod(F.xxhash64(F.lit(seed), tok), buckets) + FIRST_VALUE_ID


def encode(
    frame: DataFrame,
    fields: list[FeatureField],
    vocabulary: DataFrame,
    hash_seed: int,
    broadcast_max_entries: int,
) -> DataFrame:
    """Replace each categorical field by its int32 id (0 missing, 1 OOV).

    Fields with small vocabularies all join against ONE broadcast of the (field, token) table:
    Spark reuses that broadcast for every field, so the job ships the vocabulary once instead of
    once per field. Fields above `broadcast_max_entries` fall back to a shuffle join.
    """
    small = {f.name for f in fields if f.first_oov_bucket - FIRST_VALUE_ID <= broadcast_max_entries}
    shared = F.broadcast(vocabulary.where(F.col(FIELD).isin(sorted(small))).select(FIELD, TOKEN, ID))
    for f in fields:
        column = f"`{f.name}`"
        tok = token(F.col(column), f)
        if f.hash_buckets:
            ids = F.when(tok.isNull(), MISSING_ID).otherwise(hashed_id(tok, f.hash_buckets, hash_seed))
            frame = frame.withColumn(f.name, ids.cast("int"))
            continue
        lookup = shared if f.name in small else vocabulary.where(F.col(FIELD) == f.name)
        lookup = lookup.select(F.col(FIELD).alias("_vf"), F.col(TOKEN).alias("_vt"), F.col(ID).alias("_vid"))
        unseen = (hashed_id(F.col("_tok"), f.oov_buckets, hash_seed) + (f.first_oov_bucket - FIRST_VALUE_ID)
                  if f.oov_buckets else F.lit(OOV_ID))
        frame = (
            frame.withColumn("_tok", tok)
            .join(lookup, (F.col("_vf") == F.lit(f.name)) & (F.col("_vt") == F.col("_tok")), "left")
            .withColumn(
                f.name,
                F.when(F.col("_tok").isNull(), MISSING_ID).otherwise(F.coalesce("_vid", unseen)).cast("int"),
            )
            .drop("_tok", "_vf", "_vt", "_vid")
        )
    return frame


def fingerprint(vocabulary: DataFrame, fields: list[FeatureField]) -> str:
    """A content hash of the vocabulary (order-independent), plus each field's size and hashing."""
    per_field = {
        row[FIELD]: [row["n"], row["h1"], row["h2"]]
        for row in vocabulary.groupBy(FIELD)
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum(F.pmod(F.xxhash64(FIELD, TOKEN, ID), F.lit(1_000_000_007))).alias("h1"),
            F.sum(F.pmod(F.hash(FIELD, TOKEN, ID).cast("long"), F.lit(998_244_353))).alias("h2"),
        )
        .collect()
    }
    layout = {f.name: [f.vocab_size, f.hash_buckets, per_field.get(f.name)] + ([f.oov_buckets] if f.oov_buckets else [])
              for f in fields}
    return hashlib.sha256(json.dumps(layout, sort_keys=True).encode()).hexdigest()
