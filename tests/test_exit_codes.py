"""The exit-code contract schedulers act on: 2 is never retried (fix the input or configuration),
1 is retried (a transient or internal failure)."""

from __future__ import annotations

import socket

import pytest

from deepfm.config import ConfigError
from deepfm.errors import exit_code
from deepfm.storage.location import UnsupportedFileSystemError
from tests.conftest import CLI, CLI_ENV, run_cli
from tests.s3server import CREDENTIALS


@pytest.mark.parametrize(("error", "code"), [
    (ConfigError("train.lr: must be > 0"), 2),
    (UnsupportedFileSystemError("nosuchfs://x"), 2),
    (FileNotFoundError("/data/in not found"), 2),
    (PermissionError("/data/out"), 2),
    (NotADirectoryError("/data/out"), 2),
    (ConnectionResetError("reset by peer"), 1),
    (TimeoutError("timed out"), 1),
    (OSError("AWS Error NETWORK_CONNECTION during HeadObject operation"), 1),
    (KeyError("a bug"), 1),
])
def test_user_errors_exit_2_transient_and_internal_ones_1(error, code):
    assert exit_code(error) == code


def test_an_object_store_that_does_not_answer_exits_1_for_a_retry(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: connection refused, as when a store is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**CLI_ENV, **CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    result = run_cli([*CLI, "train", "--set", "train.data=s3://deepfm/prep",
                      "--set", f"train.output={tmp_path / 'model'}"], env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "'prep/manifest.json' in bucket 'deepfm'" in lines[0] and "retry" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "model").exists()


def test_resume_without_a_checkpoint_exits_2_naming_it(tmp_path):
    result = run_cli([*CLI, "train", "--resume", "--set", f"train.data={tmp_path / 'prep'}",
                      "--set", f"train.output={tmp_path / 'model'}"])
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{tmp_path / 'model'} holds no interrupted run to --resume" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_on_predictions_that_do_not_exist_exits_2_naming_the_path(tmp_path):
    missing = tmp_path / "no-predictions"
    result = run_cli([*CLI, "evaluate", "--set", "spark.master=local[1]", "--set", "evaluate.data=null",
                      "--set", "evaluate.model=null",
                      "--set", f"evaluate.predictions={missing}", "--set", f"evaluate.output={tmp_path / 'report'}"])
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and str(missing) in lines[0] and "PATH_NOT_FOUND" in lines[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "report").exists()


def test_a_damaged_manifest_exits_2_naming_the_file(tmp_path):
    prep = tmp_path / "prep"
    prep.mkdir()
    (prep / "manifest.json").write_text('{"feature_map": {"fields": [')  # cut short
    result = run_cli([*CLI, "train", "--set", f"train.data={prep}", "--set", f"train.output={tmp_path / 'model'}"])
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{prep / 'manifest.json'} is not a readable preprocess manifest" in result.stderr
    assert "--force" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("setting", "expected"), [
    # Spark's own reason follows in brackets, worded apart by Spark 3.5 and 4
    ("spark.conf.spark.sql.shuffle.partitions=abc",
     "spark.conf.spark.sql.shuffle.partitions: Spark refused the value 'abc' ("),
    ("spark.master=local[abc]", "spark.master: Spark cannot parse the master URL 'local[abc]'"),
])
def test_a_spark_setting_that_spark_refuses_exits_2_naming_the_key(tmp_path, setting, expected):
    result = run_cli([*CLI, "preprocess", "--set", setting, "--set", f"preprocess.output={tmp_path / 'prep'}"])
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and expected in lines[0], lines
    assert "Traceback" not in result.stderr and not (tmp_path / "prep").exists()
