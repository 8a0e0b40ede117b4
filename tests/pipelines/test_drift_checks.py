"""Drift checks before training, on the dated drifting stream with a field emptied on its third day."""

import pytest

from deepfm.config import GenerateConfig, TrainConfig, load_config
from deepfm.errors import DO_NOT_RETRY, exit_code
from deepfm.features.preprocess_output import PreprocessOutput
from deepfm.training.launch import run_training
from pipelines.drift import generate_stream
from pipelines.drift_checks import DriftError
from pipelines.evaluate import run_evaluate
from pipelines.preprocess import run_preprocess
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    out = tmp_path_factory.mktemp("drift_checks") / "raw"
    generate_stream(GenerateConfig(output=str(out), rows=3_000, days=3, cardinality_scale=0.01,
                                   start_date="2026-11-01",
                                   drift={"broken_day": "2026-11-03", "broken": "empty_field", "broken_field": "C3"}))
    return out


def _config(raw, shards, models, run_date, *settings):
    return load_config([REPO_ROOT / "conf/base.yaml", REPO_ROOT / "conf/datasets/drifting.yaml"], [
        f"dataset.input.path={raw}/dt={{run_date}}", f"preprocess.output={shards}/run_date={{run_date}}",
        "preprocess.vocab.min_count=2", f"drift.reference_data={shards}/run_date={{run_date-1d}}",
        f"drift.reference_model={models}", *settings], run_date=run_date)


def test_a_field_emptied_overnight_stops_the_run_naming_it(spark, stream, tmp_path):
    shards, models = tmp_path / "shards", tmp_path / "models"
    first = run_preprocess(spark, _config(stream, shards, models, "2026-11-01"))
    assert first.manifest.drift["reference_data"] is None  # the first day has nothing to compare with
    assert 0.0 < first.manifest.drift["fields"]["C3"]["missing_rate"] < 0.1
    run_training(TrainConfig.model_validate({
        "data": str(shards / "run_date=2026-11-01"), "output": str(models), "epochs": 1, "threads": 1,
        "model": {"embedding_dim": 4, "hidden": [8]}}), run_date="2026-11-01")

    second = run_preprocess(spark, _config(stream, shards, models, "2026-11-02")).manifest.drift
    assert second["reference_data"].endswith("run_date=2026-11-01") and second["reference_model"].endswith("2026-11-01")
    c3, i5 = second["fields"]["C3"], second["fields"]["I5"]
    assert abs(c3["missing_rate"] - c3["missing_rate_before"]) < 0.03
    assert 0.0 < c3["oov_rate_vs_serving"] < 0.5  # a day's new values and tail, unknown to the serving model
    assert 0.0 <= i5["psi"] < 0.05  # the stream's numeric fields do not drift

    # The report of the model trained on that day shows them.
    run_training(TrainConfig.model_validate({
        "data": str(shards / "run_date=2026-11-02"), "output": str(models), "epochs": 1, "threads": 1,
        "model": {"embedding_dim": 4, "hidden": [8]}}), run_date="2026-11-02")
    report = run_evaluate(spark, _config(stream, shards, models, "2026-11-02", f"evaluate.model={models}/2026-11-02",
                                         f"evaluate.data={shards}/run_date=2026-11-02/test",
                                         f"evaluate.output={tmp_path / 'report'}"))
    assert report.metrics["drift"] == {"data": str(shards / "run_date=2026-11-02"), **second}
    page = report.report.read_text()
    assert "Drift of the training data" in page and f"<td>C3</td><td>{c3['missing_rate']:.5f}</td>" in page

    with pytest.raises(DriftError, match=r"drift check: field C3 is missing in 100\.0% of the training rows against "
                                         r"\d\.\d% in \S+run_date=2026-11-02 \(drift\.max_missing_rate_increase 0\.3\)"
                       ) as err:
        run_preprocess(spark, _config(stream, shards, models, "2026-11-03"))
    assert exit_code(err.value) == DO_NOT_RETRY
    assert not (shards / "run_date=2026-11-03").exists()


def test_each_threshold_names_its_field_and_figure(spark, stream, tmp_path):
    shards, models = tmp_path / "shards", tmp_path / "models"
    run_preprocess(spark, _config(stream, shards, models, "2026-11-01"))
    with pytest.raises(DriftError, match=r"numeric field I\d+ has PSI 0\.\d+ against \S+ \(drift\.max_psi 0\.0\)"):
        run_preprocess(spark, _config(stream, shards, models, "2026-11-02", "drift.max_psi=0"))
    assert PreprocessOutput.open(shards / "run_date=2026-11-01").manifest.drift is not None
