"""MLflow tracking, read back through the MLflow client: a real SQLite store, a real pyfunc model."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import threading
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from deepfm.config import Config, EvaluateConfig
from deepfm.tracking.runs import WEIGHTS_TAG, log_report, log_training
from deepfm.training.launch import TrainedVersion
from deepfm.training.model_versions import open_model_version
from pipelines.evaluate import run_evaluate
from tests.conftest import CLI, run_cli
from tests.pipelines.conftest import COLUMNS


def _names() -> list[str]:
    names = []
    for spec in COLUMNS:
        if "names" in spec:
            prefix, span = spec["names"][0].split("{")
            low, high = span.rstrip("}").split("..")
            names += [f"{prefix}{i}" for i in range(int(low), int(high) + 1)]
        else:
            names.append(spec["name"])
    return names


def _raw_rows(logs: Path) -> pd.DataFrame:
    """The raw logs as a service would hold them: text for categorical fields, numbers (NaN when
    missing) for numeric ones."""
    frame = pd.concat(pd.read_csv(f, sep="\t", header=None, names=_names(), dtype=str, keep_default_na=False)
                      for f in sorted(logs.glob("*.tsv")))
    for name in [n for n in frame.columns if n.startswith("I")]:
        frame[name] = pd.to_numeric(frame[name].replace("", None)).astype("float64")
    return frame.reset_index(drop=True)


@pytest.fixture(scope="module")
def tracked(trained, tmp_path_factory):
    store = tmp_path_factory.mktemp("mlruns")
    cfg = Config.model_validate({**trained["cfg"], "tracking": {"uri": str(store), "experiment": "criteo-test"},
                                 "train": {"data": str(trained["root"] / "prep"),
                                           "output": str(trained["root"] / "model")}})
    version = trained["model"]
    result = TrainedVersion(version.name, str(version), up_to_date=False,
                            result=open_model_version(version).training_result())
    run_id = log_training(cfg, result, "2026-11-27")
    assert run_id is not None, "tracking failed: see the warning in the log"
    return cfg, result, run_id, mlflow.MlflowClient(cfg.tracking.destination()[0])


def test_a_trained_version_is_one_run_with_its_config_epochs_and_test_metrics(tracked):
    cfg, result, run_id, client = tracked
    run = client.get_run(run_id)
    assert run.data.params["train.epochs"] == "1" and run.data.params["train.model.hidden"] == "[32, 16]"
    assert run.data.params["train.data"] == cfg.train.data
    assert run.data.tags["deepfm.run_date"] == "2026-11-27" and run.data.tags["deepfm.model"] == result.model
    history = client.get_metric_history(run_id, "valid_auc")
    # steps count epochs from 1, as the training log does ("epoch 1: train loss ...")
    assert [(m.step, m.value) for m in history] == [(h["epoch"] + 1, h["valid_auc"]) for h in result.result.history]
    assert run.data.metrics["test_auc"] == pytest.approx(result.result.test["auc"])
    assert run.data.metrics["test_logloss"] == pytest.approx(result.result.test["logloss"])
    training = {a.path for a in client.list_artifacts(run_id, "training")}
    assert {"training/training_curves.png", "training/metrics.json", "training/model.json"} <= training
    assert json.loads(Path(client.download_artifacts(run_id, "config.json")).read_text())["train"]["epochs"] == 1


def test_the_logged_pyfunc_scores_raw_rows_exactly_as_the_score_job(tracked, trained, scored):
    _, _, run_id, _ = tracked
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    fields = [c.name for c in model.metadata.get_input_schema().inputs]
    assert fields == [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
    rows = _raw_rows(trained["logs"])  # includes a row of never-seen values and one of missing values
    predicted = model.predict(rows)["probability"].to_numpy()
    _, table = scored
    by_row = dict(zip(table.column("row_id").to_pylist(), table.column("probability").to_pylist(), strict=True))
    expected = np.array([by_row[int(i)] for i in rows["row_id"]], np.float32)
    assert len(predicted) == len(rows) == table.num_rows
    np.testing.assert_allclose(predicted, expected, rtol=0, atol=1e-6)


def test_the_evaluation_report_joins_the_run_of_its_model(tracked, trained, scored, spark, tmp_path):
    cfg, _, run_id, client = tracked
    result, _ = scored
    evaluated = run_evaluate(spark, cfg.model_copy(update={"evaluate": EvaluateConfig(
        predictions=result.partition, output=str(tmp_path / "report"))}))
    assert evaluated.metrics["model_digest"] == client.get_run(run_id).data.tags[WEIGHTS_TAG]
    assert log_report(cfg, evaluated.report, evaluated.metrics) == run_id
    report = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.html", "report/roc.png", "report/metrics.json"} <= report
    assert client.get_run(run_id).data.metrics["eval_auc"] == pytest.approx(evaluated.metrics["overall"]["auc"])


def test_a_tracking_server_that_does_not_answer_is_a_warning_after_the_configured_retries(tracked, monkeypatch,
                                                                                         caplog):
    cfg, result, _, _ = tracked
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    attempts, stop = [], threading.Event()
    with socket.socket() as server:  # takes each connection and hangs up without an answer
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(0.1)
        port = server.getsockname()[1]

        def hang_up() -> None:
            while not stop.is_set():
                try:
                    connection, _ = server.accept()
                except TimeoutError:
                    continue
                attempts.append(connection)
                connection.close()

        listener = threading.Thread(target=hang_up)
        listener.start()
        tracking = cfg.tracking.model_copy(update={"uri": f"http://127.0.0.1:{port}", "http_retries": 1})
        try:
            assert log_training(cfg.model_copy(update={"tracking": tracking}), result, "2026-11-27") is None
        finally:
            stop.set()
            listener.join()
    assert len(attempts) == 2, "one request and one retry, not MLflow's seven"
    assert f"MLflow tracking at http://127.0.0.1:{port} failed, the model version is committed" in caplog.text
    assert Path(result.model, "model.pt").is_file()
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the limits hold for tracking alone


def test_tracking_off_or_an_up_to_date_train_logs_nothing(tracked):
    cfg, result, _, _ = tracked
    off = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"enabled": False})})
    assert log_training(off, result, None) is None
    assert log_training(cfg, dataclasses.replace(result, up_to_date=True), None) is None


def test_a_report_joins_the_run_of_the_version_it_evaluated_even_when_another_has_equal_weights(
        tracked, trained, spark, tmp_path):
    cfg, result, run_id, client = tracked
    twin = trained["root"] / "model" / "2099-01-01"  # a later version with the very same weights
    shutil.copytree(trained["model"], twin)
    twin_run = log_training(cfg, dataclasses.replace(result, model=str(twin), version=twin.name), "2099-01-01")
    assert client.get_run(twin_run).data.tags[WEIGHTS_TAG] == client.get_run(run_id).data.tags[WEIGHTS_TAG]
    evaluated = run_evaluate(spark, cfg.model_copy(update={"evaluate": EvaluateConfig(
        model=str(trained["model"]), data=str(trained["root"] / "prep" / "test"), output=str(tmp_path / "r"))}))
    joined = log_report(cfg, evaluated.report, evaluated.metrics, evaluated.model)
    assert joined != twin_run and client.get_run(joined).data.tags["deepfm.model"] == str(trained["model"])


def _down(cfg: Config) -> Config:
    """The same configuration with a tracking server that refuses connections, and no retries."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={
        "uri": f"http://127.0.0.1:{port}", "http_retries": 0})})


def _runs_of(client, cfg: Config, model: str) -> list:
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    return client.search_runs([experiment.experiment_id], f"tags.`deepfm.model` = '{model}'")


def test_a_version_trained_while_the_store_was_down_is_tracked_by_the_next_train_into_its_root(tracked):
    cfg, result, _, client = tracked
    runs_before = len(_runs_of(client, cfg, result.model))
    assert log_training(_down(cfg), result, "2026-11-27") is None
    pending = Path(result.model).parent / ".tracking-pending" / f"{result.version}.json"
    assert pending.is_file()
    # still down: kept
    assert log_training(_down(cfg), dataclasses.replace(result, up_to_date=True), "2026-11-27") is None
    assert pending.is_file() and len(_runs_of(client, cfg, result.model)) == runs_before
    # The store is back; the next train is up to date (it trains and logs nothing of its own) yet sends it.
    assert log_training(cfg, dataclasses.replace(result, up_to_date=True), "2026-11-27") is None
    assert not pending.exists()
    runs = _runs_of(client, cfg, result.model)
    assert len(runs) == runs_before + 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["test_auc"] == pytest.approx(result.result.test["auc"])
    assert runs[0].data.tags["deepfm.run_date"] == "2026-11-27"


def test_track_sends_what_is_pending_and_exits_1_while_the_store_is_still_down(tracked):
    cfg, result, _, client = tracked
    down = _down(cfg)
    assert log_training(down, result, "2026-11-27") is None
    command = [*CLI, "track", "--set", f"train.output={Path(result.model).parent}",
               "--set", f"tracking.experiment={cfg.tracking.experiment}", "--set", "tracking.http_retries=0"]
    still_down = run_cli([*command, "--set", f"tracking.uri={down.tracking.uri}"])
    assert still_down.returncode == 1, still_down.stderr[-3000:]
    assert f"1 model version(s) of {Path(result.model).parent} are still not tracked ({result.version})" in (
        still_down.stderr)
    runs_before = len(_runs_of(client, cfg, result.model))
    back = run_cli([*command, "--set", f"tracking.uri={cfg.tracking.uri}"])
    assert back.returncode == 0, back.stderr[-3000:]
    summary = json.loads(back.stdout.strip().splitlines()[-1])
    assert len(summary["sent"]) == 1 and summary["pending"] == []
    assert len(_runs_of(client, cfg, result.model)) == runs_before + 1
