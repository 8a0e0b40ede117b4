"""Output leases on a real file system: one writer at a time, stale leases taken over."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from deepfm.storage.lease import OutputLockedError, held, lease_file


def _write_lease(output, **owner):
    record = {"host": socket.gethostname(), "pid": os.getpid(), "job": "preprocess", "started": time.time(),
              "heartbeat": time.time(), **owner}
    lease_file(output).local_path.write_text(json.dumps(record))


def test_a_second_job_is_refused_naming_the_first_and_the_lease_goes_with_the_first(tmp_path):
    out = tmp_path / "out"
    with held(out, "preprocess"):
        assert lease_file(out).is_file()
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()} on {socket.gethostname()}"), \
                held(out, "preprocess"):
            pass
        assert lease_file(out).is_file()  # the refused job did not touch the holder's lease
    assert not lease_file(out).exists()


def test_a_lease_of_a_process_that_is_gone_is_taken_over_with_a_warning(tmp_path, caplog):
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _write_lease(out, pid=int(dead.stdout))
    with caplog.at_level(logging.WARNING, logger="deepfm.storage.lease"), held(out, "score"):
        assert json.loads(lease_file(out).read_text())["pid"] == os.getpid()
    assert "taking over the lease" in caplog.text and dead.stdout.strip() in caplog.text


def test_a_lease_from_another_host_is_kept_while_its_heartbeat_is_fresh(tmp_path):
    out = tmp_path / "out"
    _write_lease(out, host="worker-7", pid=1)
    with pytest.raises(OutputLockedError, match="pid 1 on worker-7"), held(out, "train"):
        pass
    _write_lease(out, host="worker-7", pid=1, heartbeat=time.time() - 600)
    with held(out, "train", stale_s=120):
        assert json.loads(lease_file(out).read_text())["host"] == socket.gethostname()


def test_the_heartbeat_is_renewed_while_the_job_runs(tmp_path):
    out = tmp_path / "out"
    with held(out, "train", renew_s=0.05):
        first = json.loads(lease_file(out).read_text())["heartbeat"]
        deadline = time.monotonic() + 30
        while json.loads(lease_file(out).read_text())["heartbeat"] == first:
            assert time.monotonic() < deadline, "the heartbeat was never renewed"
            time.sleep(0.05)


def test_a_job_whose_lease_was_taken_over_stops_renewing_it_and_says_so(tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR, logger="deepfm.storage.lease"), held(out, "train", renew_s=0.05):
        _write_lease(out, host="worker-7", pid=1)  # another job took it over while this one stalled
        deadline = time.monotonic() + 30
        while "lost the lease" not in caplog.text:
            assert time.monotonic() < deadline, "the lost lease was never noticed"
            time.sleep(0.05)
        time.sleep(0.2)
        assert json.loads(lease_file(out).read_text())["host"] == "worker-7"
    assert json.loads(lease_file(out).read_text())["host"] == "worker-7"  # nor deleted at the end
    assert "to preprocess (pid 1 on worker-7" in caplog.text
