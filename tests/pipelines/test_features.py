import math

import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from deepfm.config import Config
from deepfm.features.encode import FeatureEncoder
from deepfm.features.feature_map import FeatureMap
from deepfm.features.spark_hash import seed_of, xxhash64
from deepfm.features.transforms import TRANSFORMS
from pipelines import features, vocab

ROWS = [
    # label, colour, size, clicks (count), price
    (1, "red", "s", 0, 10.0),
    (0, "red", "m", 1, 20.0),
    (0, "red", "m", 2, 30.0),
    (1, "blue", "l", 3, None),
    (0, "blue", "s", 100, 40.0),
    (0, "green", None, None, 50.0),
    (1, "amber", "s", -5, 60.0),
]
SCHEMA = "label int, colour string, size string, clicks long, price double"


def _config(**vocab_overrides):
    return Config.model_validate({
        "dataset": {
            "name": "toy",
            "input": {"path": "unused", "columns": [
                {"name": "label", "role": "label"},
                {"name": "colour", "role": "categorical", **vocab_overrides},
                {"name": "size", "role": "categorical", "hash_buckets": 5},
                {"name": "clicks", "role": "numeric", "dtype": "int", "transform": "log_bucketize"},
                {"name": "price", "role": "numeric", "transform": "log1p_standardize", "clip": [0, 45]},
            ]},
        },
        "preprocess": {"output": "unused", "vocab": {"min_count": 1}},
    })


def _fit(spark, cfg):
    train = spark.createDataFrame(ROWS, SCHEMA)
    declared = features.declared_fields(cfg.dataset, cfg.preprocess)
    vocabulary = features.fit_vocabulary(train, declared, hash_seed=0).cache()
    fields = features.fitted_fields(train, declared, vocabulary)
    fmap = FeatureMap(label="label", fields=tuple(fields), hash_seed=0)
    return fmap, vocabulary


def test_ids_follow_count_then_value_with_reserved_missing_and_oov(spark):
    fmap, vocabulary = _fit(spark, _config())
    colour = {r["token"]: r["id"] for r in vocabulary.where("field = 'colour'").collect()}
    # red x3, blue x2, then amber and green once each (ties broken by value); 0/1 reserved
    assert colour == {"red": 2, "blue": 3, "amber": 4, "green": 5}
    assert fmap.vocab_sizes["colour"] == 6
    scored = spark.createDataFrame([(0, "blue", "s", 1, 1.0), (0, "purple", None, None, None),
                                    (0, None, "m", 3, 1.0)], SCHEMA)
    out = features.apply_feature_map(scored, fmap, vocabulary, broadcast_max_entries=10).collect()
    assert [r["colour"] for r in out] == [3, 1, 0]  # seen, unseen -> OOV, missing


def test_min_count_and_top_k(spark):
    fmap, vocabulary = _fit(spark, _config(min_count=2))
    assert {r["token"] for r in vocabulary.where("field = 'colour'").collect()} == {"red", "blue"}
    fmap, vocabulary = _fit(spark, _config(top_k=1))
    assert {r["token"] for r in vocabulary.where("field = 'colour'").collect()} == {"red"}
    assert fmap.vocab_sizes["colour"] == 3


def test_a_field_with_no_value_kept_encodes_alike_in_spark_sql_and_arrow(spark):
    fmap, vocabulary = _fit(spark, _config(min_count=10))  # no colour is that frequent
    assert vocabulary.where("field = 'colour'").count() == 0 and fmap.vocab_sizes["colour"] == 2
    probe = spark.createDataFrame([(0, "red", "s", 1, 1.0), (1, None, "s", 1, 1.0)], SCHEMA)
    by_spark = [r["colour"] for r in features.apply_feature_map(probe, fmap, vocabulary, 10).orderBy("label").collect()]
    table = pa.table({name: [row[i] for row in probe.collect()] for i, name in enumerate(probe.columns)})
    by_arrow = FeatureEncoder(fmap, pa.Table.from_pandas(vocabulary.toPandas(), preserve_index=False)
                              ).encode(table).column("colour").to_pylist()
    assert by_spark == by_arrow == [1, 0]  # OOV, missing


def test_shuffle_join_path_gives_the_same_ids(spark):
    fmap, vocabulary = _fit(spark, _config())
    frame = spark.createDataFrame(ROWS, SCHEMA)
    broadcast = features.apply_feature_map(frame, fmap, vocabulary, broadcast_max_entries=10**6)
    shuffled = features.apply_feature_map(frame, fmap, vocabulary, broadcast_max_entries=0)
    assert sorted(broadcast.collect()) == sorted(shuffled.collect())


def test_hashed_field(spark):
    fmap, _ = _fit(spark, _config())
    size = next(f for f in fmap.fields if f.name == "size")
    assert size.vocab_size == 2 + 5
    frame = spark.createDataFrame(ROWS, SCHEMA)
    ids = [r["size"] for r in features.apply_feature_map(frame, fmap, _fit(spark, _config())[1], 10).collect()]
    assert ids[5] == 0  # missing
    assert all(2 <= i < 7 for i in ids[:5])
    assert ids[1] == ids[2]  # the same value always hashes to the same bucket


def test_arrow_xxhash64_equals_spark_sqls_on_every_length_and_encoding(spark):
    """Each branch of XXH64: 32-byte stripes, 8-byte lanes, a 4-byte word, single bytes; multi-byte
    UTF-8; empty and null values; and the seed literal hashed first, as pipelines/vocab.py does."""
    rng = np.random.default_rng(0)
    alphabet = list("abcdef0123456789 ") + ["é", "中", "😀"]
    values = ["".join(rng.choice(alphabet, int(length))) for length in [*range(0, 70), *rng.integers(70, 300, 30)]]
    values += ["", None, "x" * 32, "x" * 64, "11f5c3ab"]
    frame = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "i int, v string")
    for seed in (0, 7, -3):
        by_spark = [r[0] for r in frame.orderBy("i").select(F.xxhash64(F.lit(seed), "v")).collect()]
        by_arrow = xxhash64(pa.array(values, pa.string()), seed_of(seed))
        nulls = [v is None for v in values]
        assert [h for h, null in zip(by_spark, nulls, strict=True) if not null] == \
            [int(h) for h, null in zip(by_arrow, nulls, strict=True) if not null]


def test_tail_values_share_oov_buckets_alike_in_spark_sql_and_arrow(spark):
    plain = _config().model_dump(mode="json")
    plain["preprocess"]["vocab"].update(min_count=2, oov_buckets=3)
    fmap, vocabulary = _fit(spark, Config.model_validate(plain))
    colour = next(f for f in fmap.fields if f.name == "colour")
    assert (colour.vocab_size, colour.first_oov_bucket) == (2 + 2 + 3, 4)  # red and blue kept, then 3 buckets
    rows = vocabulary.where("field = 'colour'").collect()
    assert {r["token"]: r["id"] for r in rows if r["token"]} == {"red": 2, "blue": 3}
    bucket_counts = {r["id"]: r["count"] for r in rows if r["token"] is None}
    assert set(bucket_counts) <= {4, 5, 6} and sum(bucket_counts.values()) == 2  # amber and green, once each

    values = ["red", "amber", "green", "purple", "mauve", "teal", None, "blue"]
    probe = spark.createDataFrame([(i, v, "s", 1, 1.0) for i, v in enumerate(values)], SCHEMA)
    by_join, by_shuffle = ([r["colour"] for r in features.apply_feature_map(probe, fmap, vocabulary, limit)
                            .orderBy("label").collect()] for limit in (10, 0))
    table = pa.table({name: [row[i] for row in probe.collect()] for i, name in enumerate(probe.columns)})
    by_arrow = FeatureEncoder(fmap, pa.Table.from_pandas(vocabulary.toPandas(), preserve_index=False)
                              ).encode(table).column("colour").to_pylist()
    assert by_join == by_shuffle == by_arrow
    assert by_join[0] == 2 and by_join[6] == 0 and by_join[7] == 3
    assert {by_join[1], by_join[2]} <= set(bucket_counts)  # the bucket that counted them in training
    assert all(4 <= i < 7 for i in by_join[1:6])  # never the shared OOV id


def test_log_bucketize_values(spark):
    values = [-5, 0, 1, 2, 3, 10, 100, 1000]
    frame = spark.createDataFrame([(v,) for v in values], "v long")
    got = [r[0] for r in frame.select(TRANSFORMS["log_bucketize"].spark(F.col("v"))).collect()]
    expected = [v if v <= 2 else 3 + math.floor(math.log(v) ** 2) for v in values]
    assert got == expected == [-5, 0, 1, 2, 4, 8, 24, 50]
    fmap, vocabulary = _fit(spark, _config())
    clicks = {r["token"] for r in vocabulary.where("field = 'clicks'").collect()}
    assert clicks == {"0", "1", "2", "4", "24", "-5"}  # 3 -> 4, its own bucket, not 1's; 100 -> 24


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_each_transform_computes_the_same_in_spark_and_numpy(spark, name):
    values = [None, -1e6, -5.0, -0.5, 0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 10.0, 1e6, 2.0**60]
    frame = spark.createDataFrame([(v,) for v in values], "v double")
    in_spark = [r[0] for r in frame.select(TRANSFORMS[name].spark(F.col("v"))).collect()]
    in_numpy = TRANSFORMS[name].numpy(np.array([np.nan if v is None else v for v in values]))
    assert in_spark[0] is None and np.isnan(in_numpy[0])  # missing stays missing
    np.testing.assert_allclose(np.array(in_spark[1:], dtype=float), in_numpy[1:], rtol=1e-12)


def test_log1p_standardize_uses_train_statistics_and_clip(spark):
    fmap, vocabulary = _fit(spark, _config())
    price = next(f for f in fmap.fields if f.name == "price")
    clipped = [min(max(p, 0), 45) for p in (10.0, 20.0, 30.0, 40.0, 50.0, 60.0)]
    logs = [math.log1p(p) for p in clipped]
    mean = sum(logs) / len(logs)
    std = math.sqrt(sum((x - mean) ** 2 for x in logs) / len(logs))
    assert price.mean == pytest.approx(mean) and price.std == pytest.approx(std)
    frame = spark.createDataFrame(ROWS, SCHEMA)
    out = [r["price"] for r in features.apply_feature_map(frame, fmap, vocabulary, 10).collect()]
    assert out[0] == pytest.approx((math.log1p(10) - mean) / std, rel=1e-5)
    assert out[3] == 0.0  # missing -> the training mean
    assert out[6] == pytest.approx((math.log1p(45) - mean) / std, rel=1e-5)  # 60 clipped to 45


def test_output_types(spark):
    fmap, vocabulary = _fit(spark, _config())
    frame = spark.createDataFrame(ROWS, SCHEMA)
    types = dict(features.apply_feature_map(frame, fmap, vocabulary, 10).dtypes)
    assert types == {"label": "float", "colour": "int", "size": "int", "clicks": "int", "price": "float"}


def test_vocabulary_fingerprint_changes_with_content(spark):
    fmap, vocabulary = _fit(spark, _config())
    same = vocab.fingerprint(vocabulary, list(fmap.fields))
    assert same == vocab.fingerprint(vocabulary, list(fmap.fields))
    changed = vocabulary.withColumn("id", F.when(F.col("token") == "red", 9).otherwise(F.col("id")))
    assert vocab.fingerprint(changed, list(fmap.fields)) != same


def test_standardized_statistics_stay_finite_with_values_near_the_float_limit(spark):
    """Six values of 1e300 among ordinary ones: Spark's stddev squares them into infinity, which
    would make every row's value 0. The statistics equal exact ones (statistics.pstdev works in
    fractions), and the manifest that holds them is strict JSON."""
    import json
    import statistics

    from deepfm import strict_json
    from deepfm.features.feature_map import FeatureField
    from pipelines.numeric import fit_dense_stats

    values = [float(v) for v in range(1, 995)] + [1e300] * 6
    train = spark.createDataFrame([(v, v / 1e300 if v > 1e10 else v) for v in values], "big double, small double")
    fields = [FeatureField("big", "dense", "numeric", "standardize"),
              FeatureField("small", "dense", "numeric", "standardize")]
    stats = fit_dense_stats(train, fields)
    assert stats["big"] == pytest.approx((statistics.fmean(values), statistics.pstdev(values)), rel=1e-9)
    assert math.isfinite(stats["big"][1]) and stats["big"][1] > 1e298
    small = [v / 1e300 if v > 1e10 else v for v in values]
    assert stats["small"] == pytest.approx((statistics.fmean(small), statistics.pstdev(small)), rel=1e-9)
    text = strict_json.dumps({"std": stats["big"][1], "undefined": math.nan, "rows": [math.inf, 1.5]})
    assert json.loads(text, parse_constant=lambda token: pytest.fail(f"non-JSON token {token}")) == {
        "std": stats["big"][1], "undefined": None, "rows": [None, 1.5]}
