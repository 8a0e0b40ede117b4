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
INSTALLER = REPO_ROOT / "dist" / "install_worker_env.sh"
APP_DATA_TTL_S = 60
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
    # Worker cleanup as docs/cluster.md advises, with an interval and TTL of seconds instead of hours.
    cluster = StandaloneCluster(work, hidden, cleanup_interval_s=5, app_data_ttl_s=APP_DATA_TTL_S).start()
    yield cluster
    cluster.stop()


def submit_process(cluster: StandaloneCluster, stage: str, *args: str, worker_env: Path | None = None,
                   executor_memory: str = "3g"):
    """One stage through spark-submit.sh on the cluster: with the shipped environment, or with the one
    installed on the worker at `worker_env`."""
    env = {**CLI_ENV, "SPARK_MASTER": cluster.master_url,
           "SPARK_SUBMIT_ARGS": f"--executor-memory {executor_memory} --conf spark.ui.showConsoleProgress=false",
           **({"DEEPFM_WORKER_ENV": str(worker_env)} if worker_env else {"DEEPFM_SHIP_ENV": str(ARCHIVE)})}
    env.pop("PYSPARK_PYTHON", None)
    started = time.monotonic()
    result = run_cli([str(REPO_ROOT / "spark-submit.sh"), stage, *args], env=env, cwd=cluster.work)
    result.wall_s = time.monotonic() - started
    return result


def submit(cluster: StandaloneCluster, stage: str, *args: str, worker_env: Path | None = None) -> dict:
    """A stage that must succeed; its summary, log and wall time."""
    result = submit_process(cluster, stage, *args, worker_env=worker_env)
    log = result.stdout + result.stderr  # spark-submit merges the Python driver's stderr into stdout
    assert result.returncode == 0, f"{stage} failed:\n{log[-6000:]}"
    assert "Traceback" not in log, log[-6000:]
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "log": log, "wall_s": result.wall_s}


def finished_app(cluster: StandaloneCluster, name: str) -> dict:
    """The application's record at the master, with what it left on the worker, read at once (the
    worker's cleanup removes it APP_DATA_TTL_S later)."""
    apps = [a for a in cluster.state()["completedapps"] if a["name"] == name]
    assert apps, f"no application {name} at the master: {[a['name'] for a in cluster.state()['completedapps']]}"
    app = apps[-1]
    assert app["state"] == "FINISHED", app
    executors = cluster.executor_dirs(app["id"])
    return {**app, "executors": len(executors), "left_mb": cluster.app_dir_bytes(app["id"]) / 2**20,
            "unpacked": any((d / "env" / "bin" / "python").exists() for d in executors),
            "ran_tasks": any(t in cluster.executor_logs(app["id"]) for t in ("Finished task", "Running task"))}


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
        assert "deepfm.training.train: epoch 2: train loss" in summary["log"] and "test AUC" in summary["log"]
        assert "Cleared scope" not in summary["log"]  # Horovod's rendezvous chatter is filtered
        assert (cluster.work / f"model_{backend}" / summary["version"] / "model.pt").is_file()
    assert summaries["score"]["rows"] == 10_000
    assert summaries["evaluate"]["overall"]["auc"] > 0.6

    # Each application ran executors on the worker, from the unpacked archive's interpreter.
    for stage, app in apps.items():
        assert app["executors"] and app["ran_tasks"], f"{stage}: no executor ran tasks for {app['id']}"
        assert app["unpacked"], f"{stage}: archive not unpacked"
    assert len({a["id"] for a in apps.values()}) == len(apps)
    print(json.dumps({"left_on_worker_mb": {s: round(a["left_mb"]) for s, a in apps.items()},
                      "wall_s": {s: round(summaries[s]["wall_s"], 1) for s in summaries}}))


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
    assert app["executors"] >= 2, app
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


@pytest.fixture(scope="module")
def worker_env(cluster):
    """The archive installed on the worker once, as an operator would with dist/install_worker_env.sh."""
    dest = cluster.work / "worker-envs"
    installed = run_cli(["bash", str(INSTALLER), str(ARCHIVE), str(dest)], env=CLI_ENV)
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert (dest / "current" / "bin" / "python").exists() and cluster.worker_sees(dest / "current" / "bin" / "python")
    again = run_cli(["bash", str(INSTALLER), str(ARCHIVE), str(dest)], env=CLI_ENV)  # idempotent
    assert again.returncode == 0 and "already installed" in again.stderr, again.stderr
    assert len([p for p in dest.iterdir() if p.is_dir() and not p.is_symlink()]) == 1
    return dest / "current"


def test_a_stage_runs_from_the_environment_installed_on_the_worker_without_unpacking(cluster, pipeline, worker_env):
    """Also with score.tables=mapped: the weight files reach the executor by SparkContext.addFile and
    are memory-mapped there, where the shipped run had them broadcast."""
    run_date = "2026-11-29"
    summary = submit(cluster, "score", "--run-date", run_date, *pipeline["score_args"], "--set", "score.tables=mapped",
                     worker_env=worker_env)
    assert summary["rows"] == 10_000
    app = finished_app(cluster, f"deepfm-score-{run_date}")
    mapped = [p.name for d in cluster.executor_dirs(app["id"]) for p in d.glob("*-model.pt")]
    assert app["ran_tasks"] and not app["unpacked"], app
    assert app["left_mb"] < 50, app  # executor logs and the (small) model's added files only
    assert mapped and "executors map the model's" in summary["log"], mapped
    # Scores equal the shipped environment's, row for row.
    scores = cluster.work / "scores"
    assert _rows(scores / f"run_date={run_date}", drop=("scored_at",)) == _rows(
        scores / f"run_date={pipeline['run_date']}", drop=("scored_at",))
    shipped = pipeline["apps"]["score"]
    print(json.dumps({"score": {"worker_env": {"wall_s": round(summary["wall_s"], 1), "left_mb": round(app["left_mb"])},
                                "shipped": {"wall_s": round(pipeline["summaries"]["score"]["wall_s"], 1),
                                            "left_mb": round(shipped["left_mb"])}}}))


def test_executors_running_other_code_than_the_driver_stop_the_stage_with_exit_2(cluster, pipeline, worker_env):
    """A worker's environment installed from an older build: the stage stops before any work, naming it."""
    installed = worker_env.resolve()
    module = next(installed.glob("lib/python*/site-packages/pipelines/score.py"))
    original = module.read_bytes()
    module.write_bytes(original + b"\n# an older build\n")
    try:
        result = submit_process(cluster, "score", "--run-date", "2026-11-30", *pipeline["score_args"],
                                worker_env=worker_env)
    finally:
        module.write_bytes(original)
    log = result.stdout + result.stderr
    assert result.returncode == 2, log[-4000:]
    assert f"the executors' Python environment {worker_env} on " in log and "holds other code" in log, log[-4000:]
    assert "Traceback" not in log
    assert not (cluster.work / "scores" / "run_date=2026-11-30").exists()

    missing = submit_process(cluster, "score", "--run-date", "2026-11-30", *pipeline["score_args"],
                             worker_env=cluster.work / "no-such-env")
    log = missing.stdout + missing.stderr
    assert missing.returncode == 2, log[-4000:]
    assert f"spark.pyspark.python={cluster.work / 'no-such-env'}/bin/python: the executors cannot run it" in log, \
        log[-4000:]


def test_a_cluster_without_room_for_the_executors_fails_as_transient_after_the_wait(cluster, pipeline):
    """Executors asking for more memory than the worker has are never launched, and Spark would wait
    for them forever: the stage gives up after spark.executor_wait_s with exit 1, for a retry."""
    result = submit_process(cluster, "score", "--run-date", "2026-11-30", *pipeline["score_args"],
                            "--set", "spark.executor_wait_s=20", executor_memory="16g")
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-4000:]
    assert "no executor ran the stage's first tasks in 20 s (spark.executor_wait_s)" in log, log[-4000:]
    assert "spark.executor.memory=16g" in log and "Traceback" not in log
    assert not (cluster.work / "scores" / "run_date=2026-11-30").exists()


def test_the_workers_cleanup_leaves_nothing_of_a_days_applications(cluster, pipeline):
    """What each stage unpacked (about 1.4 GB per executor) is gone once the worker's cleanup has seen
    the application finished for APP_DATA_TTL_S. Last in the module, so that the tests before it run
    while the TTL passes."""
    assert all(app["left_mb"] > 500 for app in pipeline["apps"].values()), pipeline["apps"]
    deadline = time.monotonic() + APP_DATA_TTL_S + 60
    while time.monotonic() < deadline and any((cluster.worker_dir / a["id"]).exists()
                                              for a in pipeline["apps"].values()):
        time.sleep(5)
    left = {stage: cluster.app_dir_bytes(app["id"]) for stage, app in pipeline["apps"].items()}
    assert not any((cluster.worker_dir / a["id"]).exists() for a in pipeline["apps"].values()), left
