"""The score job on a real SparkSession: a model trained on the Criteo sample scores raw logs.

The in-process reference reads the preprocess shards (which carry each row's id) with pyarrow and
runs the model directly, so the Spark job's transforms are checked against training's, row by row.
"""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from deepfm.config import Config, TrainConfig
from deepfm.features.feature_map import TransformsVersionError
from deepfm.features.preprocess_output import PreprocessOutput
from deepfm.training.launch import run_training
from deepfm.training.model_versions import ModelVersionError, open_model_version
from deepfm.training.precision import ALLOW_SLOW_BF16
from pipelines.features import ARROW, Engines
from pipelines.read import InputError
from pipelines.score import run_score
from tests.conftest import CLI, REPO_ROOT, run_cli
from tests.pipelines.conftest import COLUMNS, MISSING_ID_ROW, UNSEEN_ID, in_process_probabilities


def _score_cfg(trained, **score):
    return Config.model_validate({**trained["cfg"], "score": {
        "model": str(trained["root"] / "model"), "output": str(trained["root"] / "scores"),
        "input_path": str(trained["logs"]), "batch_rows": 1000, **score}})


def test_scores_raw_logs_into_a_dated_partition(spark, trained, scored):
    result, table = scored
    assert result.rows == 10_002 and result.rejected == 0
    assert table.column_names == ["row_id", "day", "label", "probability", "model_version", "model_digest",
                                  "scored_at"]
    assert table.schema.field("probability").type == pa.float32()
    model = open_model_version(trained["model"])
    assert set(table["model_version"].to_pylist()) == {Path(trained["model"]).name}
    assert set(table["model_digest"].to_pylist()) == {model.weights_digest}
    partition = Path(result.partition.removeprefix("file:"))
    assert partition.name == "run_date=2026-11-27" and (partition / "_SUCCESS").exists()
    as_table = spark.read.parquet(str(trained["root"] / "scores"))
    assert "run_date" in as_table.columns and as_table.count() == 10_002
    probs = table["probability"].to_numpy()
    assert np.isfinite(probs).all() and ((probs > 0) & (probs < 1)).all()


def test_spark_scores_equal_in_process_predictions_on_training_encodings(trained, scored):
    _, table = scored
    spark_scores = dict(zip(table["row_id"].to_pylist(), table["probability"].to_numpy(), strict=True))
    shards = pa.concat_tables(pq.read_table(trained["root"] / "prep" / split) for split in ("train", "valid", "test"))
    expected = in_process_probabilities(trained["model"], shards)
    got = np.array([spark_scores[i] for i in shards["row_id"].to_pylist()])
    assert len(got) == 10_000
    assert np.abs(got - expected).max() < 1e-5


@pytest.mark.parametrize("how", ["encode spark", "vocabulary over broadcast_max_entries", "parse spark"])
def test_spark_sql_encoding_scores_like_the_arrow_encoding(spark, trained, scored, tmp_path, how, caplog):
    _, arrow = scored
    cfg = _score_cfg(trained, output=str(tmp_path / "scores"))
    engines = Engines(**{how.split()[0]: "spark"}) if how.endswith("spark") else ARROW  # the test oracle
    if how.startswith("vocabulary"):  # the vocabulary is then too large to ship to every Python worker
        cfg = cfg.model_copy(update={"preprocess": cfg.preprocess.model_copy(update={
            "vocab": cfg.preprocess.vocab.model_copy(update={"broadcast_max_entries": 10})})})
    with caplog.at_level(logging.INFO):
        table = pq.read_table(Path(run_score(spark, cfg, "2026-11-27", engines).partition.removeprefix("file:")))
    assert "parsing and encoding in Arrow" not in caplog.text
    assert ("encoding in Arrow" in caplog.text) is (how == "parse spark")
    assert ("over preprocess.vocab.broadcast_max_entries" in caplog.text) is (how.startswith("vocabulary"))
    assert table.schema.remove(table.schema.get_field_index("scored_at")) == arrow.schema.remove(
        arrow.schema.get_field_index("scored_at"))
    by_row = dict(zip(arrow["row_id"].to_pylist(), arrow["probability"].to_numpy(), strict=True))
    got = table["probability"].to_numpy()
    assert len(got) == 10_002
    assert np.abs(got - np.array([by_row[i] for i in table["row_id"].to_pylist()])).max() < 1e-6


def test_a_bf16_model_is_scored_in_bf16_equal_to_in_process(spark, trained, tmp_path, monkeypatch):
    monkeypatch.setenv(ALLOW_SLOW_BF16, "1")  # the numerics are checked on any CPU
    model = Path(run_training(TrainConfig.model_validate({
        "data": str(trained["root"] / "prep"), "output": str(tmp_path / "model"), "epochs": 1, "batch_size": 256,
        "model": {"embedding_dim": 8, "hidden": [32, 16]}, "threads": 1, "precision": "bf16"})).model)
    result = run_score(spark, _score_cfg(trained, model=str(model), output=str(tmp_path / "scores")), "2026-11-27")
    table = pq.read_table(Path(result.partition.removeprefix("file:")))
    spark_scores = dict(zip(table["row_id"].to_pylist(), table["probability"].to_numpy(), strict=True))
    shards = pa.concat_tables(pq.read_table(trained["root"] / "prep" / split) for split in ("train", "valid", "test"))
    got = np.array([spark_scores[i] for i in shards["row_id"].to_pylist()])
    assert np.abs(got - in_process_probabilities(model, shards)).max() < 1e-5
    meta = json.loads((model / "model.json").read_text())
    meta["model"]["precision"] = "fp32"  # the same weights computed in fp32 score differently
    (model / "model.json").write_text(json.dumps(meta))
    assert np.abs(got - in_process_probabilities(model, shards)).max() > 1e-5


def test_unseen_values_score_as_oov_and_missing_values_as_missing(trained, scored):
    _, table = scored
    spark_scores = dict(zip(table["row_id"].to_pylist(), table["probability"].to_numpy(), strict=True))
    md = open_model_version(trained["model"])
    fmap = md.feature_map
    # Unseen row: categorical values present but unknown (OOV = 1); its numeric fields are empty.
    unseen = {f.name: [0 if f.source_role == "numeric" else 1] for f in fmap.categorical}
    missing = {f.name: [0] for f in fmap.categorical}
    dense_missing = {f.name: [np.float32(0.0)] for f in fmap.dense}  # missing dense values read as 0
    for row_id, ids in ((UNSEEN_ID, unseen), (MISSING_ID_ROW, missing)):
        expected = in_process_probabilities(md.path, pa.table({**{k: pa.array(v, pa.int32()) for k, v in ids.items()},
                                                  **{k: pa.array(v, pa.float32()) for k, v in dense_missing.items()}}))
        assert abs(spark_scores[row_id] - expected[0]) < 1e-5


def test_rerun_for_the_same_date_replaces_the_partition(spark, trained, scored):
    run_score(spark, _score_cfg(trained), "2026-11-27")
    run_score(spark, _score_cfg(trained, input_path=str(trained["logs"] / "part-1.tsv")), "2026-11-28")
    frame = spark.read.parquet(str(trained["root"] / "scores"))
    per_date = {r["run_date"].isoformat(): r["count"] for r in frame.groupBy("run_date").count().collect()}
    assert per_date == {"2026-11-27": 10_002, "2026-11-28": 2}
    assert frame.where("run_date = '2026-11-27'").select("row_id").distinct().count() == 10_002
    assert not [p for p in (trained["root"] / "scores").iterdir() if p.name.startswith(".")]


def test_already_encoded_split_scores_like_the_raw_rows(spark, trained, scored):
    _, raw = scored
    raw_scores = dict(zip(raw["row_id"].to_pylist(), raw["probability"].to_numpy(), strict=True))
    cfg = _score_cfg(trained, input_path=None, preprocessed=str(trained["root"] / "prep" / "test"),
                     output=str(trained["root"] / "scores_test"))
    table = pq.read_table(Path(run_score(spark, cfg, "2026-11-27").partition.removeprefix("file:")))
    assert table.num_rows == json.loads((trained["root"] / "prep" / "manifest.json").read_text())[
        "rows"]["splits"]["test"]["rows"]
    diffs = [abs(p - raw_scores[i]) for i, p in zip(table["row_id"].to_pylist(), table["probability"].to_numpy(),
                                                      strict=True)]
    assert max(diffs) < 1e-5


def test_malformed_rows_are_quarantined_in_the_partition(spark, trained, tmp_path):
    logs = tmp_path / "logs"
    shutil.copytree(trained["logs"], logs)
    (logs / "part-2.tsv").write_text("12345\tnot-a-label\n")
    cfg = _score_cfg(trained, input_path=str(logs), output=str(tmp_path / "scores"))
    result = run_score(spark, cfg, "2026-11-27")
    assert (result.rows, result.rejected) == (10_002, 1)
    rejects = pq.read_table(Path(result.partition.removeprefix("file:")) / "_rejects")
    assert rejects.num_rows == 1 and "expected 42 fields" in rejects["reason"][0].as_py()


def test_vocabulary_that_does_not_match_the_model_fails_and_keeps_the_old_partition(spark, trained, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained["model"], model)
    vocab = pq.read_table(model / "vocab" / "vocabulary.parquet")
    ids = vocab["id"].to_numpy().copy()
    ids[[0, 1]] = ids[[1, 0]]  # two values swap ids: same size, different meaning
    pq.write_table(vocab.set_column(vocab.schema.get_field_index("id"), "id", pa.array(ids, vocab["id"].type)),
                   model / "vocab" / "vocabulary.parquet")
    out = tmp_path / "scores"
    run_score(spark, _score_cfg(trained, output=str(out), input_path=str(trained["logs"] / "part-1.tsv")),
              "2026-11-27")
    with pytest.raises(ModelVersionError, match="vocabulary.parquet does not match the model"):
        run_score(spark, _score_cfg(trained, model=str(model), output=str(out)), "2026-11-27")
    assert pq.read_table(out / "run_date=2026-11-27").num_rows == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_missing_model_file_names_the_file(spark, trained, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained["model"], model)
    (model / "model.pt").unlink()
    with pytest.raises(ModelVersionError, match=r"model\.pt is missing"):
        run_score(spark, _score_cfg(trained, model=str(model), output=str(tmp_path / "s")), "2026-11-27")


def test_input_without_a_model_column_names_the_column(spark, trained, tmp_path):
    frame = spark.read.option("sep", "\t").csv(str(trained["logs"] / "part-1.tsv")).toDF(
        "row_id", "day", "label", *[f"I{i}" for i in range(1, 14)], *[f"C{i}" for i in range(1, 27)]).drop("C7")
    frame.write.parquet(str(tmp_path / "parquet_logs"))
    spec = {"path": str(tmp_path / "parquet_logs"), "format": "parquet",
            "columns": COLUMNS[:2] + COLUMNS[3:5]
            + [{"names": [f"C{i}" for i in range(1, 27) if i != 7], "role": "categorical"}]}
    cfg = _score_cfg(trained, input_path=None, input=spec, output=str(tmp_path / "s"))
    with pytest.raises(InputError, match=r"lacks column\(s\) \['C7'\]"):
        run_score(spark, cfg, "2026-11-27")


def test_bad_run_date_is_refused(spark, trained, tmp_path):
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        run_score(spark, _score_cfg(trained, output=str(tmp_path / "s")), "27/11/2026")


def _cli_sets(trained, out):
    prep = trained["cfg"]
    return ["--set", "spark.master=local[2]", "--set", "spark.conf.spark.ui.showConsoleProgress=false",
            "--set", f"dataset.input.path={prep['dataset']['input']['path']}",
            "--set", f"dataset.input.columns={json.dumps(COLUMNS)}",
            "--set", f"score.model={trained['root'] / 'model'}", "--set", f"score.output={out}",
            "--set", f"score.input_path={trained['logs']}"]


def test_spark_submit_scores_a_run_date(trained, scored, tmp_path):
    result = run_cli([str(REPO_ROOT / "spark-submit.sh"), "score", "--run-date", "2026-11-27",
                   *_cli_sets(trained, tmp_path / "scores")])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 10_002 and summary["output"].endswith("run_date=2026-11-27")
    by_cli = pq.read_table(tmp_path / "scores" / "run_date=2026-11-27").sort_by("row_id")
    in_test = scored[1].sort_by("row_id")
    assert by_cli["row_id"].equals(in_test["row_id"])
    # Different batch boundaries change float summation order, nothing more.
    assert np.abs(by_cli["probability"].to_numpy() - in_test["probability"].to_numpy()).max() < 1e-6


def test_cli_errors_exit_2_with_the_reason(trained, tmp_path):
    bad_date = run_cli([*CLI, "score", "--run-date", "yesterday",
                     *_cli_sets(trained, tmp_path / "s")])
    assert bad_date.returncode == 2 and "YYYY-MM-DD" in bad_date.stderr
    no_model = run_cli([*CLI, "score", *_cli_sets(trained, tmp_path / "s"),
                     "--set", f"score.model={tmp_path / 'nothing'}"])
    assert no_model.returncode == 2 and "does not exist" in no_model.stderr and "Traceback" not in no_model.stderr


def test_kept_feature_columns_are_output_raw(spark, trained, tmp_path):
    cfg = _score_cfg(trained, keep=["row_id", "C9", "I1"], input_path=str(trained["logs"] / "part-0.tsv"),
                     output=str(tmp_path / "s"))
    table = pq.read_table(Path(run_score(spark, cfg, "2026-11-27").partition.removeprefix("file:")))
    assert table.column_names[:3] == ["row_id", "C9", "I1"]
    raw = {int(line.split("\t")[0]): line.split("\t") for line in
           (trained["logs"] / "part-0.tsv").read_text().splitlines()[:50]}
    got = {r["row_id"]: r for r in table.to_pylist() if r["row_id"] in raw}
    for row_id, fields in raw.items():
        assert got[row_id]["C9"] == (fields[3 + 13 + 8] or None)  # row_id, day, label, I1..I13, C1..
        assert got[row_id]["I1"] == (int(fields[3]) if fields[3] else None)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this would have run",))


@pytest.mark.parametrize(("weights", "reason"), [
    (b"PK\x03\x04 not really a zip archive", "is not a readable state dict"),
    (None, "holds objects other than tensors and was refused"),
])
def test_a_model_that_cannot_be_loaded_fails_on_the_driver_before_any_input_work(spark, trained, tmp_path,
                                                                                    weights, reason):
    model = tmp_path / "model"
    shutil.copytree(trained["model"], model)
    if weights is None:
        torch.save({"embeddings.table.weight": _RunsCode()}, model / "model.pt")
    else:
        (model / "model.pt").write_bytes(weights)
    with pytest.raises(ModelVersionError, match=reason) as err:
        run_score(spark, _score_cfg(trained, model=str(model), output=str(tmp_path / "s")), "2026-11-27")
    assert str(model / "model.pt") in str(err.value) and "weights_only=False" not in str(err.value)
    assert not (tmp_path / "s").exists()  # nothing was read or written


def test_a_model_or_data_from_another_transforms_version_is_refused(trained, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained["model"], model)
    meta = json.loads((model / "model.json").read_text())
    meta["feature_map"]["transforms_version"] = 1
    (model / "model.json").write_text(json.dumps(meta))
    with pytest.raises(TransformsVersionError, match=f"{model / 'model.json'} was made with version 1 .* re-run"):
        open_model_version(model)
    prep = tmp_path / "prep"
    shutil.copytree(trained["root"] / "prep", prep)
    manifest = json.loads((prep / "manifest.json").read_text())
    del manifest["feature_map"]["transforms_version"]  # written before the transforms were versioned
    (prep / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TransformsVersionError, match="before they were versioned"):
        PreprocessOutput.open(prep)


def test_the_row_key_a_data_set_declares_is_kept_by_default(spark, trained, tmp_path):
    """split.key names C9 (a feature) beside the id column: without score.keep, the output still
    carries both, so every score can be joined back to its input row."""
    cfg = _score_cfg(trained, input_path=str(trained["logs"] / "part-0.tsv"), output=str(tmp_path / "s"))
    cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={
        "split": cfg.dataset.split.model_copy(update={"key": ["row_id", "C9"]})})})
    assert cfg.dataset.row_key == ["row_id", "C9"]
    table = pq.read_table(Path(run_score(spark, cfg, "2026-11-27").partition.removeprefix("file:")))
    assert table.column_names[:4] == ["row_id", "C9", "day", "label"]
    first = (trained["logs"] / "part-0.tsv").read_text().splitlines()[0].split("\t")
    row = next(r for r in table.to_pylist() if r["row_id"] == int(first[0]))
    assert row["C9"] == (first[3 + 13 + 8] or None)  # raw, not its encoded id


def test_a_sharded_version_trained_on_spark_scores_equal_to_in_process(spark, trained, tmp_path):
    """Sharded tables under the Spark launcher (2 barrier tasks): the version's stripes, put together,
    score raw logs in the Spark job exactly as the eager model scores the training encodings."""
    sharded = run_training(TrainConfig.model_validate({
        "data": str(trained["root"] / "prep"), "output": str(tmp_path / "model"), "epochs": 1, "batch_size": 256,
        "model": {"embedding_dim": 8, "hidden": [32, 16]}, "threads": 1, "backend": "torch", "workers": 2,
        "launcher": "spark", "embeddings": "sharded"}))
    assert open_model_version(sharded.model).table_stripes == 2
    cfg = _score_cfg(trained, model=sharded.model, output=str(tmp_path / "scores"))
    table = pq.read_table(Path(run_score(spark, cfg, "2026-11-27").partition.removeprefix("file:")))
    spark_scores = dict(zip(table["row_id"].to_pylist(), table["probability"].to_numpy(), strict=True))
    shards = pa.concat_tables(pq.read_table(trained["root"] / "prep" / split) for split in ("train", "valid", "test"))
    expected = in_process_probabilities(Path(sharded.model), shards)
    got = np.array([spark_scores[i] for i in shards["row_id"].to_pylist()])
    assert len(got) == 10_000 and np.abs(got - expected).max() < 1e-5
    assert set(table["model_digest"].to_pylist()) == {open_model_version(sharded.model).weights_digest}
    # The executors map the stripes where training wrote them, and read only the rows they look up.
    cfg = _score_cfg(trained, model=sharded.model, output=str(tmp_path / "mapped"), tables="mapped")
    mapped = pq.read_table(Path(run_score(spark, cfg, "2026-11-27").partition.removeprefix("file:")))
    assert mapped.sort_by("row_id")["probability"].equals(table.sort_by("row_id")["probability"])


def test_a_model_over_broadcast_max_mb_is_mapped_by_the_executors_and_scores_alike(spark, trained, scored, tmp_path,
                                                                                  caplog):
    cfg = _score_cfg(trained, output=str(tmp_path / "scores"), broadcast_max_mb=0)
    with caplog.at_level(logging.INFO, logger="pipelines.score"):
        result = run_score(spark, cfg, "2026-11-27")
    assert "executors map the model's" in caplog.text
    mapped = pq.read_table(Path(result.partition.removeprefix("file:"))).sort_by("row_id")
    assert mapped["probability"].equals(scored[1].sort_by("row_id")["probability"])


def test_mapped_tables_under_a_python_address_space_cap_fail_naming_the_setting(trained, tmp_path):
    capped = run_cli([*CLI, "score", "--run-date", "2026-11-27", *_cli_sets(trained, tmp_path / "s"),
                      "--set", "spark.conf.spark.executor.pyspark.memory=512m", "--set", "score.tables=mapped"])
    assert capped.returncode == 2 and "Traceback" not in capped.stderr
    assert "spark.executor.pyspark.memory=512m caps each Python worker" in capped.stderr
    assert not (tmp_path / "s").exists()
