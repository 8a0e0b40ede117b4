"""Shared fixtures: one real local SparkSession for the whole run, and the embedded data."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from deepfm.config import Config

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO_ROOT.parent / "shared" / "data").resolve()
CRITEO_SAMPLE = SHARED_DATA / "criteo" / "criteo_kaggle_head10k.tsv"
OBD_DIR = SHARED_DATA / "obd" / "random"

CRITEO_COLUMNS = [
    {"name": "label", "role": "label"},
    {"names": ["I{1..13}"], "role": "numeric", "dtype": "int", "transform": "log_bucketize"},
    {"names": ["C{1..26}"], "role": "categorical"},
]


# Train and evaluate track to MLflow (./mlruns by default): the tests' runs go to a store of their own.
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='deepfm-tests-mlflow-')}/mlflow.db")

CLI = [sys.executable, "-m", "jobs.cli"]
CLI_ENV = {**os.environ, "PYSPARK_PYTHON": sys.executable, "DEEPFM_SPARK_LOG_LEVEL": "ERROR",
           "DEEPFM_LOG_DIR": tempfile.mkdtemp(prefix="deepfm-tests-spark-logs-")}


def run_cli(args: list[str], **kw: Any) -> subprocess.CompletedProcess:
    """A command as a user runs it (from the repository root unless `cwd` says otherwise); the timeout
    only guards against hangs."""
    kw = {"cwd": REPO_ROOT, "env": CLI_ENV, "timeout": 900, **kw}
    return subprocess.run(args, capture_output=True, text=True, **kw)


def local_spark_session():
    """The tests' Spark: local[2], small shuffles, no UI, UTC."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("deepfm-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.sql.legacy.timeParserPolicy", "CORRECTED")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.maxConcurrentOutputFileWriters", "4")
        .config("spark.driver.memory", "3g")
        .config("spark.driver.extraJavaOptions", "-XX:-DontCompileHugeMethods")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


@pytest.fixture(scope="session")
def spark():
    session = local_spark_session()
    yield session
    session.stop()


def make_config(dataset: dict[str, Any], output: str, **preprocess: Any) -> Config:
    """A validated Config from plain dicts (what YAML would hold)."""
    pre = {"output": output, "vocab": {"min_count": 1}, **preprocess}
    return Config.model_validate({"dataset": copy.deepcopy(dataset), "preprocess": pre})


def criteo_dataset(path: str | Path = CRITEO_SAMPLE, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "criteo",
        "input": {"path": str(path), "format": "tsv", "columns": CRITEO_COLUMNS},
        "split": {"method": "random", "seed": 2017, "train": 0.8, "valid": 0.1, "test": 0.1},
        **overrides,
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the current stack, Petastorm's tests and the `stack_neutral` ones are deselected, not
    skipped: they run, and count, on the named stack. test_config.py checks there that choosing
    Petastorm on the current stack is refused. The stack_neutral tests are slow ones (process
    start-up, killed and resumed workers) whose subject is code that is the same on both stacks:
    checkpoints and commits, output ownership, memory planning, sharded tables, next-day
    orchestration; the Parquet, Arrow and Spark paths they pass through run on the current stack in
    the other tests. Leaving them out there keeps `.ci/run` in its time on a slow machine."""
    from deepfm.stack import carries_petastorm, why_not_petastorm

    named_only = [] if carries_petastorm() else ["stack_neutral"]
    if why_not_petastorm() is not None:
        named_only.append("petastorm")
    kept, deselected = [], []
    for item in items:
        (deselected if any(item.get_closest_marker(m) for m in named_only) else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
