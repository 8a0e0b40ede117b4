"""The evaluate job on real predictions: exact metrics, slices, calibration and the HTML report."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from deepfm.config import Config
from deepfm.storage.commit import marker_text
from pipelines.evaluate import run_evaluate
from pipelines.read import InputError


def _evaluate(spark, trained, tmp_path, **ev):
    return run_evaluate(spark, Config.model_validate({**trained["cfg"], "evaluate": {
        "output": str(tmp_path / "report"), "model": str(trained["model"]), **ev}}))


def test_metrics_from_predictions_are_exact_overall_and_per_slice(spark, trained, scored, tmp_path):
    result, _ = scored
    partition = result.partition.removeprefix("file:")
    metrics = _evaluate(spark, trained, tmp_path, predictions=partition, slice="day").metrics
    table = pq.read_table(partition).to_pandas()
    y, p = table["label"].to_numpy(), table["probability"].to_numpy().astype(np.float64)
    overall = metrics["overall"]
    assert overall["rows"] == 10_002
    assert overall["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert overall["logloss"] == pytest.approx(log_loss(y, p), abs=1e-6)
    assert overall["ctr_observed"] == pytest.approx(y.mean()) and overall["ctr_predicted"] == pytest.approx(p.mean())
    values = {v["value"]: v for v in metrics["slices"]["values"]}
    assert set(values) == {"0", "1", "2"} and sum(v["rows"] for v in values.values()) == 10_002
    day = table["day"].to_numpy()
    for value, entry in values.items():
        sel = day == value
        assert entry["auc"] == pytest.approx(roc_auc_score(y[sel], p[sel]), abs=1e-9)
    bins = metrics["calibration"]
    assert len(bins) == 10 and sum(b["rows"] for b in bins) == 10_002
    assert all(a["p_max"] <= b["p_min"] for a, b in zip(bins, bins[1:], strict=False))
    assert max(abs(b["rows"] - 1000) for b in bins) < 50  # deciles, up to ties


def test_report_is_one_self_contained_html_with_all_plots(spark, trained, scored, tmp_path):
    result, _ = scored
    report = _evaluate(spark, trained, tmp_path, predictions=result.partition.removeprefix("file:")).report.local_path
    out = report.parent
    assert {p.name for p in out.iterdir()} == {"metrics.json", "roc.png", "calibration.png",
                                               "training_curves.png", "report.html", "_DEEPFM_OUTPUT", "_SUCCESS"}
    page = report.read_text()
    assert page.count('src="data:image/png;base64,') == 3
    assert "http://" not in page and "https://" not in page  # nothing to fetch: readable offline
    written = json.loads((out / "metrics.json").read_text())
    assert (written["model_version"], written["model_digest"]) == (result.model_version, result.model_digest)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_model_and_labelled_split_reproduce_the_training_test_metrics(spark, trained, tmp_path):
    metrics = _evaluate(spark, trained, tmp_path, data=str(trained["root"] / "prep" / "test")).metrics
    at_training = json.loads((trained["model"] / "metrics.json").read_text())["test"]
    assert metrics["overall"]["rows"] == at_training["rows"]
    assert metrics["overall"]["auc"] == pytest.approx(at_training["auc"], abs=1e-6)
    assert metrics["overall"]["logloss"] == pytest.approx(at_training["logloss"], abs=1e-5)


def test_predictions_without_the_label_column_name_it(spark, trained, scored, tmp_path):
    result, _ = scored
    with pytest.raises(InputError, match=r"lack column\(s\) \['clicked'\]"):
        _evaluate(spark, trained, tmp_path, predictions=result.partition.removeprefix("file:"), label="clicked")


def test_labels_must_be_binary(spark, trained, scored, tmp_path):
    result, _ = scored
    frame = spark.read.parquet(result.partition).withColumnRenamed("row_id", "not_a_label")
    frame.write.parquet(str(tmp_path / "preds"))
    with pytest.raises(InputError, match="must hold 0 or 1"):
        _evaluate(spark, trained, tmp_path, predictions=str(tmp_path / "preds"), label="not_a_label")


def test_report_replaces_an_earlier_one(spark, trained, scored, tmp_path):
    (tmp_path / "report").mkdir()  # an earlier report of this project's, with a file the new one lacks
    (tmp_path / "report" / "_DEEPFM_OUTPUT").write_text(marker_text("evaluate"))
    (tmp_path / "report" / "stale.txt").write_text("old")
    result, _ = scored
    _evaluate(spark, trained, tmp_path, predictions=result.partition.removeprefix("file:"))
    assert not (tmp_path / "report" / "stale.txt").exists()
    assert Path(tmp_path / "report" / "report.html").is_file()
