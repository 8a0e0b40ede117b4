"""Fault injection in training: one rank of a 2-worker run SIGKILLed mid-epoch (DDP and Horovod
in local processes, DDP in Spark barrier tasks through TorchDistributor)."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from tests.conftest import CLI, REPO_ROOT, run_cli


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rank_one_of(pid: int) -> int | None:
    """The process of rank 1 under `pid`: a Horovod rank has HOROVOD_RANK in its environment, a
    TorchDistributor rank (started by torchrun) RANK; torch.multiprocessing starts its ranks in
    order, so rank 1 is the newer spawned child."""
    ranked, spawned = [], []
    for child in _descendants(pid):
        proc = Path("/proc") / str(child)
        try:
            cmdline, environ = (proc / "cmdline").read_bytes(), (proc / "environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"HOROVOD_RANK=1" in environ or b"RANK=1" in environ:
            ranked.append(child)
        elif b"multiprocessing.spawn" in cmdline:
            spawned.append(child)
    return max(ranked or spawned, default=None)


def _crash_report(stderr: str) -> str:
    """The end of a failed run's stderr, and the stacks faulthandler dumped when a worker crashed in
    native code (they come long before the end, which the launcher's traceback fills)."""
    start = stderr.find("Fatal Python error")
    dump = stderr[start:start + 6000] if start >= 0 else "(no faulthandler dump)"
    return f"{dump}\n...\n{stderr[-3000:]}"


def _resume_as_a_scheduler_does(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `--resume`; once more if a worker crashed in native code.

    A resumed 2-worker DDP run has died of SIGSEGV in a gloo thread about once in 30 CI runs (the
    main thread waiting in an all_reduce; not reproduced in about 50 resumed runs on a dev machine). The job then
    ends with exit 1, "retrying may succeed", which the DAG's retry answers with `--resume auto`:
    so does this test, once, for that crash alone, and says so in the warnings summary."""
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if result.returncode == 1 and "terminated with signal SIGSEGV" in result.stderr:
        warnings.warn(f"a resumed worker crashed in native code; resuming again\n{_crash_report(result.stderr)}",
                      stacklevel=1)
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    return result


@pytest.mark.parametrize(("backend", "launcher"), [
    pytest.param("torch", "local", marks=pytest.mark.stack_neutral),
    pytest.param("horovod", "local", marks=pytest.mark.stack_neutral),
    pytest.param("torch", "spark", marks=pytest.mark.slow),  # 3 minutes: `make test-slow`
])
def test_a_rank_killed_mid_epoch_ends_the_job_keeps_the_model_and_resume_matches(criteo_shards, tmp_path, backend,
                                                                                  launcher):
    models = tmp_path / "models"
    cli = [sys.executable, "-m", "jobs.cli", "train", "--set", f"train.data={criteo_shards}",
           "--set", f"train.output={models}", "--set", f"train.backend={backend}", "--set", "train.workers=2",
           "--set", f"train.launcher={launcher}", "--set", "spark.conf.spark.ui.showConsoleProgress=false",
           "--set", "train.epochs=1", "--set", "train.batch_size=64", "--set", "train.threads=1",
           "--set", "train.model.embedding_dim=8", "--set", "train.model.hidden=[32]",
           "--set", "train.checkpoint_every_steps=20"]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    previous = subprocess.run([*cli, "--run-date", "2026-11-26"], cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True)
    assert previous.returncode == 0, _crash_report(previous.stderr)
    weights = (models / "2026-11-26" / "model.pt").read_bytes()

    proc = subprocess.Popen([*cli, "--run-date", "2026-11-27"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    checkpoint = models / ".building-2026-11-27" / "checkpoint.pt"
    deadline = time.time() + 600
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    victim = _rank_one_of(proc.pid)
    assert checkpoint.exists() and victim is not None, "no checkpoint, or no worker process to kill"
    os.kill(victim, signal.SIGKILL)
    # The surviving rank must not wait forever in a collective: the job ends (a hang fails here).
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr[-3000:]  # a lost worker is transient: a scheduler retries it
    errors = [line for line in stderr.splitlines() if line.startswith("deepfm-pipeline train: error:")]
    assert len(errors) == 1 and "retrying may succeed" in errors[0], stderr[-3000:]
    assert (models / "LATEST").read_text().strip() == "2026-11-26"  # the previous model is untouched
    assert (models / "2026-11-26" / "model.pt").read_bytes() == weights
    assert not (models / "2026-11-27").exists()

    resumed = _resume_as_a_scheduler_does([*cli, "--run-date", "2026-11-27", "--resume"], env)
    assert resumed.returncode == 0, _crash_report(resumed.stderr)
    assert "resumed from" in resumed.stderr
    auc = {run: json.loads(result.stdout.strip().splitlines()[-1])["test"]["auc"]
           for run, result in (("previous", previous), ("resumed", resumed))}
    assert abs(auc["previous"] - auc["resumed"]) < 0.001, auc  # same data and config as the uninterrupted run
    assert (models / "LATEST").read_text().strip() == "2026-11-27"


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB file system of its own (tmpfs; the tests run as root, as CI does)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def test_a_full_disk_in_train_exits_1_saying_no_space_and_where(criteo_shards, tiny_disk):
    result = run_cli([*CLI, "train", "--set", f"train.data={criteo_shards}", "--set", f"train.output={tiny_disk}/m",
                      "--set", "train.epochs=1", "--set", "train.model.hidden=[8]"])
    assert result.returncode == 1
    line = _one_error_line(result)
    assert f"no space left on device writing {tiny_disk}/m/.building-" in line, line
    assert not (tiny_disk / "m" / "LATEST").exists()


def test_a_full_disk_in_preprocess_exits_1_saying_no_space_and_where(tiny_disk):
    result = run_cli([*CLI, "preprocess", "--set", "spark.master=local[1]",
                      "--set", f"preprocess.output={tiny_disk}/prep"])
    assert result.returncode == 1
    line = _one_error_line(result)
    assert f"no space left on device while writing file:{tiny_disk}/prep:" in line, line
    assert sorted(p.name for p in tiny_disk.iterdir()) == []  # nothing half-written, no lease left
