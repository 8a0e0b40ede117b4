"""Output leases: one job at a time writes an output; a second one exits 2 naming the owner.

A lease is a small JSON file beside the output (`.<name>.lease`, so it outlives the output's swap):
host, pid, job, start time and a heartbeat that a daemon thread renews every `renew_s` seconds.
A lease whose heartbeat is older than `stale_s` belongs to a job that died without releasing it
(SIGKILL, a lost node): the next job takes it over, with a warning. On the same host, a lease whose
process is gone is stale at once.

Taking a free lease is atomic where the file system has an exclusive create (local paths, HDFS
through Hadoop). An object store has none: there a job checks that the lease is free, writes it,
waits `settle_s` and reads it back, and goes on only if the lease still names it. Two jobs that both
found it free wrote it within one request of each other; the store keeps the later write, and the
earlier writer reads the other's name back and exits 2. Only a write delayed by more than
`settle_s` after its check could still slip through.

The file is reached through a `LeaseFile`: a `Location` here (the torch side: train), or Hadoop's
FileSystem for the Spark stages' outputs (deepfm/storage/hadoop.py), so that `hdfs://` and `s3a://`
outputs need nothing beyond Spark's own connectors.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Protocol

from deepfm.errors import UserError
from deepfm.storage.location import Location, Where

log = logging.getLogger(__name__)


class OutputLockedError(UserError):
    """Another live job holds the output."""


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    job: str
    started: float
    heartbeat: float

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(self.started))
        alive = time.time() - self.heartbeat
        return f"{self.job} (pid {self.pid} on {self.host}, started {started}, alive {alive:.0f}s ago)"

    def is_stale(self, stale_s: float) -> bool:
        if time.time() - self.heartbeat > stale_s:
            return True
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False


class LeaseFile(Protocol):
    @property
    def exclusive(self) -> bool:
        """Whether `create` is atomic: of two jobs creating the file at once, one fails."""

    def create(self, text: str) -> bool:
        """Write the file unless it exists (atomically where the store can); whether it was written."""

    def write(self, text: str) -> None: ...

    def read(self) -> str | None: ...

    def delete(self) -> None: ...


@dataclass(frozen=True)
class LocationLease:
    """A lease file on any file system `deepfm.storage.location` reaches."""

    path: Location

    def __str__(self) -> str:
        return str(self.path)

    @property
    def exclusive(self) -> bool:
        return self.path.is_local

    def create(self, text: str) -> bool:
        if not self.exclusive:  # pyarrow has no exclusive create beyond local files: check, then write
            if self.path.exists():
                return False
            self.path.write_text(text)
            return True
        self.path.parent.mkdir()
        try:
            fd = os.open(self.path.local_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True

    def write(self, text: str) -> None:
        self.path.write_text(text)

    def read(self) -> str | None:
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    def delete(self) -> None:
        self.path.unlink()


def lease_file(output: Where) -> Location:
    out = Location.of(output)
    return out.parent / f".{out.name}.lease"


@contextmanager
def held(output: Where, job: str, renew_s: float = 30.0, stale_s: float = 120.0,
         lease: LeaseFile | None = None, key: str | None = None, settle_s: float = 2.0) -> Iterator[Owner]:
    """Hold the output's lease for the duration of the block (default file: `lease_file(output)`).
    `key`, the config key that named the output, is named when the lease cannot be written there;
    `settle_s`: how long a lease written without an exclusive create settles before it is confirmed."""
    lease = lease or LocationLease(lease_file(output))
    me = Owner(socket.gethostname(), os.getpid(), job, time.time(), time.time())
    try:
        _take(lease, me, output, stale_s, settle_s)
    except PermissionError as err:  # the first write of a job: a read-only place fails here, in a second
        where = err.filename or lease
        raise PermissionError(f"{where}: permission denied: this job may not write beside {output}; choose "
                              f"another {key or 'output'} or grant write access") from None
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(renew_s):
            try:
                holder = _owner(lease)
                if not _same_holder(holder, me):  # taken over as stale (a long pause): leave the new holder be
                    log.error("lost the lease of %s to %s; this job's output may be overwritten (%s)", output,
                              holder.describe() if holder is not None else "nobody (it was deleted)", lease)
                    return
                lease.write(json.dumps(asdict(Owner(**{**asdict(me), "heartbeat": time.time()}))))
            except Exception as err:  # noqa: BLE001 - a missed heartbeat is survivable; the next may succeed
                log.warning("could not renew the lease %s: %s", lease, err)

    thread = threading.Thread(target=renew, daemon=True, name="output-lease")
    thread.start()
    try:
        yield me
    finally:
        stop.set()
        thread.join()
        if _same_holder(_owner(lease), me):
            lease.delete()


def _take(lease: LeaseFile, me: Owner, output: Where, stale_s: float, settle_s: float) -> None:
    current = _owner(lease)
    if current is not None:
        if not current.is_stale(stale_s):
            raise OutputLockedError(f"{output} is being written by {current.describe()}: wait for it, or stop it; "
                                    f"a lease older than {stale_s:.0f}s is taken over ({lease})")
        log.warning("taking over the lease of %s from %s: %s", output, current.describe(), lease)
        lease.delete()
    if not lease.create(json.dumps(asdict(me))):
        raise OutputLockedError(f"{output} was just taken by another job ({lease})")
    if not lease.exclusive:
        time.sleep(settle_s)
        holder = _owner(lease)
        if not _same_holder(holder, me):
            taker = holder.describe() if holder is not None else "another job, which has already released it"
            raise OutputLockedError(f"{output} was taken at the same moment by {taker}: wait for it, or stop it "
                                    f"({lease})")


def _owner(lease: LeaseFile) -> Owner | None:
    text = lease.read()
    if text is None:
        return None
    try:
        return Owner(**json.loads(text))
    except (ValueError, TypeError):  # unreadable: half-written by a killed job
        return Owner("unknown", -1, "unknown", 0.0, 0.0)


def _same_holder(a: Owner | None, b: Owner) -> bool:
    return a is not None and (a.host, a.pid, a.started) == (b.host, b.pid, b.started)
