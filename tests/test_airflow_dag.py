"""The daily DAG run for real: `airflow dags test` (SQLite metadata, in-process execution) of
dags/deepfm_daily.py on the embedded Criteo sample, for consecutive dates, and a run killed in
train. Needs .venv-airflow (`make test-airflow` makes it)."""

import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import CRITEO_SAMPLE, REPO_ROOT

pytestmark = pytest.mark.airflow

AIRFLOW = Path(os.environ.get("AIRFLOW_VENV", REPO_ROOT / ".venv-airflow")) / "bin" / "airflow"
# Every date reads the same sample: the promotion gate, which would judge a day's model against the
# same rows' noise, has a test of its own below, on a stream that drifts.
SHORT_TRAINING = f"--set dataset.input.path={CRITEO_SAMPLE} --set train.epochs=1 --set promote.gate=false"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    if not AIRFLOW.exists():
        pytest.fail(f"{AIRFLOW} not found: run `make test-airflow` (it installs Airflow first)")
    home, work = tmp_path_factory.mktemp("airflow_home"), tmp_path_factory.mktemp("airflow_work")
    # Without MLFLOW_TRACKING_URI (the tests' own store), the runs track to the default: ./mlruns.
    inherited = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env = {**inherited, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "DEEPFM_HOME": str(REPO_ROOT), "DEEPFM_WORKDIR": str(work),
           "DEEPFM_ARGS": SHORT_TRAINING}
    migrated = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, text=True)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return env, work / "out" / "daily"


def _logical_date(run_date: str) -> str:
    """The logical date of the manual run that processes `run_date`: the day after, when it is over."""
    return (dt.date.fromisoformat(run_date) + dt.timedelta(days=1)).isoformat()


def _dags_test(env, run_date: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(AIRFLOW), "dags", "test", "deepfm_daily", _logical_date(run_date)], env=env,
                          capture_output=True, text=True)


SCHEDULED_CONTEXT = """
import json, sys
from datetime import datetime, timezone
sys.path.insert(0, sys.argv[1])
import deepfm_daily
from airflow.timetables.base import DataInterval, TimeRestriction
dag = deepfm_daily.dag
hour = int(sys.argv[2])
last = DataInterval(datetime(2026, 12, 1, hour, tzinfo=timezone.utc), datetime(2026, 12, 2, hour, tzinfo=timezone.utc))
# catchup=True: the run after `last`, whatever today is (catchup=False would skip to today's).
info = dag.timetable.next_dagrun_info(last_automated_data_interval=last,
                                      restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=True))
context = {"data_interval_start": info.data_interval.start, "data_interval_end": info.data_interval.end,
           "logical_date": info.logical_date}
print(json.dumps({"run_after": info.run_after.isoformat(), "run_date": deepfm_daily.run_date_of(context)}))
"""


@pytest.mark.parametrize(("schedule", "run_after"), [
    (None, "2026-12-03T00:00:00+00:00"), ("0 3 * * *", "2026-12-03T03:00:00+00:00")])
def test_a_scheduled_run_processes_the_day_that_is_over_not_the_day_it_starts(airflow, schedule, run_after):
    """The context of the scheduled run after the one of 2026-12-01, as the DAG's own timetable
    makes it: it starts on 2026-12-03 and processes 2026-12-02 (under Airflow 3's default cron
    timetable its {{ ds }} would be 2026-12-03, a day still being logged)."""
    env, _ = airflow
    env = {**env, **({"DEEPFM_SCHEDULE": schedule} if schedule else {})}
    hour = dt.datetime.fromisoformat(run_after).hour
    result = subprocess.run([str(AIRFLOW.parent / "python"), "-c", SCHEDULED_CONTEXT, str(REPO_ROOT / "dags"),
                             str(hour)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"run_after": run_after, "run_date": "2026-12-02"}


def _check_dated_outputs(out: Path, run_date: str) -> None:
    prep = out / "criteo" / f"run_date={run_date}"
    assert (prep / "_SUCCESS").exists()
    manifest = json.loads((prep / "manifest.json").read_text())
    assert manifest["rows"]["accepted"] == 10_000
    version = out / "models" / "criteo" / run_date
    record = json.loads((version / "version.json").read_text())
    assert record["run_date"] == run_date and record["data"] == str(prep)
    scores = out / "scores" / f"run_date={run_date}"
    assert (scores / "_SUCCESS").exists() and pq.read_table(scores).num_rows == 10_000
    report = json.loads((out / "reports" / f"run_date={run_date}" / "metrics.json").read_text())
    assert report["overall"]["rows"] == manifest["rows"]["splits"]["test"]["rows"]
    assert report["overall"]["auc"] == pytest.approx(record["test"]["auc"], abs=1e-6)  # the same model, same split


def _mlflow(out: Path):
    """The client of the default MLflow store: ./mlruns in the DAG's working directory."""
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{out.parents[1] / 'mlruns' / 'mlflow.db'}")


def _tracked_runs(out: Path, run_date: str) -> list:
    """The MLflow runs of a date's model version."""
    experiment = _mlflow(out).get_experiment_by_name("deepfm")
    if experiment is None:
        return []
    return _mlflow(out).search_runs([experiment.experiment_id], f"tags.`deepfm.run_date` = '{run_date}'")


def _check_tracked(out: Path, run_date: str) -> None:
    runs = _tracked_runs(out, run_date)
    assert len(runs) == 1, f"{len(runs)} MLflow runs for {run_date}"
    run = runs[0]
    record = json.loads((out / "models" / "criteo" / run_date / "version.json").read_text())
    assert run.data.metrics["test_auc"] == pytest.approx(record["test"]["auc"])
    assert run.data.metrics["eval_auc"] == pytest.approx(record["test"]["auc"], abs=1e-6)  # evaluate's report
    assert "report/report.html" in {a.path for a in _mlflow(out).list_artifacts(run.info.run_id, "report")}


# The killed run continues the dates of the test before it: one xdist process runs both, in this order.
@pytest.mark.xdist_group("criteo_dates")
def test_daily_runs_write_dated_outputs_and_advance_the_model_version(airflow):
    env, out = airflow
    first = _dags_test(env, "2026-11-27")
    assert first.returncode == 0, (first.stdout + first.stderr)[-5000:]
    _check_dated_outputs(out, "2026-11-27")
    _check_tracked(out, "2026-11-27")
    models = out / "models" / "criteo"
    assert (models / "LATEST").read_text().strip() == "2026-11-27"

    second = _dags_test(env, "2026-11-28")
    assert second.returncode == 0, (second.stdout + second.stderr)[-5000:]
    _check_dated_outputs(out, "2026-11-28")
    _check_tracked(out, "2026-11-28")
    assert (models / "LATEST").read_text().strip() == "2026-11-28"
    assert sorted(p.name for p in models.iterdir()) == ["2026-11-27", "2026-11-28", "LATEST"]


@pytest.mark.xdist_group("criteo_dates")
def test_a_run_killed_in_train_leaves_latest_on_the_previous_version_and_a_rerun_continues_it(airflow):
    env, out = airflow
    models = out / "models" / "criteo"
    assert (models / "LATEST").read_text().strip() == "2026-11-28"  # the dates before ran (test above)
    slow = {**env, "DEEPFM_ARGS": f"{SHORT_TRAINING} --set train.batch_size=64 --set train.checkpoint_every_steps=5"}
    proc = subprocess.Popen([str(AIRFLOW), "dags", "test", "deepfm_daily", _logical_date("2026-11-29")], env=slow,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = models / ".building-2026-11-29" / "checkpoint.pt"
    try:
        deadline = time.time() + 900
        while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert checkpoint.exists(), "train never wrote a checkpoint"
    finally:
        _kill_everything_started_with(slow["DEEPFM_WORKDIR"], proc)
    assert (models / "LATEST").read_text().strip() == "2026-11-28"
    assert not (models / "2026-11-29").exists()
    assert _tracked_runs(out, "2026-11-29") == []  # a run is logged only for a committed version

    rerun = _dags_test(slow, "2026-11-29")  # as a retry would: the same input and config
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-5000:]
    # train continued from the killed run's checkpoint instead of starting over (--resume auto)
    assert "continuing the interrupted run of model version 2026-11-29" in rerun.stdout + rerun.stderr
    _check_dated_outputs(out, "2026-11-29")
    _check_tracked(out, "2026-11-29")
    assert (models / "LATEST").read_text().strip() == "2026-11-29"
    assert not list(models.glob(".building-*"))


def _kill_everything_started_with(workdir: str, proc: subprocess.Popen) -> None:
    """SIGKILL the DAG run and every process it started (the task runner, spark-submit, the
    training process): all of them, and only they, carry this run's DEEPFM_WORKDIR."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    marker = f"DEEPFM_WORKDIR={workdir}".encode()
    for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()):
        try:
            if marker in (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0"):
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass


FAILURE_HOOK = """
import json, os

def record(context):
    ti = context["ti"]
    with open(os.environ["DEEPFM_TEST_HOOK_OUT"], "a") as out:
        record = {"task": ti.task_id, "try": ti.try_number, "error": str(context.get("exception"))}
        out.write(json.dumps(record) + "\\n")
"""


def test_a_stage_failing_on_bad_configuration_is_not_retried_and_calls_the_failure_hook(airflow, tmp_path):
    env, out = airflow
    (tmp_path / "deepfm_alerts.py").write_text(FAILURE_HOOK)
    calls = tmp_path / "calls.jsonl"
    failing = {**env, "DEEPFM_ARGS": f"{SHORT_TRAINING} --set train.epochz=1",
               "DEEPFM_ON_FAILURE": "deepfm_alerts:record", "DEEPFM_TEST_HOOK_OUT": str(calls),
               "PYTHONPATH": str(tmp_path)}
    result = _dags_test(failing, "2026-11-20")
    assert result.returncode != 0, (result.stdout + result.stderr)[-5000:]
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [(r["task"], r["try"]) for r in recorded] == [("next-day", 1)], recorded  # once: exit 2 is not retried
    assert "train.epochz (set in --set train.epochz=1): unknown key; did you mean 'train.epochs'?" in \
        recorded[0]["error"], recorded
    assert not (out / "criteo" / "run_date=2026-11-20").exists()

    wrong = {**env, "DEEPFM_ON_FAILURE": "deepfm_alerts:no_such_function", "PYTHONPATH": str(tmp_path)}
    parsed = subprocess.run([str(AIRFLOW), "dags", "reserialize"], env=wrong, capture_output=True, text=True)
    errors = subprocess.run([str(AIRFLOW), "dags", "list-import-errors", "-o", "json"], env=wrong,
                            capture_output=True, text=True)
    shown = parsed.stdout + parsed.stderr + errors.stdout + errors.stderr
    assert "DEEPFM_ON_FAILURE='deepfm_alerts:no_such_function': deepfm_alerts has no function 'no_such_function'" \
        in shown, shown[-3000:]


def test_four_dates_of_a_drifting_stream_warm_start_gate_and_stop_on_a_field_emptied_overnight(airflow, tmp_path):
    """The DAG as daily operation runs it (conf/schedule/daily.yaml): next-day evaluation, drift checks,
    warm start and the promotion gate, over four dates of the drifting stream whose third day lost a field."""
    from deepfm.config import GenerateConfig
    from pipelines.drift import generate_stream

    env, _ = airflow
    raw, work = tmp_path / "raw", tmp_path / "work"
    generate_stream(GenerateConfig(output=str(raw), rows=20_000, days=4, cardinality_scale=0.01,
                                   start_date="2026-11-01",
                                   drift={"broken_day": "2026-11-03", "broken": "empty_field", "broken_field": "C3"}))
    work.mkdir()
    stream = {**env, "DEEPFM_WORKDIR": str(work),
              "DEEPFM_CONF": "conf/base.yaml conf/datasets/drifting.yaml conf/env/local.yaml conf/schedule/daily.yaml",
              # A model that learns in seconds: a few hundred values a field, 16k training rows a day.
              "DEEPFM_ARGS": f"--set dataset.input.path={raw}/dt={{run_date}} --set train.epochs=3 "
                             "--set train.batch_size=512 --set train.model.hidden=[64] "
                             "--set preprocess.vocab.min_count=2 --set promote.max_auc_drop=0.02"}
    out = work / "out" / "daily"
    models = out / "models" / "criteo"
    for run_date in ("2026-11-01", "2026-11-02"):
        run = _dags_test(stream, run_date)
        assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
        assert (models / "LATEST").read_text().strip() == run_date
    second = json.loads((models / "2026-11-02" / "version.json").read_text())
    assert second["warm_start"]["version"] == "2026-11-01" and second["promotion"]["decision"] == "promoted"
    assert [j["rows"].rsplit("=", 1)[-1] for j in second["promotion"]["judged"]] == ["2026-11-02", "2026-11-01"]

    broken = _dags_test(stream, "2026-11-03")
    assert broken.returncode != 0
    assert "drift check: field C3 is missing in 100.0% of the training rows" in broken.stdout + broken.stderr
    assert not (out / "criteo" / "run_date=2026-11-03").exists() and not (models / "2026-11-03").exists()
    assert (models / "LATEST").read_text().strip() == "2026-11-02"

    fourth = _dags_test(stream, "2026-11-04")
    assert fourth.returncode == 0, (fourth.stdout + fourth.stderr)[-5000:]
    record = json.loads((models / "2026-11-04" / "version.json").read_text())
    assert record["warm_start"]["version"] == "2026-11-02" and record["promotion"]["decision"] == "promoted"
    assert (models / "LATEST").read_text().strip() == "2026-11-04"
    # The serving version judged on every date after the first, the broken one included (its logs scored as they came).
    history = json.loads((out / "next_day" / "history" / "history.json").read_text())
    assert [(h["run_date"], h["model_version"]) for h in history] == [
        ("2026-11-02", "2026-11-01"), ("2026-11-03", "2026-11-02"), ("2026-11-04", "2026-11-02")]
    assert all(h["auc"] > 0.6 for h in history), history
