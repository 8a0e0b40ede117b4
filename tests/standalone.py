"""A real Spark standalone cluster on loopback, started from the pip pyspark, for the cluster tests.

The Worker (and so every executor it launches) runs in a private mount namespace in which this
checkout and its virtualenv are covered by empty tmpfs mounts: like a second host, it sees only
what spark-submit ships to it and the shared work directory. Everything started here is stopped
by its process id.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def namespaces_available() -> str | None:
    """None when this process may make a private mount namespace, else why not."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare --mount failed: {probe.stderr.strip()} (needs root)"


@dataclass
class StandaloneCluster:
    work: Path  # shared by driver and worker: data, outputs, logs
    hidden: list[Path]  # directories the worker must not see
    cores: int = 2
    memory: str = "6g"
    # The worker's own cleanup of finished applications' directories (docs/cluster.md, "Worker disk"): every
    # `cleanup_interval_s`, those with no file newer than `app_data_ttl_s` go. None: Spark's default, off.
    cleanup_interval_s: int | None = None
    app_data_ttl_s: int = 7 * 24 * 3600
    procs: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        import pyspark

        self.spark_home = Path(pyspark.__file__).parent
        self.port, self.ui_port, self.worker_ui_port = _free_port(), _free_port(), _free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.worker_dir = self.work / "worker"

    # ------------------------------------------------------------------------------------ start/stop
    def start(self) -> StandaloneCluster:
        self.worker_dir.mkdir(parents=True, exist_ok=True)
        env = self._clean_env()
        self._spawn("master", [str(self.spark_home / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master",
                               "--host", "127.0.0.1", "--port", str(self.port), "--webui-port", str(self.ui_port)],
                    env)
        self._wait(lambda: self.state().get("status") == "ALIVE", "the master to come up")
        # The worker's Spark installation is bind-mounted outside the checkout before the checkout
        # is covered, so that the worker can start while seeing nothing of the repository.
        mounted_home = self.work / "spark-home"
        mounted_home.mkdir(exist_ok=True)
        hide = " && ".join(f"mount -t tmpfs -o size=1m,mode=0700 deepfm-hidden {_q(p)}" for p in self.hidden)
        script = (f"mount --bind {_q(self.spark_home)} {_q(mounted_home)} && {hide} && "
                  f"exec {_q(mounted_home / 'bin' / 'spark-class')} org.apache.spark.deploy.worker.Worker "
                  f"--host 127.0.0.1 --cores {self.cores} --memory {self.memory} --webui-port {self.worker_ui_port} "
                  f"--work-dir {_q(self.worker_dir)} {self.master_url}")
        worker_env = {**env, "SPARK_HOME": str(mounted_home)}
        if self.cleanup_interval_s is not None:
            worker_env["SPARK_WORKER_OPTS"] = (
                f"-Dspark.worker.cleanup.enabled=true -Dspark.worker.cleanup.interval={self.cleanup_interval_s} "
                f"-Dspark.worker.cleanup.appDataTtl={self.app_data_ttl_s}")
        self.worker = self._spawn("worker", ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                                  worker_env)
        self._wait(lambda: any(w.get("state") == "ALIVE" for w in self.state().get("workers", [])),
                   "the worker to register")
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ------------------------------------------------------------------------------------ inspection
    def state(self) -> dict:
        """The master's JSON endpoint: workers, running and completed applications."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as reply:
                return json.load(reply)
        except OSError:
            return {}

    def worker_sees(self, path: Path) -> bool:
        """Whether `path` exists in the worker's mount namespace (its /proc/PID/root view)."""
        return os.path.exists(f"/proc/{self.worker.pid}/root{path}")

    def executor_logs(self, app_id: str) -> str:
        """stdout and stderr of every executor the worker ran for an application."""
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.worker_dir / app_id).glob("*/std*")))

    def executor_dirs(self, app_id: str) -> list[Path]:
        return sorted(p for p in (self.worker_dir / app_id).glob("*") if p.is_dir())

    def app_dir_bytes(self, app_id: str) -> int:
        """What an application left on the worker: its executors' directories (unpacked archive included)."""
        files = (p for p in (self.worker_dir / app_id).rglob("*") if not p.is_symlink() and p.is_file())
        return sum(p.stat().st_size for p in files)

    # ------------------------------------------------------------------------------------ helpers
    def _clean_env(self) -> dict[str, str]:
        # Nothing of the driver's Python environment may leak into the worker's.
        keep = ("PATH", "HOME", "JAVA_HOME", "LANG", "TMPDIR")
        path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                               if not any(p.startswith(str(h)) for h in self.hidden))
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env.update(PATH=path, SPARK_LOG_DIR=str(self.work / "logs"), SPARK_NO_DAEMONIZE="1",
                   SPARK_WORKER_DIR=str(self.worker_dir))
        return env

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.work / f"{name}.log").open("w")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.work,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def _wait(self, ready, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                break
            time.sleep(1)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.work.glob("*.log")))
        raise RuntimeError(f"timed out waiting for {what}\n{logs}")


def _q(path: Path | str) -> str:
    import shlex

    return shlex.quote(str(path))


if __name__ == "__main__":  # a manual check: start, print the state, stop
    cluster = StandaloneCluster(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]).start()
    try:
        print(json.dumps(cluster.state(), indent=1))
    finally:
        cluster.stop()
