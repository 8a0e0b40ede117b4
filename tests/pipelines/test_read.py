import gzip

import pytest
from pyspark.sql import functions as F

from deepfm.config import TableSpec
from pipelines import quarantine
from pipelines.read import REASON, InputError, accepted, read_table, rejected
from tests.conftest import CRITEO_COLUMNS, CRITEO_SAMPLE, OBD_DIR

GOOD = CRITEO_SAMPLE.read_bytes().splitlines()[:50]


def _spec(path, fmt="tsv", columns=CRITEO_COLUMNS, **kw):
    return TableSpec.model_validate({"path": str(path), "format": fmt, "columns": columns, **kw})


def _reasons(spark, path, **kw):
    parsed = read_table(spark, _spec(path, **kw))
    return {r["_raw"]: r[REASON] for r in rejected(parsed).collect()}, parsed


def test_criteo_sample_parses_without_rejects(spark):
    parsed = read_table(spark, _spec(CRITEO_SAMPLE))
    assert parsed.count() == 10_000
    assert rejected(parsed).count() == 0
    good = accepted(parsed)
    # 2,182 clicks in the sample (shared/data/README.md); empty fields are missing, not zero
    assert good.where(F.col("label") == 1).count() == 2182
    first = good.where(F.col("C26").isNull()).count()
    assert 0 < first < 10_000
    assert dict(good.dtypes)["I1"] == "bigint"


def test_malformed_rows_are_quarantined_with_reasons(spark, tmp_path):
    fields = GOOD[0].split(b"\t")
    bad = {
        b"": "empty line",
        b"\t".join(fields[:-1]): "expected 40 fields, found 39",
        b"\t".join([b"1", b"abc", *fields[2:]]): "I1: not an integer: 'abc'",
        b"\t".join([b"1", b"2.5", *fields[2:]]): "I1: not an integer: '2.5'",
        b"\t".join([b"7", *fields[1:]]): "label: label must be 0 or 1, got '7'",
        b"\t".join([b"", *fields[1:]]): "label: missing label",
        b"\t".join([*fields[:20], b"\xff\xfe", *fields[21:]]): "invalid UTF-8",
    }
    path = tmp_path / "logs.tsv"
    path.write_bytes(b"\n".join(GOOD + list(bad)) + b"\n")
    reasons, parsed = _reasons(spark, path)
    assert parsed.count() == len(GOOD) + len(bad)
    assert accepted(parsed).count() == len(GOOD)
    assert sorted(reasons.values()) == sorted(bad.values())
    # the raw line is kept for every quarantined row (undecodable bytes shown as U+FFFD)
    assert any(raw.startswith("1\tabc\t") for raw in reasons)
    assert any("\ufffd" in raw for raw in reasons)


def test_negative_ints_and_missing_values_are_accepted(spark, tmp_path):
    fields = GOOD[0].split(b"\t")
    line = b"\t".join([b"0", b"-3", b"", *fields[3:]])
    path = tmp_path / "neg.tsv"
    path.write_bytes(line + b"\n")
    row = accepted(read_table(spark, _spec(path))).first()
    assert row["I1"] == -3 and row["I2"] is None


def test_gzip_input_is_read(spark, tmp_path):
    path = tmp_path / "logs.tsv.gz"
    with gzip.open(path, "wb") as out:
        out.write(b"\n".join(GOOD) + b"\n")
    assert accepted(read_table(spark, _spec(path))).count() == len(GOOD)


def test_csv_with_header_maps_columns_by_name(spark):
    columns = [
        {"name": "timestamp", "role": "timestamp"},
        {"name": "click", "role": "label"},
        {"name": "item_id", "role": "categorical"},
        {"names": ["user-item_affinity_{0..2}"], "role": "numeric", "dtype": "float"},
    ]
    parsed = read_table(spark, _spec(OBD_DIR / "impressions.csv", "csv", columns, header=True))
    assert parsed.count() == 10_000 and rejected(parsed).count() == 0
    row = accepted(parsed).orderBy("timestamp").first()
    assert str(row["timestamp"]).startswith("2019-11-24 00:00:34")
    assert row["item_id"] == "14"


def test_unparseable_timestamp_and_non_finite_float(spark, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("ts,y,x\n2024-01-01 10:00:00,1,0.5\nyesterday,0,0.5\n2024-01-01 10:00:00,0,NaN\n")
    columns = [
        {"name": "ts", "role": "timestamp"},
        {"name": "y", "role": "label"},
        {"name": "x", "role": "numeric", "dtype": "float"},
    ]
    reasons, parsed = _reasons(spark, path, fmt="csv", columns=columns, header=True)
    assert accepted(parsed).count() == 1
    assert sorted(reasons.values()) == ["ts: unparseable timestamp: 'yesterday'", "x: not a finite number: 'NaN'"]


def test_parquet_input(spark, tmp_path):
    frame = spark.createDataFrame([(1, "a", 3.0), (0, "b", None), (5, "c", 1.0)], "y int, c string, x double")
    frame.write.parquet(str(tmp_path / "in"))
    columns = [{"name": "y", "role": "label"}, {"name": "c", "role": "categorical"},
               {"name": "x", "role": "numeric"}]
    reasons, parsed = _reasons(spark, tmp_path / "in", fmt="parquet", columns=columns)
    assert accepted(parsed).count() == 2
    assert list(reasons.values()) == ["y: label must be 0 or 1, got '5'"]
    assert '"c":"c"' in next(iter(reasons))  # the row, as JSON, stands in for the raw line


def test_missing_or_empty_input_names_the_path(spark, tmp_path):
    with pytest.raises(InputError, match="no input files at .*nothing-here"):
        read_table(spark, _spec(tmp_path / "nothing-here"))
    empty = tmp_path / "empty.tsv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_table(spark, _spec(empty))


def test_header_without_configured_column_fails(spark):
    columns = [{"name": "click", "role": "label"}, {"name": "no_such_col", "role": "categorical"}]
    with pytest.raises(InputError, match="no_such_col"):
        read_table(spark, _spec(OBD_DIR / "impressions.csv", "csv", columns, header=True))


def test_numbers_follow_one_rule_for_ints_and_floats(spark, tmp_path):
    """The full 64-bit range is accepted; padding, Java suffixes and words are rejected, for both types."""
    rows = {
        "9223372036854775807,1,-0.5": None, "-9223372036854775808,1,1e3": None, "+7,1,.5": None, "0,1,+2.": None,
        "9223372036854775808,1,1": "n: integer out of the 64-bit range: '9223372036854775808'",
        " 5,1,1": "n: not an integer: ' 5'",
        "5,1, 3": "x: not a finite number: ' 3'",
        "5,1,1d": "x: not a finite number: '1d'",
        "5,1,3f": "x: not a finite number: '3f'",
        "5,1,Infinity": "x: not a finite number: 'Infinity'",
        "5,1,1e999": "x: not a finite number: '1e999'",
    }
    path = tmp_path / "numbers.csv"
    path.write_text("n,y,x\n" + "\n".join(rows) + "\n")
    columns = [{"name": "n", "role": "numeric", "dtype": "int"}, {"name": "y", "role": "label"},
               {"name": "x", "role": "numeric", "dtype": "float"}]
    reasons, parsed = _reasons(spark, path, fmt="csv", columns=columns, header=True)
    assert reasons == {raw: reason for raw, reason in rows.items() if reason}
    values = {r["n"] for r in accepted(parsed).collect()}
    assert values == {9223372036854775807, -9223372036854775808, 7, 0}


def test_a_truncated_gzip_input_is_named(spark, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    with gzip.open(inputs / "whole.tsv.gz", "wb") as f:
        f.write(b"\n".join(GOOD) + b"\n")
    truncated = inputs / "truncated.tsv.gz"
    truncated.write_bytes((inputs / "whole.tsv.gz").read_bytes()[:-40])
    with pytest.raises(InputError, match=f"{truncated} is a truncated or corrupt gzip file"):
        quarantine.stage(read_table(spark, _spec(inputs)), str(tmp_path / "staged"), str(inputs))
