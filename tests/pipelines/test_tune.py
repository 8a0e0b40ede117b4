"""The tune stage on a real SparkSession: Optuna trials as Spark tasks on the Criteo sample."""

import csv
from pathlib import Path

import mlflow
import pytest
import yaml

from deepfm.config import Config, load_config
from deepfm.errors import exit_code
from deepfm.storage.location import Location
from deepfm.tracking.runs import log_tuning
from pipelines.tune import StudyNotSharedError, _check_study_reached, run_trial, run_tune
from tests.conftest import CLI, run_cli

# lr 1e-5 barely moves the model in 3 epochs: such trials fall below the median and are pruned.
SPACE = {"train.lr": {"choices": [1e-5, 3e-3]}, "train.model.embedding_dim": {"choices": [4, 8]}}


def _cfg(trained, out: Path, trials: int) -> Config:
    return Config.model_validate({**trained["cfg"], "train": {
        "data": str(trained["root"] / "prep"), "output": str(out / "unused"), "epochs": 3, "batch_size": 256,
        "model": {"embedding_dim": 4, "hidden": [16]}, "threads": 1,
    }, "tune": {"output": str(out), "trials": trials, "parallel": 2, "prune_after_trials": 2, "seed": 3,
                "space": SPACE}})


def _rows(out: Path) -> list[dict]:
    with open(out / "trials.csv") as f:
        return list(csv.DictReader(f))


def test_trials_run_as_spark_tasks_weak_ones_are_pruned_and_the_best_config_is_usable(spark, trained, tmp_path):
    result = run_tune(spark, _cfg(trained, tmp_path / "tune", 6))
    rows = _rows(tmp_path / "tune")
    assert [int(r["number"]) for r in rows] == list(range(6)) and result.trials == 6
    complete = [r for r in rows if r["state"] == "complete"]
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert len(complete) + len(pruned) == 6 and complete and pruned
    assert all(int(r["epochs"]) < 3 for r in pruned)  # cut short
    assert round(result.best_value, 6) == max(float(r["valid_auc"]) for r in complete) > 0.6
    assert result.best_settings["train.lr"] == 3e-3  # the lr that learns
    best = yaml.safe_load((tmp_path / "tune" / "best.yaml").read_text())
    assert best == {"train": {"lr": result.best_settings["train.lr"],
                              "model": {"embedding_dim": result.best_settings["train.model.embedding_dim"]}}}
    cfg = load_config(["conf/base.yaml", "conf/datasets/criteo.yaml", str(tmp_path / "tune" / "best.yaml")])
    assert cfg.train.lr == 3e-3 and cfg.train.model.embedding_dim == result.best_settings["train.model.embedding_dim"]


def test_a_rerun_continues_the_study_and_trains_nothing_when_it_is_done(spark, trained, tmp_path):
    """...and MLflow holds the study as one parent run with a child run per trial, reruns included."""
    out = tmp_path / "tune"

    def tuned(trials: int) -> tuple[str, list]:
        cfg = _cfg(trained, out, trials)
        cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={
            "uri": str(tmp_path / "mlruns"), "experiment": "tune-test"})})
        run_tune(spark, cfg)
        parent = log_tuning(cfg, Location.of(out))
        client = mlflow.MlflowClient(cfg.tracking.destination()[0])
        experiment = client.get_experiment_by_name("tune-test").experiment_id
        children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'")
        return parent, sorted((int(c.data.tags["deepfm.trial"]), c.data.metrics.get("valid_auc"),
                               c.data.params.get("train.lr")) for c in children)

    parent, children = tuned(2)
    first = _rows(out)
    assert len(first) == 2
    assert children == sorted((int(r["number"]), float(r["valid_auc"]), r["train.lr"]) for r in first)
    assert tuned(2) == (parent, children)  # a scheduler's rerun: nothing left to do, nothing logged twice
    assert _rows(out) == first
    again, more = tuned(4)
    assert _rows(out)[:2] == first and len(_rows(out)) == 4
    assert again == parent and more[:2] == children and [c[0] for c in more] == [0, 1, 2, 3]


def test_a_search_key_that_is_not_a_train_setting_exits_2_naming_it(tmp_path):
    result = run_cli([*CLI, "tune", "--set", f"tune.output={tmp_path}", "--set",
                      "tune.space={train.learning_rate: {low: 0.001, high: 0.01}}"])
    assert result.returncode == 2
    assert "'train.learning_rate' is not a train.* setting" in result.stderr.strip().splitlines()[-1]


def test_executors_that_do_not_see_the_study_journal_stop_the_job_naming_it(tmp_path):
    """On a cluster, a local tune.output is on the driver's disk only: a trial's executor finds no
    journal there, and the job exits 2 saying what to do instead of failing every trial."""
    journal = tmp_path / "driver-only" / "study.journal"
    outcome = run_trial({"number": 0, "trial_id": 0, "settings": {"train.lr": 0.01}, "prune": True,
                         "prune_after_trials": 2, "storage": f"journal:{journal}", "train": {}})
    assert outcome["state"] == "unreached" and not journal.parent.exists()  # nothing created there
    with pytest.raises(StudyNotSharedError) as err:
        _check_study_reached([outcome])
    assert str(err.value).startswith(f"tune.output: the study journal {journal} is not on executor host ")
    assert "set tune.storage" in str(err.value) and exit_code(err.value) == 2
