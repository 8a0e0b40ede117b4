"""Tracking against a real MLflow server on loopback (`make mlflow-server`'s command, from
.venv-mlflow): train logs through it, artifacts included; a train while it is down leaves its
version pending, and `deepfm-pipeline track` sends it once the server is back. Run by
`make test-tracking-server`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from tests.conftest import CLI, REPO_ROOT, run_cli

pytestmark = pytest.mark.tracking_server

MLFLOW = REPO_ROOT / ".venv-mlflow" / "bin" / "mlflow"


class MlflowServer:
    """`mlflow server` on a loopback port, its store and artifacts under `home`; stopped by its pid."""

    def __init__(self, home: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.home, self.uri, self.proc = home, f"http://127.0.0.1:{self.port}", None

    def start(self) -> MlflowServer:
        command = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                   "--backend-store-uri", f"sqlite:///{self.home / 'mlflow.db'}",
                   "--artifacts-destination", str(self.home / "artifacts")]
        log = (self.home / "server.log").open("a")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server did not come up:\n{(self.home / 'server.log').read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its uvicorn worker
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def server(tmp_path):
    if not MLFLOW.exists():
        pytest.fail(f"{MLFLOW} not found: run `make test-tracking-server` (it installs the server first)")
    home = tmp_path / "mlflow-server"
    home.mkdir()
    server = MlflowServer(home).start()
    yield server
    server.stop()


def _train(trained, models: Path, run_date: str, uri: str, *more: str) -> subprocess.CompletedProcess:
    return run_cli([*CLI, "train", "--run-date", run_date, "--set", f"train.data={trained['root'] / 'prep'}",
                    "--set", f"train.output={models}", "--set", "train.epochs=1", "--set", "train.threads=1",
                    "--set", f"tracking.uri={uri}", "--set", "tracking.experiment=server-test",
                    "--set", "tracking.http_retries=0", *more])


def test_a_version_trained_while_the_server_was_down_is_tracked_once_it_is_back(server, trained, tmp_path):
    models = tmp_path / "models"
    first = _train(trained, models, "2026-11-27", server.uri)
    assert first.returncode == 0, first.stderr[-4000:]
    client = mlflow.MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("server-test")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.data.tags["deepfm.run_date"] for r in runs] == ["2026-11-27"]
    # The model went through the server's artifact proxy into its own store: no shared file system.
    assert list((server.home / "artifacts").rglob("MLmodel")), "the server holds no logged model"

    server.stop()
    down = _train(trained, models, "2026-11-28", server.uri)
    assert down.returncode == 0, down.stderr[-4000:]  # the version is committed; tracking is pending
    assert f"MLflow tracking at {server.uri} failed, the model version is committed" in down.stderr
    assert (models / ".tracking-pending" / "2026-11-28.json").is_file()
    command = [*CLI, "track", "--set", f"train.output={models}", "--set", f"tracking.uri={server.uri}",
               "--set", "tracking.experiment=server-test", "--set", "tracking.http_retries=0"]
    still_down = run_cli(command)
    assert still_down.returncode == 1 and "still not tracked (2026-11-28)" in still_down.stderr, still_down.stderr

    server.start()  # back, on the same store
    sent = run_cli(command)
    assert sent.returncode == 0, sent.stderr[-4000:]
    assert len(json.loads(sent.stdout.strip().splitlines()[-1])["sent"]) == 1
    runs = client.search_runs([experiment.experiment_id], order_by=["tags.`deepfm.run_date`"])
    assert [r.data.tags["deepfm.run_date"] for r in runs] == ["2026-11-27", "2026-11-28"]
    record = json.loads((models / "2026-11-28" / "version.json").read_text())
    assert runs[1].data.metrics["test_auc"] == pytest.approx(record["test"]["auc"])
    assert not (models / ".tracking-pending" / "2026-11-28.json").exists()
