"""Every stage through spark-submit.sh on a real standalone cluster whose worker cannot see this
checkout or its virtualenv: the code and its environment reach the executors only as the shipped
archive (`make package`). Run by `make test-cluster`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import CLI_ENV, CRITEO_SAMPLE, REPO_ROOT, run_cli
from tests.standalone import StandaloneCluster, namespaces_available

pytestmark = pytest.mark.cluster

ARCHIVE = REPO_ROOT / "dist" / "deepfm-env.tar.gz"
VENV = Path(os.environ.get("VENV", REPO_ROOT / ".venv")).resolve()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = namespaces_available()
    if reason:
        pytest.fail(f"the cluster test needs a private mount namespace: {reason}")
    if not ARCHIVE.is_file():
        pytest.fail(f"{ARCHIVE} is missing: run `make package` (make test-cluster does)")
    work = tmp_path_factory.mktemp("cluster")
    hidden = [REPO_ROOT] + ([VENV] if not VENV.is_relative_to(REPO_ROOT) else [])
    cluster = StandaloneCluster(work, hidden).start()
    yield cluster
    cluster.stop()


def submit(cluster: StandaloneCluster, stage: str, *args: str) -> dict:
    """One stage through spark-submit.sh on the cluster, with the shipped environment; its summary."""
    env = {**CLI_ENV, "SPARK_MASTER": cluster.master_url, "DEEPFM_SHIP_ENV": str(ARCHIVE),
           "SPARK_SUBMIT_ARGS": "--executor-memory 3g --conf spark.ui.showConsoleProgress=false"}
    env.pop("PYSPARK_PYTHON", None)
    result = run_cli([str(REPO_ROOT / "spark-submit.sh"), stage, *args], env=env, cwd=cluster.work)
    log = result.stdout + result.stderr  # spark-submit merges the Python driver's stderr into stdout
    assert result.returncode == 0, f"{stage} failed:\n{log[-6000:]}"
    assert "Traceback" not in log, log[-6000:]
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "log": log}


def finished_app(cluster: StandaloneCluster, name: str) -> dict:
    apps = [a for a in cluster.state()["completedapps"] if a["name"] == name]
    assert apps, f"no application {name} at the master: {[a['name'] for a in cluster.state()['completedapps']]}"
    assert apps[-1]["state"] == "FINISHED", apps[-1]
    return apps[-1]


def test_every_stage_runs_on_the_cluster_from_the_shipped_environment(cluster):
    assert not cluster.worker_sees(REPO_ROOT / "pyproject.toml")
    assert not cluster.worker_sees(VENV / "bin" / "python")
    assert cluster.worker_sees(cluster.work)
    logs = cluster.work / "logs_in"
    logs.mkdir()
    shutil.copy(CRITEO_SAMPLE, logs / "part-0.tsv")
    data, run_date = cluster.work / "criteo", "2026-11-27"

    summary = submit(cluster, "preprocess", "--set", f"dataset.input.path={logs}", "--set", f"preprocess.output={data}")
    assert summary["rows"] == {"input": 10_000, "accepted": 10_000, "rejected": 0}
    apps = {"preprocess": finished_app(cluster, "deepfm-preprocess")}

    for backend in ("torch", "horovod"):
        summary = submit(cluster, "train", "--set", "train.launcher=spark", "--set", f"train.backend={backend}",
                         "--set", "train.workers=2", "--set", "train.epochs=2", "--set", f"train.data={data}",
                         "--set", f"train.output={cluster.work / ('model_' + backend)}")
        assert summary["workers"] == 2 and summary["test"]["auc"] > 0.6, summary
        # Rank 0's progress, logged in an executor, reaches the driver's log.
        assert "deepfm.train: epoch 2: train loss" in summary["log"] and "test AUC" in summary["log"]
        assert "Cleared scope" not in summary["log"]  # Horovod's rendezvous chatter is filtered
        apps[backend] = finished_app(cluster, "deepfm-train")
        assert (cluster.work / f"model_{backend}" / summary["version"] / "model.pt").is_file()

    summary = submit(cluster, "score", "--run-date", run_date, "--set", f"score.model={cluster.work / 'model_torch'}",
                     "--set", f"score.input_path={logs}", "--set", f"score.output={cluster.work / 'scores'}")
    assert summary["rows"] == 10_000
    apps["score"] = finished_app(cluster, f"deepfm-score-{run_date}")

    summary = submit(cluster, "evaluate", "--set", f"evaluate.model={cluster.work / 'model_torch'}",
                     "--set", f"evaluate.data={data / 'test'}", "--set", f"evaluate.output={cluster.work / 'report'}")
    assert summary["overall"]["auc"] > 0.6
    apps["evaluate"] = finished_app(cluster, "deepfm-evaluate")

    # Each application ran executors on the worker, from the unpacked archive's interpreter.
    for stage, app in apps.items():
        executors = cluster.executor_dirs(app["id"])
        assert executors, f"{stage}: no executor ran for {app['id']}"
        assert any((d / "env" / "bin" / "python").exists() for d in executors), f"{stage}: archive not unpacked"
        assert "Finished task" in cluster.executor_logs(app["id"]) or "Running task" in cluster.executor_logs(
            app["id"]), stage
    assert len({a["id"] for a in apps.values()}) == len(apps)
