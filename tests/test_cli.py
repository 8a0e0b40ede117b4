"""The command line as a user runs it: real subprocesses, real Spark."""

import json
import shlex
import socket
import threading
import time
from pathlib import Path

import pytest

from deepfm.config import ConfigError
from pipelines.spark import check_master
from tests.conftest import CLI, CLI_ENV, CRITEO_SAMPLE, REPO_ROOT, run_cli

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
    result = run_cli([str(REPO_ROOT / "spark-submit.sh"), "preprocess", "--run-date", "2026-12-01",
                      "--set", f"preprocess.output={out}", "--set", f"dataset.input.path={CRITEO_SAMPLE}"],
                     env={**CLI_ENV, "DEEPFM_PROGRESS_S": "0.5"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == {"input": 10_000, "accepted": 10_000, "rejected": 0}
    assert (Path(out) / "_SUCCESS").exists()
    log = result.stdout + result.stderr  # spark-submit merges the Python driver's stderr into stdout
    assert "app deepfm-preprocess-2026-12-01 (local-" in log  # one application name per stage and day
    # Not a terminal: progress lines from Spark's status tracker, and no console progress bar.
    assert "INFO pipelines: parse inputs and quarantine malformed rows: 0m0" in log and " tasks done, " in log
    assert "[Stage " not in log
    assert "Traceback" not in log


def test_spark_submit_flags_win_over_the_yaml_spark_section(tmp_path):
    # conf/env/local.yaml says local[*] and 8 shuffle partitions; the launcher's flags must win.
    env = {**CLI_ENV, "SPARK_MASTER": "local[1]",
           "SPARK_SUBMIT_ARGS": "--conf spark.app.name=deepfm-precedence-check --conf spark.sql.shuffle.partitions=3"}
    result = run_cli([str(REPO_ROOT / "spark-submit.sh"), "preprocess", "--set", f"preprocess.output={tmp_path / 'o'}",
                      "--set", f"dataset.input.path={CRITEO_SAMPLE}"], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr  # spark-submit merges the Python driver's stderr into stdout
    assert "master local[1], app deepfm-precedence-check" in log
    assert "shuffle partitions 3" in log


def test_spark_submit_dry_run_prints_the_shipped_environment(tmp_path):
    archive = tmp_path / "env.tar.gz"
    archive.write_bytes(b"")
    env = {**CLI_ENV, "SPARK_MASTER": "spark://10.0.0.1:7077"}
    result = run_cli([str(REPO_ROOT / "spark-submit.sh"), "--dry-run", f"--ship-env={archive}", "score",
                      "--run-date", "2026-11-27"], env=env)
    assert result.returncode == 0, result.stderr
    printed = result.stdout
    assert "--master spark://10.0.0.1:7077" in printed and "--deploy-mode client" in printed
    assert f"--archives {archive}#env" in printed
    assert "spark.pyspark.python=./env/bin/python" in printed
    assert printed.rstrip().endswith("jobs/cli.py score --run-date 2026-11-27")


@pytest.mark.parametrize(("extra", "words"), [
    ('--conf "spark.executor.extraJavaOptions=-Xss4m -XX:+UseG1GC" --executor-memory 3g',
     ["--conf", "spark.executor.extraJavaOptions=-Xss4m -XX:+UseG1GC", "--executor-memory", "3g"]),
    ("--conf 'spark.x=a b' --name \"$(touch pwned)\"", ["--conf", "spark.x=a b", "--name", "$(touch pwned)"]),
])
def test_spark_submit_args_are_split_into_shell_words_and_never_run(tmp_path, extra, words):
    result = run_cli([str(REPO_ROOT / "spark-submit.sh"), "--dry-run", "preprocess"],
                     env={**CLI_ENV, "SPARK_SUBMIT_ARGS": extra}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = shlex.split(result.stdout)  # printed with printf %q: one shell word per argument
    start = printed.index(words[0])
    assert printed[start:start + len(words)] == words and printed[start + len(words)].endswith("jobs/cli.py")
    assert not (tmp_path / "pwned").exists()


def test_spark_submit_args_with_unbalanced_quotes_exit_2_naming_them():
    result = run_cli([str(REPO_ROOT / "spark-submit.sh"), "--dry-run", "preprocess"],
                     env={**CLI_ENV, "SPARK_SUBMIT_ARGS": '--conf "a=b'})
    assert result.returncode == 2 and "SPARK_SUBMIT_ARGS: unbalanced quotes" in result.stderr


def test_spark_submit_missing_archive_exits_2_naming_it(tmp_path):
    missing = tmp_path / "nope.tar.gz"
    result = run_cli([str(REPO_ROOT / "spark-submit.sh"), f"--ship-env={missing}", "preprocess"])
    assert result.returncode == 2
    assert str(missing) in result.stderr and "make package" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket closes


@pytest.mark.parametrize(("archive", "code", "named"), [
    ("hdfs://127.0.0.1:{port}/envs/deepfm-env.tar.gz", 1, "(may pass: retry): ConnectException: Call From"),
    ("hdfs://no-such-host.invalid:8020/envs/deepfm-env.tar.gz", 2,
     "(a setting to fix): IllegalArgumentException: java.net.UnknownHostException: no-such-host.invalid"),
])
def test_an_archive_spark_submit_cannot_fetch_is_one_line_with_the_right_exit_code(tmp_path, archive, code, named):
    """spark-submit's own JVM fails before the stage starts: 60+ lines of Java trace go to the run's
    Spark log; the console gets one line, exit 1 for a name node that may come back, 2 for a name to fix."""
    archive = archive.format(port=_free_port())
    spark_log = tmp_path / "submit.spark.log"
    result = run_cli([str(REPO_ROOT / "spark-submit.sh"), f"--ship-env={archive}", "score"], cwd=tmp_path,
                     env={**CLI_ENV, "SPARK_MASTER": "local[1]", "DEEPFM_SPARK_LOG": str(spark_log)})
    seen = (result.stdout + result.stderr).splitlines()
    assert result.returncode == code, seen
    assert f"spark-submit.sh: error: spark-submit stopped before the stage started {named}" in seen[-1]
    assert f"(the trace: {spark_log})" in seen[-1]
    assert len(seen) <= 2 and not any(line.startswith("\tat ") for line in seen), seen  # Hadoop's one WARN at most
    assert spark_log.read_text().count("\tat ") > 20


def test_a_file_spark_submit_was_told_to_ship_that_does_not_exist_exits_2_naming_it(tmp_path):
    missing = tmp_path / "no-such-side-table.csv"
    result = run_cli([str(REPO_ROOT / "spark-submit.sh"), "score"], cwd=tmp_path,
                     env={**CLI_ENV, "SPARK_MASTER": "local[1]", "SPARK_SUBMIT_ARGS": f"--files {missing}"})
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"spark-submit's spark.files: file:{missing} does not exist" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_an_unreachable_master_is_waited_for_then_exits_1_for_a_retry(tmp_path):
    master = f"spark://127.0.0.1:{_free_port()}"
    result = run_cli([str(REPO_ROOT / "spark-submit.sh"), "preprocess", "--set", f"preprocess.output={tmp_path / 'o'}",
                      "--set", "spark.master_wait_s=3"], env={**CLI_ENV, "SPARK_MASTER": master})
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-3000:]  # a master restarting is transient: the scheduler retries
    assert f"Spark master {master} cannot be reached" in log and "waited 3 s (spark.master_wait_s)" in log
    assert log.count("trying again in") >= 2  # it was waited for, with pauses
    assert "Traceback" not in log
    assert not (tmp_path / "o").exists()


def test_a_master_that_comes_back_during_the_wait_is_used():
    port = _free_port()
    server = socket.socket()

    def listen_later():
        time.sleep(1.5)
        server.bind(("127.0.0.1", port))
        server.listen()

    thread = threading.Thread(target=listen_later)
    thread.start()
    try:
        start = time.monotonic()
        check_master(f"spark://127.0.0.1:{port}", wait_s=30)
        assert 1.5 <= time.monotonic() - start < 30
    finally:
        thread.join()
        server.close()


def test_a_master_whose_host_does_not_resolve_exits_2_at_once():
    with pytest.raises(ConfigError, match="the host 'no-such-host.invalid' does not resolve"):
        check_master("spark://no-such-host.invalid:7077", wait_s=60)


def test_unknown_file_system_scheme_exits_2_naming_it(tmp_path):
    result = run_cli([*CLI, "preprocess", *QUIET, "--set", "preprocess.output=nosuchfs://bucket/out",
                      "--set", f"dataset.input.path={CRITEO_SAMPLE}"])
    assert result.returncode == 2, result.stderr[-3000:]
    assert "nosuchfs://bucket/out" in result.stderr and "'nosuchfs'" in result.stderr
    assert "Traceback" not in result.stderr


def test_packaged_configuration_from_another_directory(tmp_path):
    # `--conf conf/...` as the README writes it works from any directory, and relative paths are
    # relative to the directory the command runs in.
    result = run_cli([*CLI, "generate", "--rows", "100", "--conf", "conf/base.yaml",
                      "--conf", "conf/datasets/synthetic.yaml", "--set", "generate.output=raw"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["rows"] == 100
    assert (tmp_path / "raw" / "part-00000.tsv").is_file()


def test_an_output_path_that_is_a_file_exits_2_and_keeps_the_file(tmp_path):
    precious = tmp_path / "precious.parquet"
    precious.write_bytes(b"not ours")
    result = run_cli([*CLI, "preprocess", *QUIET, "--set", f"dataset.input.path={CRITEO_SAMPLE}",
                      "--set", f"preprocess.output={precious}"])
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{precious} is a file" in result.stderr and "Traceback" not in result.stderr
    assert precious.read_bytes() == b"not ours"


def test_a_run_date_that_is_not_a_date_exits_2_naming_the_flag():
    for stage in ("preprocess", "train", "score", "evaluate"):
        result = run_cli([*CLI, stage, "--run-date", "2026-02-30"])
        assert result.returncode == 2, (stage, result.stderr)
        assert "argument --run-date: must be a date as YYYY-MM-DD, got '2026-02-30'" in result.stderr


@pytest.mark.stack_neutral
def test_a_directory_the_project_did_not_write_is_never_replaced(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "data.csv").write_text("a,b\n1,2\n")
    for stage, key in (("preprocess", "preprocess.output"), ("evaluate", "evaluate.output")):
        result = run_cli([*CLI, stage, *QUIET, "--set", f"dataset.input.path={CRITEO_SAMPLE}",
                          "--set", f"preprocess.output={theirs}", "--set", f"evaluate.output={theirs}",
                          "--set", "evaluate.data=null", "--set", "evaluate.model=null",
                          "--set", f"evaluate.predictions={REPO_ROOT / 'tests' / 'data' / 'golden'}"])
        assert result.returncode == 2, (stage, result.stderr[-3000:])
        assert f"{theirs} exists and was not written by deepfm-pipeline" in result.stderr and key in result.stderr
        assert sorted(p.name for p in theirs.iterdir()) == ["data.csv"]


@pytest.mark.stack_neutral
def test_a_second_job_into_a_leased_output_exits_2_naming_the_first(tmp_path):
    import os
    import socket
    import time

    out = tmp_path / "prep"
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "job": "preprocess", "started": time.time(),
             "heartbeat": time.time()}
    (tmp_path / ".prep.lease").write_text(json.dumps(owner))  # a live job (this test) holds the output
    result = run_cli([*CLI, "preprocess", *QUIET, "--set", f"dataset.input.path={CRITEO_SAMPLE}",
                      "--set", f"preprocess.output={out}"])
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"is being written by preprocess (pid {os.getpid()} on {socket.gethostname()}" in result.stderr
    assert not out.exists() and json.loads((tmp_path / ".prep.lease").read_text()) == owner
    (tmp_path / "models").mkdir()
    (tmp_path / ".models.lease").write_text(json.dumps({**owner, "job": "train"}))
    result = run_cli([*CLI, "train", "--set", f"train.output={tmp_path / 'models'}"])
    assert result.returncode == 2 and f"is being written by train (pid {os.getpid()}" in result.stderr


# Root ignores permission bits; without these capabilities it obeys them, as any other user does.
_NO_OVERRIDE = "-dac_override,-dac_read_search,-fowner"


@pytest.mark.parametrize("stage, key", [("preprocess", "preprocess.output"), ("train", "train.output")])
def test_a_read_only_output_directory_exits_2_naming_it_and_the_key(tmp_path, stage, key):
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o555)
    result = run_cli(["setpriv", f"--inh-caps={_NO_OVERRIDE}", f"--bounding-set={_NO_OVERRIDE}", *CLI, stage, *QUIET,
                      "--set", f"dataset.input.path={CRITEO_SAMPLE}", "--set", f"{key}={readonly / 'out'}"])
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert f"{readonly}/.out.lease: permission denied" in last and f"choose another {key}" in last, last
    assert "Traceback" not in result.stderr
    assert list(readonly.iterdir()) == []


def test_installing_a_worker_environment_into_a_directory_of_other_files_exits_2_and_keeps_them(tmp_path):
    archive, dest = tmp_path / "deepfm-env.tar.gz", tmp_path / "opt"
    archive.write_bytes(b"")
    dest.mkdir()
    (dest / "someone-elses.txt").write_text("keep me")
    result = run_cli(["bash", str(REPO_ROOT / "scripts" / "install_worker_env.sh"), str(archive), str(dest)])
    assert result.returncode == 2, result.stderr
    assert f"DEST {dest} holds files this script did not write" in result.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["someone-elses.txt"]
    assert (dest / "someone-elses.txt").read_text() == "keep me"
