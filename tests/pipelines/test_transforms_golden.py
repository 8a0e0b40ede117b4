"""Golden encodings: fails when what a raw value encodes to changes without a TRANSFORMS_VERSION bump.

A model is applied only to inputs encoded by the transforms version it was trained with (train,
score, evaluate and export check it), so a change of encoding must come with a new version.
After a deliberate change: bump TRANSFORMS_VERSION in deepfm/features/feature_map.py, then regenerate with
`python -m tests.pipelines.test_transforms_golden --update`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
from pyspark.sql import functions as F

from deepfm.features.encode import FeatureEncoder
from deepfm.features.feature_map import TRANSFORMS_VERSION
from deepfm.features.transforms import TRANSFORMS
from deepfm.storage.location import Location
from pipelines import features
from tests.pipelines.test_features import ROWS, SCHEMA, _config, _fit

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "transforms.json"

# Every kind of field at the values where encodings differ: log-bucket edges (2, 3, 4, e^k),
# negatives, zero, huge counts, values beyond the clip, unseen and missing values.
PROBE = [
    (label, colour, size, clicks, price)
    for label, (colour, size), clicks, price in zip(
        [0, 1] * 9,
        [("red", "s"), ("blue", "m"), ("purple", "l"), (None, None), ("amber", "xl"), ("green", "s")] * 3,
        [0, 1, 2, 3, 4, 5, 7, 8, 20, 21, 55, 1000, 10**12, -1, -5, None, 2, 3],
        [0.0, 0.5, 1.0, 10.0, 44.9, 45.0, 46.0, 1e9, -3.0, None, 20.0, 30.0, 40.0, 50.0, 60.0, 7.25, 0.001, 2.0],
        strict=True)
]


def encodings(spark) -> list[dict]:
    """The fitted vocabulary (raw value -> token -> id) and the encoded probe rows."""
    fmap, vocabulary = _fit(spark, _config())
    probe = spark.createDataFrame(PROBE, SCHEMA)
    rows = features.apply_feature_map(probe, fmap, vocabulary, broadcast_max_entries=10).collect()
    encoded = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.asDict().items()} for r in rows]
    entries = [{"vocabulary": r.asDict()} for r in vocabulary.orderBy("field", "id").collect()]
    bucket = TRANSFORMS["log_bucketize"].spark(F.col("clicks")).alias("bucket")
    buckets = probe.select("clicks", bucket).distinct().collect()
    in_order = sorted(buckets, key=lambda r: (r["clicks"] is None, r["clicks"] or 0))
    entries += [{"log_bucket": r.asDict()} for r in in_order]
    return entries + sorted(encoded, key=lambda row: json.dumps(row, sort_keys=True))  # Spark keeps no row order


def test_encodings_match_the_golden_file_of_this_transforms_version(spark):
    golden = json.loads(GOLDEN.read_text())
    assert golden["transforms_version"] == TRANSFORMS_VERSION, (
        f"TRANSFORMS_VERSION is {TRANSFORMS_VERSION}, the golden file was made for {golden['transforms_version']}: "
        "regenerate it (see this module's docstring)")
    assert golden["fit_rows"] == [list(r) for r in ROWS]
    assert encodings(spark) == golden["rows"], (
        "an encoding changed: bump TRANSFORMS_VERSION in deepfm/features/feature_map.py and regenerate the golden file")


def test_the_arrow_encoder_matches_the_golden_file_too(spark):
    """deepfm/features/encode.py (MLflow model, no Spark) encodes exactly as the Spark transforms do."""
    fmap, vocabulary = _fit(spark, _config())
    names = SCHEMA_NAMES
    probe = pa.table({name: [row[i] for row in PROBE] for i, name in enumerate(names)})
    encoded = FeatureEncoder(fmap, pa.Table.from_pandas(vocabulary.toPandas(), preserve_index=False)).encode(probe)
    label = probe.column("label").to_pylist()
    rows = [{**{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}, "label": float(y)}
            for row, y in zip(encoded.to_pylist(), label, strict=True)]
    golden = [row for row in json.loads(GOLDEN.read_text())["rows"] if "label" in row]
    assert sorted(rows, key=lambda row: json.dumps(row, sort_keys=True)) == golden


def test_the_arrow_encoding_in_spark_matches_the_golden_file_too(spark, tmp_path):
    """The path preprocess and score take: the vocabulary broadcast, mapInArrow over the encoder."""
    fmap, vocabulary = _fit(spark, _config())
    vocabulary.toPandas().to_parquet(tmp_path / "vocabulary.parquet")
    shipped = features.broadcast_vocabulary(spark, Location.of(tmp_path / "vocabulary.parquet"), 10)
    probe = spark.createDataFrame(PROBE, SCHEMA)
    rows = features.apply_feature_map_in_arrow(probe, fmap, shipped).collect()
    encoded = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.asDict().items()} for r in rows]
    golden = [row for row in json.loads(GOLDEN.read_text())["rows"] if "label" in row]
    assert sorted(encoded, key=lambda row: json.dumps(row, sort_keys=True)) == golden


SCHEMA_NAMES = [part.split()[0] for part in SCHEMA.split(",")]


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    lines = ",\n  ".join(json.dumps(row, sort_keys=True) for row in encodings(session))
    fit_rows = json.dumps([list(r) for r in ROWS])
    GOLDEN.write_text(f'{{"transforms_version": {TRANSFORMS_VERSION},\n "fit_rows": {fit_rows},\n'
                      f' "rows": [\n  {lines}\n ]\n}}\n')
    session.stop()
    print(f"wrote {GOLDEN}")
