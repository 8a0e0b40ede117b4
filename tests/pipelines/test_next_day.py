"""Next-day evaluation on the drifting stream: the serving version judged on each new date, and the history."""

import json

import pytest

from deepfm.config import GenerateConfig, TrainConfig, load_config
from deepfm.training.launch import run_training
from pipelines.drift import generate_stream
from pipelines.next_day import run_next_day
from pipelines.preprocess import run_preprocess
from tests.conftest import REPO_ROOT


def _config(raw, work, run_date):
    return load_config([REPO_ROOT / "conf/base.yaml", REPO_ROOT / "conf/datasets/drifting.yaml"], [
        f"dataset.input.path={raw}/dt={{run_date}}", f"preprocess.output={work}/shards/run_date={{run_date}}",
        "preprocess.vocab.min_count=2", f"next_day.model={work}/models", f"next_day.output={work}/next_day"],
        run_date=run_date)


@pytest.mark.stack_neutral
def test_the_serving_version_is_judged_on_each_new_date_and_the_history_grows(spark, tmp_path):
    raw = tmp_path / "raw"
    generate_stream(GenerateConfig(output=str(raw), rows=20_000, days=3, cardinality_scale=0.01,
                                   start_date="2026-11-01"))
    assert run_next_day(spark, _config(raw, tmp_path, "2026-11-01"), "2026-11-01") is None  # nothing serves yet
    run_preprocess(spark, _config(raw, tmp_path, "2026-11-01"))
    run_training(TrainConfig.model_validate({
        "data": str(tmp_path / "shards" / "run_date=2026-11-01"), "output": str(tmp_path / "models"), "epochs": 3,
        "lr": 3e-3, "threads": 1, "model": {"embedding_dim": 4, "hidden": [16]}}), run_date="2026-11-01")

    second = run_next_day(spark, _config(raw, tmp_path, "2026-11-02"), "2026-11-02")
    assert second.version == "2026-11-01" and second.metrics["overall"]["rows"] == 20_000
    assert 0.6 < second.metrics["overall"]["auc"] < 0.95
    third = run_next_day(spark, _config(raw, tmp_path, "2026-11-03"), "2026-11-03")
    history = json.loads((tmp_path / "next_day" / "history" / "history.json").read_text())
    assert [(h["run_date"], h["model_version"]) for h in history] == [("2026-11-02", "2026-11-01"),
                                                                     ("2026-11-03", "2026-11-01")]
    overall = third.metrics["overall"]
    assert history[1]["auc"] == overall["auc"]
    assert history[1]["calibration"] == round(overall["ctr_predicted"] / overall["ctr_observed"], 4)
    assert (tmp_path / "next_day" / "history" / "history.png").stat().st_size > 10_000
    assert (tmp_path / "next_day" / "reports" / "run_date=2026-11-03" / "report.html").is_file()
