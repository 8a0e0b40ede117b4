"""Every stage through spark-submit.sh on a real standalone cluster whose worker cannot see this
checkout or its virtualenv: the code and its environment reach the executors only as the shipped
archive (`make package`). Run by `make test-cluster`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
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


@pytest.fixture(scope="module")
def pipeline(cluster):
    """Every stage once through spark-submit.sh on the cluster: the summaries, applications and paths."""
    logs = cluster.work / "logs_in"
    logs.mkdir()
    shutil.copy(CRITEO_SAMPLE, logs / "part-0.tsv")
    data, run_date = cluster.work / "criteo", "2026-11-27"
    summaries, apps = {}, {}
    preprocess_args = ["--set", f"dataset.input.path={logs}", "--set", f"preprocess.output={data}"]
    summaries["preprocess"] = submit(cluster, "preprocess", *preprocess_args)
    apps["preprocess"] = finished_app(cluster, "deepfm-preprocess")
    for backend in ("torch", "horovod"):
        summaries[backend] = submit(cluster, "train", "--set", "train.launcher=spark", "--set",
                                    f"train.backend={backend}", "--set", "train.workers=2", "--set", "train.epochs=2",
                                    "--set", f"train.data={data}",
                                    "--set", f"train.output={cluster.work / ('model_' + backend)}")
        apps[backend] = finished_app(cluster, "deepfm-train")
    score_args = ["--set", f"score.model={cluster.work / 'model_torch'}", "--set", f"score.input_path={logs}",
                  "--set", f"score.output={cluster.work / 'scores'}"]
    summaries["score"] = submit(cluster, "score", "--run-date", run_date, *score_args)
    apps["score"] = finished_app(cluster, f"deepfm-score-{run_date}")
    summaries["evaluate"] = submit(cluster, "evaluate", "--set", f"evaluate.model={cluster.work / 'model_torch'}",
                                   "--set", f"evaluate.data={data / 'test'}",
                                   "--set", f"evaluate.output={cluster.work / 'report'}")
    apps["evaluate"] = finished_app(cluster, "deepfm-evaluate")
    return {"summaries": summaries, "apps": apps, "data": data, "run_date": run_date,
            "preprocess_args": preprocess_args, "score_args": score_args}


def test_every_stage_runs_on_the_cluster_from_the_shipped_environment(cluster, pipeline):
    assert not cluster.worker_sees(REPO_ROOT / "pyproject.toml")
    assert not cluster.worker_sees(VENV / "bin" / "python")
    assert cluster.worker_sees(cluster.work)
    summaries, apps = pipeline["summaries"], pipeline["apps"]
    assert summaries["preprocess"]["rows"] == {"input": 10_000, "accepted": 10_000, "rejected": 0}
    for backend in ("torch", "horovod"):
        summary = summaries[backend]
        assert summary["workers"] == 2 and summary["test"]["auc"] > 0.6, summary
        # Rank 0's progress, logged in an executor, reaches the driver's log.
        assert "deepfm.train: epoch 2: train loss" in summary["log"] and "test AUC" in summary["log"]
        assert "Cleared scope" not in summary["log"]  # Horovod's rendezvous chatter is filtered
        assert (cluster.work / f"model_{backend}" / summary["version"] / "model.pt").is_file()
    assert summaries["score"]["rows"] == 10_000
    assert summaries["evaluate"]["overall"]["auc"] > 0.6

    # Each application ran executors on the worker, from the unpacked archive's interpreter.
    for stage, app in apps.items():
        executors = cluster.executor_dirs(app["id"])
        assert executors, f"{stage}: no executor ran for {app['id']}"
        assert any((d / "env" / "bin" / "python").exists() for d in executors), f"{stage}: archive not unpacked"
        assert "Finished task" in cluster.executor_logs(app["id"]) or "Running task" in cluster.executor_logs(
            app["id"]), stage
    assert len({a["id"] for a in apps.values()}) == len(apps)


class ExecutorKiller(threading.Thread):
    """SIGKILLs the first executor JVM of application `app_name` once its log shows `after_tasks`
    tasks started: a lost executor, as when a node dies, in the middle of the job."""

    def __init__(self, cluster: StandaloneCluster, app_name: str, after_tasks: int):
        super().__init__(daemon=True)
        self.cluster, self.app_name, self.after_tasks = cluster, app_name, after_tasks
        self.killed: dict | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set() and self.killed is None:
            for app in self.cluster.state().get("activeapps", []):
                if app["name"] == self.app_name:
                    self._maybe_kill(app["id"])
            time.sleep(0.05)

    def _maybe_kill(self, app_id: str) -> None:
        started = self.cluster.executor_logs(app_id).count("Running task")
        if started < self.after_tasks:
            return
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError):
                continue
            if b"org.apache.spark.executor.CoarseGrainedExecutorBackend" in cmdline and app_id.encode() in cmdline:
                os.kill(int(proc.name), signal.SIGKILL)
                self.killed = {"app": app_id, "pid": int(proc.name), "tasks_started": started}
                return


def submit_with_a_lost_executor(cluster: StandaloneCluster, app_name: str, after_tasks: int, stage: str,
                                *args: str) -> dict:
    killer = ExecutorKiller(cluster, app_name, after_tasks)
    killer.start()
    try:
        summary = submit(cluster, stage, *args)
    finally:
        killer.done.set()
        killer.join()
    assert killer.killed is not None, f"{stage} finished before {after_tasks} tasks started: nothing was killed"
    app = finished_app(cluster, app_name)
    assert app["id"] == killer.killed["app"]
    # The worker launched a replacement executor, and Spark re-ran the lost executor's work on it.
    assert len(cluster.executor_dirs(app["id"])) >= 2, cluster.executor_dirs(app["id"])
    return summary


def _rows(path: Path, drop: tuple[str, ...] = ()) -> list[tuple]:
    """A Parquet directory's rows in a canonical order (Spark keeps none), less `drop`."""
    table = pq.read_table(path)
    table = table.drop([c for c in drop if c in table.column_names])
    return sorted((tuple(row.values()) for row in table.to_pylist()), key=repr)


def test_an_executor_killed_mid_job_is_replaced_and_the_output_equals_an_undisturbed_run(cluster, pipeline):
    calm, disturbed = pipeline["data"], cluster.work / "criteo_lost"
    args = [*pipeline["preprocess_args"], "--set", f"preprocess.output={disturbed}"]
    summary = submit_with_a_lost_executor(cluster, "deepfm-preprocess", 6, "preprocess", *args)
    assert summary["rows"] == {"input": 10_000, "accepted": 10_000, "rejected": 0}
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (calm, disturbed)]
    for key in ("feature_map", "rows", "vocab", "vocab_sizes"):
        assert manifests[0][key] == manifests[1][key], key
    for split in ("train", "valid", "test", "vocab"):
        assert _rows(calm / split) == _rows(disturbed / split), split

    summary = submit_with_a_lost_executor(cluster, "deepfm-score-2026-11-28", 2, "score", "--run-date", "2026-11-28",
                                          *pipeline["score_args"])
    assert summary["rows"] == 10_000
    scores = cluster.work / "scores"
    calm_scores = _rows(scores / f"run_date={pipeline['run_date']}", drop=("scored_at",))
    assert len(calm_scores) == 10_000
    assert calm_scores == _rows(scores / "run_date=2026-11-28", drop=("scored_at",))
