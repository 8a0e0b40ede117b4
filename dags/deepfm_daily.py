"""Daily DeepFM: next-day >> preprocess >> train >> score >> evaluate, each a `spark-submit.sh STAGE --run-date D`.

next-day judges the version serving on D's logs before anything trains on them (progressive
validation); preprocess checks D's data for drift against the day before and the serving model;
train warm-starts from the serving version, and its promotion gate decides whether the new version
serves (conf/schedule/daily.yaml, docs/training.md).

D, the run date, is the day whose logs a run processes: the date (UTC) its data interval starts.
The schedule is an explicit CronDataIntervalTimetable, so the run at 2026-12-03T00:00 has the
interval [2026-12-02, 2026-12-03) and processes 2026-12-02, a day that is over; a manual run for
2026-12-03 (`airflow dags test deepfm_daily 2026-12-03`) does the same. Airflow 3's default for a
cron schedule, CronTriggerTimetable, gives a run an empty interval at its own start, so its
`{{ ds }}` is the day still being logged.

Every stage writes under the run's logical date (conf/schedule/daily.yaml), so a rerun or a
backfill of a date replaces that date's outputs and nothing else; train commits a new model
version and moves LATEST only once the version is complete. Exit codes decide retries: 2 (bad
input or configuration) fails the task at once, 1 (transient or internal) is retried, and 3 (train:
the promotion gate turned the new version down, LATEST stays) fails it at once as a failed gate. Train runs
with `--resume auto`: a retry, or a rerun of a killed run, continues from the checkpoint the killed
run left when its input and config are the same, instead of training again from the first step.

Set on the Airflow workers (docs/airflow.md):
  DEEPFM_HOME     the project checkout, set up by `make setup` (default: the folder above this file)
  DEEPFM_WORKDIR  where the relative paths of the configuration land (default: DEEPFM_HOME)
  DEEPFM_CONF     the --conf files, space-separated (default: base, criteo, local, schedule/daily)
  DEEPFM_ARGS     more arguments for every stage, e.g. "--set train.workers=2"
  DEEPFM_SCHEDULE the cron schedule (default @daily); a later hour (0 3 * * *) leaves late logs time
                  to land, and the run still processes the day its interval starts on
  DEEPFM_TASK_TIMEOUT_H  hours a stage may run before Airflow stops it (default 6)
  DEEPFM_POOL     the Airflow pool the stages run in (default default_pool)
  DEEPFM_ON_FAILURE  module:function called when a stage fails for good (after its retries, or at once
                  for exit 2), with Airflow's context: context["exception"] holds the stage's error
                  line, context["ti"] the task. The module must be importable by the Airflow workers
                  (a plugin, or on PYTHONPATH); e.g. a function that pages or posts to a channel
  SPARK_MASTER, SPARK_DEPLOY_MODE, DEEPFM_SHIP_ENV ...   as spark-submit.sh reads them
"""

from __future__ import annotations

import importlib
import logging
import os
import shlex
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.sdk import DAG, chain, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.timetables.interval import CronDataIntervalTimetable

STAGES = ("next-day", "preprocess", "train", "score", "evaluate")
DEFAULT_CONF = "conf/base.yaml conf/datasets/criteo.yaml conf/env/local.yaml conf/schedule/daily.yaml"
DO_NOT_RETRY = 2  # deepfm-pipeline's exit code for bad input or configuration (docs/stages.md, "Exit codes")
GATE_REJECTED = 3  # train's exit code when the promotion gate turned the new version down: LATEST stays

log = logging.getLogger(__name__)


def stage_command(stage: str, run_date: str) -> tuple[list[str], Path]:
    home = Path(os.environ.get("DEEPFM_HOME") or Path(__file__).resolve().parents[1])
    conf = [arg for name in os.environ.get("DEEPFM_CONF", DEFAULT_CONF).split() for arg in ("--conf", name)]
    command = [str(home / "spark-submit.sh"), stage, "--run-date", run_date, *conf,
               *(["--resume", "auto"] if stage == "train" else []), *shlex.split(os.environ.get("DEEPFM_ARGS", ""))]
    return command, Path(os.environ.get("DEEPFM_WORKDIR") or home)


def failure_hook():
    """DEEPFM_ON_FAILURE's function, or None. A wrong name fails the DAG's import, where Airflow
    shows it (`airflow dags list-import-errors`), rather than at the first failure it should report."""
    spec = os.environ.get("DEEPFM_ON_FAILURE", "").strip()
    if not spec:
        return None
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"DEEPFM_ON_FAILURE={spec!r}: give module:function, e.g. alerts.deepfm:page_oncall")
    hook = getattr(importlib.import_module(module), name, None)
    if not callable(hook):
        raise ValueError(f"DEEPFM_ON_FAILURE={spec!r}: {module} has no function {name!r}")
    return hook


def run_date_of(context) -> str:
    """The day whose logs a run processes: the UTC date its data interval starts (module docstring)."""
    return context["data_interval_start"].astimezone(timezone.utc).date().isoformat()


def run_stage(stage: str) -> None:
    run_date = run_date_of(get_current_context())
    command, workdir = stage_command(stage, run_date)
    log.info("running %s (in %s)", shlex.join(command), workdir)
    proc = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    error: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:  # the stage's log becomes the task's log, line by line
            log.info("%s", line.rstrip())
            if line.startswith((f"deepfm-pipeline {stage}: error:", "spark-submit.sh: error:")):
                error = [line.strip()]
            elif error and line.startswith((" ", "\t")):  # an error of several lines (each key of a config)
                error.append(line.strip())
        code = proc.wait()
    finally:  # the task timed out or was stopped: the stage must not run on without it
        if proc.poll() is None:
            proc.terminate()
    error_text = " ".join(error)
    if code == GATE_REJECTED:
        raise AirflowFailException(f"{stage} for {run_date}: the promotion gate turned the new model version down and "
                                   f"LATEST stays on the serving one, not retried: {error_text} (look into the day's "
                                   "data; `--promote force` promotes it)")
    if code == DO_NOT_RETRY:
        raise AirflowFailException(f"{stage} for {run_date}: bad input or configuration, not retried: {error_text} "
                                   "(fix it, then clear this task)")
    if code != 0:
        raise AirflowException(f"{stage} for {run_date} exited {code}: {error_text or 'see the log'} (retried)")


with DAG(
    dag_id="deepfm_daily",
    description="DeepFM click-through-rate model: preprocess, train a dated version, score, evaluate",
    schedule=CronDataIntervalTimetable(os.environ.get("DEEPFM_SCHEDULE", "@daily"), timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,  # runs share the model root: one train at a time
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5), "retry_exponential_backoff": True,
                  "execution_timeout": timedelta(hours=float(os.environ.get("DEEPFM_TASK_TIMEOUT_H", "6"))),
                  "pool": os.environ.get("DEEPFM_POOL", "default_pool"), "on_failure_callback": failure_hook()},
    tags=["deepfm"],
) as dag:
    chain(*[task(task_id=stage)(run_stage)(stage) for stage in STAGES])
