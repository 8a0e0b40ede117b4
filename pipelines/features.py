"""Fitting the feature map on training rows, and applying it to any rows (preprocess and score).

Row transforms (parsing text into typed columns, encoding typed columns into model inputs) run in
Arrow, in the Python workers (deepfm/features/parse.py, encode.py): the same code the MLflow model
and the scorer run. Spark SQL runs them only where Arrow cannot, for measured reasons:
- a vocabulary over preprocess.vocab.broadcast_max_entries is not held by every Python worker:
  Spark SQL encodes, shuffle-joining its large fields;
- Parquet input (Spark reads it typed) and timestamp columns (Spark's datetime parser) are parsed
  by Spark SQL (pipelines/read.py).
Arrow is the faster engine everywhere both apply (bench/RESULTS.md: encoding 1.23x in preprocess,
raw-log scoring 0.73 against 0.46 of in-process inference), so it is not a setting. `Engines` forces
Spark SQL for the tests and benchmarks that hold the two engines to the same rows, values and reasons.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import pyarrow.parquet as pq
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from deepfm.config import Column, DatasetConfig, PreprocessConfig
from deepfm.features.encode import ArrowEncoding, vocabulary_to_bytes
from deepfm.features.feature_map import FIRST_VALUE_ID, FeatureField, FeatureMap
from deepfm.storage.location import Location
from pipelines import numeric, vocab

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Engines:
    """Which engine runs the row transforms where both could: Arrow, unless a test oracle asks."""

    parse: Literal["arrow", "spark"] = "arrow"
    encode: Literal["arrow", "spark"] = "arrow"


ARROW = Engines()


def declared_fields(dataset: DatasetConfig, pre: PreprocessConfig) -> list[FeatureField]:
    """Feature fields in model order, with options resolved but nothing fitted yet."""
    return [_declared(col, pre) for col in dataset.feature_columns]


def _declared(col: Column, pre: PreprocessConfig) -> FeatureField:
    if col.role == "numeric":
        transform = col.transform or pre.numeric_transform
        col = col.model_copy(update={"transform": transform})
    if col.is_dense_feature:
        return FeatureField(col.name, "dense", "numeric", transform=col.transform, clip=col.clip)
    return FeatureField(
        col.name,
        "categorical",
        col.role,
        transform=col.transform,
        clip=col.clip,
        hash_buckets=col.hash_buckets,
        min_count=col.min_count or pre.vocab.min_count,
        top_k=col.top_k or pre.vocab.top_k,
        # bucketized numbers have no tail worth hashing: their buckets are few
        oov_buckets=(pre.vocab.oov_buckets or None) if col.role == "categorical" and not col.hash_buckets else None,
    )


def fit_vocabulary(train: DataFrame, fields: list[FeatureField], hash_seed: int,
                   known: DataFrame | None = None) -> DataFrame:
    """The (field, token, id, count) table for the fields that are not hashed; `known` (field, token):
    values kept when seen at all (preprocess.vocab.keep_values_of)."""
    looked_up = [f for f in fields if f.kind == "categorical" and not f.hash_buckets]
    if not looked_up:
        return train.sparkSession.createDataFrame([], vocab.VOCAB_SCHEMA)
    return vocab.build_vocabulary(vocab.count_tokens(train, looked_up), looked_up, hash_seed, known)


def fitted_fields(
    train: DataFrame, fields: list[FeatureField], vocabulary: DataFrame
) -> list[FeatureField]:
    """Fill in vocabulary sizes (from the saved table) and dense statistics (from train)."""
    sizes = {
        row[vocab.FIELD]: row["entries"]
        for row in vocabulary.where(F.col(vocab.TOKEN).isNotNull())  # a tail bucket's row has no token
        .groupBy(vocab.FIELD).agg(F.count(F.lit(1)).alias("entries")).collect()
    }
    stats = numeric.fit_dense_stats(train, [f for f in fields if f.kind == "dense"])
    out = []
    for f in fields:
        if f.kind == "categorical":
            entries = f.hash_buckets if f.hash_buckets else sizes.get(f.name, 0) + (f.oov_buckets or 0)
            out.append(replace(f, vocab_size=FIRST_VALUE_ID + entries))
        elif f.name in stats:
            mean, std = stats[f.name]
            out.append(replace(f, mean=mean, std=std))
        else:
            out.append(f)
    return out


def broadcast_vocabulary(spark: SparkSession, path: Location, broadcast_max_entries: int) -> Broadcast | None:
    """The vocabulary as Arrow IPC bytes in a broadcast, for `apply_feature_map_in_arrow`; None when
    it has more entries than every Python worker should hold (then Spark SQL encodes, with
    shuffle joins for the large fields)."""
    with path.open() as f:
        parquet = pq.ParquetFile(f)
        rows = parquet.metadata.num_rows
        if rows > broadcast_max_entries:
            log.info("the vocabulary has %d entries, over preprocess.vocab.broadcast_max_entries (%d): encoding "
                     "in Spark SQL", rows, broadcast_max_entries)
            return None
        return spark.sparkContext.broadcast(vocabulary_to_bytes(parquet.read()))


def apply_feature_map_in_arrow(frame: DataFrame, fmap: FeatureMap, vocabulary: Broadcast,
                               keep: tuple[str, ...] = ()) -> DataFrame:
    """What `apply_feature_map` outputs, encoded by deepfm/features/encode.py in the Python workers with
    `vocabulary` (from `broadcast_vocabulary`) instead of one join per field."""
    has_label = fmap.label in frame.columns
    fields = [T.StructField(fmap.label, T.FloatType())] if has_label else []
    fields += [T.StructField(f.name, T.IntegerType() if f.kind == "categorical" else T.FloatType(), False)
               for f in fmap.fields]
    fields += [frame.schema[name] for name in keep if name != fmap.label]
    columns = list(dict.fromkeys([*([fmap.label] if has_label else []), *(f.name for f in fmap.fields), *keep]))
    encoding = ArrowEncoding(fmap.to_dict(), lambda: vocabulary.value, keep)
    return frame.select(*[F.col(f"`{c}`") for c in columns]).mapInArrow(encoding, T.StructType(fields))


def apply_feature_map(
    frame: DataFrame,
    fmap: FeatureMap,
    vocabulary: DataFrame,
    broadcast_max_entries: int,
    keep: tuple[str, ...] = (),
) -> DataFrame:
    """Model inputs: label (float32, when present), int32 ids, float32 dense values, then `keep`.

    Unseen values map to the OOV id and missing ones to the missing id, exactly as in training.
    """
    categorical = list(fmap.categorical)
    encoded = vocab.encode(frame, categorical, vocabulary, fmap.hash_seed, broadcast_max_entries)
    outputs = []
    if fmap.label in frame.columns:
        outputs.append(F.col(f"`{fmap.label}`").cast("float").alias(fmap.label))
    for f in fmap.fields:
        if f.kind == "categorical":
            outputs.append(F.col(f"`{f.name}`"))
        else:
            outputs.append(numeric.dense_value(F.col(f"`{f.name}`"), f).alias(f.name))
    outputs += [F.col(f"`{name}`") for name in keep if name in frame.columns and name != fmap.label]
    return encoded.select(*outputs)
