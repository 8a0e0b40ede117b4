"""End-to-end runs of the preprocess job on real files, with a real SparkSession."""

import csv
import json
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from deepfm.config import GenerateConfig
from pipelines.features import Engines
from pipelines.generate import generate
from pipelines.preprocess import run_preprocess
from pipelines.quarantine import RejectRateError
from pipelines.read import InputError
from tests.conftest import CRITEO_SAMPLE, OBD_DIR, REPO_ROOT, criteo_dataset, make_config

SPLITS = ("train", "valid", "test")


def _table(path: Path):
    files = sorted(str(p) for p in path.glob("*.parquet"))
    return pq.ParquetDataset(files).read() if files else None


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.fixture(scope="module")
def criteo_run(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("criteo") / "shards"
    cfg = make_config(criteo_dataset(), str(out), vocab={"min_count": 2},
                      shards={"rows_per_row_group": 1000, "rows_per_file": 4000})
    return out, run_preprocess(spark, cfg), cfg


def test_criteo_sample_end_to_end(criteo_run):
    out, result, _ = criteo_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert (out / "_SUCCESS").exists() and not result.skipped
    rows = manifest["rows"]
    assert (rows["input"], rows["accepted"], rows["rejected"]) == (10_000, 10_000, 0)
    split_rows = {s: rows["splits"][s]["rows"] for s in SPLITS}
    assert sum(split_rows.values()) == 10_000
    assert 7_700 < split_rows["train"] < 8_300 and 800 < split_rows["valid"] < 1_200
    clicks = sum(rows["splits"][s]["rows"] * rows["splits"][s]["label_rate"] for s in SPLITS)
    assert round(clicks) == 2182  # shared/data/README.md
    assert manifest["field_order"] == [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    assert manifest["inputs"]["input"]["bytes"] == CRITEO_SAMPLE.stat().st_size
    for key in ("config_hash", "code_version"):
        assert manifest[key]


def test_shards_are_typed_and_ids_within_vocabulary(criteo_run):
    out, result, _ = criteo_run
    manifest = result.manifest
    total = 0
    for split in SPLITS:
        table = _table(out / split)
        total += table.num_rows
        assert table.num_rows == manifest.rows.splits[split].rows
        assert str(table.schema.field("label").type) == "float"
        for name, size in manifest.vocab_sizes.items():
            column = table.column(name)
            assert str(column.type) == "int32"
            assert column.to_numpy().min() >= 0 and column.to_numpy().max() < size
    assert total == 10_000
    vocabulary = pq.read_table(out / "vocab" / "vocabulary.parquet").to_pandas()
    for name, size in manifest.vocab_sizes.items():
        assert (vocabulary.field == name).sum() + 2 == size
    assert vocabulary["count"].min() >= 2  # min_count
    summary = json.loads((out / "vocab_summary.json").read_text())
    assert summary["C1"]["size"] == manifest.vocab_sizes["C1"]


def test_shard_files_and_row_groups_follow_config(criteo_run):
    out, result, _ = criteo_run
    train = sorted((out / "train").glob("*.parquet"))
    assert 2 <= len(train) <= 4  # ~8k rows at 4k rows a file
    for path in train:
        meta = pq.ParquetFile(path).metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert max(sizes) <= 1_100, sizes  # ~1000 rows per row group


def test_encoding_matches_vocabulary_for_a_known_row(criteo_run, spark):
    """Follow one raw line through: its C1 token must map to the id the vocabulary gives it."""
    out, _, _ = criteo_run
    vocabulary = pq.read_table(out / "vocab" / "vocabulary.parquet").to_pandas()
    c1 = vocabulary[vocabulary.field == "C1"].set_index("token")["id"]
    raw = [line.split("\t") for line in CRITEO_SAMPLE.read_text().splitlines()]
    expected = sorted(int(c1.get(r[14], 1)) if r[14] else 0 for r in raw)
    got = sorted(int(v) for s in SPLITS for v in _table(out / s).column("C1").to_pylist())
    assert got == expected


def test_rerun_is_skipped_then_forced_rerun_is_identical(criteo_run, spark, tmp_path):
    out, first, cfg = criteo_run
    again = run_preprocess(spark, cfg)
    assert again.skipped
    copy_out = tmp_path / "second"
    second = run_preprocess(spark, cfg.model_copy(update={"preprocess": cfg.preprocess.model_copy(
        update={"output": str(copy_out)})}), force=True)
    assert not second.skipped
    assert (out / "vocab/vocabulary.parquet").read_bytes() == (copy_out / "vocab/vocabulary.parquet").read_bytes()
    for split in SPLITS:
        assert _table(out / split).equals(_table(copy_out / split))  # same rows, same order
    assert first.manifest.vocab.fingerprint == second.manifest.vocab.fingerprint


@pytest.mark.parametrize("step", ["encode", "parse"])
@pytest.mark.parametrize("dataset", ["criteo", pytest.param("obd", marks=pytest.mark.slow)])
def test_spark_sql_encoding_or_parsing_writes_the_same_shards_as_arrow(criteo_run, spark, tmp_path, dataset, step):
    if dataset == "criteo":
        arrow_out, _, cfg = criteo_run
    else:  # side tables, a time split, dense fields
        arrow_out, cfg = tmp_path / "arrow", make_config(_obd_dataset(), str(tmp_path / "arrow"))
        run_preprocess(spark, cfg)
    sql = cfg.model_copy(update={"preprocess": cfg.preprocess.model_copy(update={"output": str(tmp_path / "sql")})})
    run_preprocess(spark, sql, engines=Engines(**{step: "spark"}))
    for split in SPLITS:
        arrow, spark_sql = _table(arrow_out / split), _table(tmp_path / "sql" / split)
        assert arrow.column_names == spark_sql.column_names and arrow.num_rows == spark_sql.num_rows > 0
        for name in arrow.column_names:
            assert arrow.column(name).type == spark_sql.column(name).type, name
            assert arrow.column(name).to_pylist() == spark_sql.column(name).to_pylist(), name


def _with_bad_lines(tmp_path: Path, bad: int) -> Path:
    lines = CRITEO_SAMPLE.read_bytes().splitlines()
    broken = [b"1\tnot-a-number" + b"\t" * 38] * (bad // 2) + [b"0\t1\t2"] * (bad - bad // 2)
    path = tmp_path / "logs.tsv"
    path.write_bytes(b"\n".join(lines + broken) + b"\n")
    return path


def test_rejects_are_counted_and_kept(spark, tmp_path):
    out = tmp_path / "out"
    cfg = make_config(criteo_dataset(_with_bad_lines(tmp_path, 40)), str(out))
    manifest = run_preprocess(spark, cfg).manifest
    rows = manifest.rows
    assert (rows.input, rows.accepted, rows.rejected) == (10_040, 10_000, 40)
    assert rows.rejected_by_reason == {"I1: not an integer": 20, "expected 40 fields, found 3": 20}
    rejects = _table(out / "rejects").to_pandas()
    assert len(rejects) == 40 and set(rejects.table) == {"input"}
    assert (rejects.raw == "0\t1\t2").sum() == 20
    assert rejects.source.str.endswith("logs.tsv").all()


def test_reject_rate_above_threshold_fails_and_leaves_previous_output(spark, tmp_path):
    out = tmp_path / "out"
    path = _with_bad_lines(tmp_path, 40)
    run_preprocess(spark, make_config(criteo_dataset(path), str(out)))
    before = (out / "manifest.json").read_bytes()
    failing = make_config(criteo_dataset(path), str(out), max_reject_rate=0.001)
    with pytest.raises(RejectRateError, match="40 of 10040 rows rejected .*max_reject_rate=0.001"):
        run_preprocess(spark, failing, force=True)
    assert (out / "manifest.json").read_bytes() == before  # the committed output is untouched
    assert _leftovers(out) == []  # and the failed attempt left nothing behind


def test_failure_mid_job_leaves_no_output(spark, tmp_path):
    """A side table with a repeated key fails after parsing: nothing may be left half-written."""
    items = tmp_path / "items.csv"
    items.write_text("item_id,colour\n1,red\n1,blue\n")
    dataset = _obd_dataset()
    dataset["side_tables"][0]["table"] = {"path": str(items), "format": "csv", "header": True, "columns": [
        {"name": "item_id", "role": "id"}, {"name": "colour", "role": "categorical"}]}
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="repeated values of 'item_id'"):
        run_preprocess(spark, make_config(dataset, str(out)))
    assert not out.exists() and _leftovers(out) == []


def _obd_dataset():
    from deepfm.config import load_config

    cfg = load_config([REPO_ROOT / "conf/base.yaml", REPO_ROOT / "conf/datasets/obd.yaml"])
    dataset = cfg.dataset.model_dump(exclude_none=True)
    dataset["input"]["path"] = str(OBD_DIR / "impressions.csv")
    dataset["side_tables"][0]["table"]["path"] = str(OBD_DIR / "item_context.csv")
    return dataset


def test_obd_with_side_table_and_time_split(spark, tmp_path):
    out = tmp_path / "obd"
    manifest = run_preprocess(spark, make_config(_obd_dataset(), str(out))).manifest
    # Count the time split from the CSV itself, independently of Spark.
    with open(OBD_DIR / "impressions.csv") as f:
        stamps = [datetime.fromisoformat(r["timestamp"][:19]) for r in csv.DictReader(f)]
    expected = {
        "train": sum(t < datetime(2019, 11, 29) for t in stamps),
        "valid": sum(datetime(2019, 11, 29) <= t < datetime(2019, 11, 30) for t in stamps),
        "test": sum(t >= datetime(2019, 11, 30) for t in stamps),
    }
    assert {s: manifest.rows.splits[s].rows for s in SPLITS} == expected
    assert manifest.vocab_sizes["item_id"] == 80 + 2  # 80 items, all seen >= 5 times
    assert manifest.vocab_sizes["item_feature_1"] > 2  # side-table attributes arrived
    train = _table(out / "train")
    assert "item_feature_0" in train.column_names and "propensity_score" in train.column_names
    assert str(train.schema.field("user-item_affinity_0").type) == "float"
    assert (train.column("item_feature_1").to_numpy() >= 2).all()  # every item has attributes


def test_generated_impressions_clicks_and_items_join_back(spark, tmp_path):
    raw = tmp_path / "raw"
    summary = generate(GenerateConfig(output=str(raw), rows=20_000, rows_per_file=10_000, mode="joined", seed=3))
    from deepfm.config import load_config

    cfg = load_config([REPO_ROOT / "conf/base.yaml", REPO_ROOT / "conf/datasets/synthetic_joined.yaml"])
    dataset = cfg.dataset.model_dump(exclude_none=True)
    dataset["input"]["path"] = str(raw / "impressions")
    dataset["clicks"]["table"]["path"] = str(raw / "clicks")
    dataset["side_tables"][0]["table"]["path"] = str(raw / "items")
    manifest = run_preprocess(spark, make_config(dataset, str(tmp_path / "out"))).manifest
    rows = manifest.rows
    assert rows.input == rows.accepted == 20_000
    clicks = sum(rows.splits[s].rows * rows.splits[s].label_rate for s in SPLITS)
    # The generator's own labels: late, duplicate and orphan clicks must not change them.
    assert round(clicks) == round(summary["label_rate"] * 20_000)
    assert rows.tables["clicks"].input > clicks  # duplicates, late and orphan clicks exist
    test = _table(tmp_path / "out" / "test")
    assert {"impression_id", "p_true", "item_category", "item_price"} <= set(test.column_names)


def test_header_only_input_fails_at_once_naming_it(spark, tmp_path):
    dataset = _obd_dataset()
    header_only = tmp_path / "impressions.csv"
    header_only.write_text((OBD_DIR / "impressions.csv").read_text().splitlines()[0] + "\n")
    dataset["input"]["path"] = str(header_only)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=f"{header_only}: no data rows .*empty or header-only"):
        run_preprocess(spark, make_config(dataset, str(out)))
    assert not out.exists() and _leftovers(out) == []


def test_time_split_that_misses_the_data_names_its_boundaries(spark, tmp_path):
    dataset = _obd_dataset()
    dataset["split"].update(train_end="2001-01-01", valid_end="2001-01-02")  # years before the first click
    out = tmp_path / "out"
    with pytest.raises(InputError, match="train and valid split.* are empty .*train_end=2001-01-01"):
        run_preprocess(spark, make_config(dataset, str(out)))
    assert not out.exists() and _leftovers(out) == []
