"""The command line as a user runs it: real subprocesses, real Spark."""

import json
from pathlib import Path

from tests.conftest import CLI, CRITEO_SAMPLE, REPO_ROOT, run_cli

QUIET = ["--set", "spark.conf.spark.ui.showConsoleProgress=false", "--set", "spark.master=local[2]"]


def test_help_lists_stages_and_options():
    top = run_cli([*CLI, "--help"])
    assert top.returncode == 0
    assert "generate" in top.stdout and "preprocess" in top.stdout
    sub = run_cli([*CLI, "preprocess", "--help"])
    assert "--conf FILE" in sub.stdout and "--set KEY.PATH=VALUE" in sub.stdout and "--force" in sub.stdout


def test_config_error_exits_2_naming_the_key():
    result = run_cli([*CLI, "preprocess", "--set", "preprocess.vocab.min_cout=3"])
    assert result.returncode == 2
    assert "preprocess.vocab.min_cout" in result.stderr and "unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_input_exits_2_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-dir"
    result = run_cli([*CLI, "preprocess", *QUIET, "--set", f"dataset.input.path={missing}",
                   "--set", f"preprocess.output={tmp_path / 'out'}"])
    assert result.returncode == 2, result.stderr
    assert str(missing) in result.stderr and "no input files" in result.stderr


def test_generate_cli(tmp_path):
    out = tmp_path / "raw"
    result = run_cli([*CLI, "generate", "--rows", "3000", "--output", str(out)])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["rows"] == 3000
    assert len((out / "part-00000.tsv").read_text().splitlines()) == 3000


def test_spark_submit_runs_preprocess(tmp_path):
    out = tmp_path / "criteo"
    result = run_cli([str(REPO_ROOT / "spark-submit.sh"), "preprocess", *QUIET[:2],
                   "--set", f"preprocess.output={out}", "--set", f"dataset.input.path={CRITEO_SAMPLE}"],
                  )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == {"input": 10_000, "accepted": 10_000, "rejected": 0}
    assert (Path(out) / "_SUCCESS").exists()
