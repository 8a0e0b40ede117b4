"""Output directories on any Hadoop file system (local, HDFS, S3A, GCS), committed atomically.

A job writes into a hidden sibling of its destination, writes `_SUCCESS` last, and then swaps the
directory into place by rename. A job that fails, or is killed, never leaves a half-written
destination: its leftover temporary sibling is removed by the next run. The job holds the
destination's lease throughout (deepfm/lease.py): a second job into the same output exits 2
naming the first, instead of removing its live temporary directory. Only a directory the project
wrote (deepfm/outputs.py) is ever replaced.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from deepfm import lease, outputs
from deepfm.fs import NO_SPACE, is_object_store

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"
_GLOB_CHARACTERS = re.compile(r"([\\*?\[\]{}])")
_BOOKKEEPING = {SUCCESS, outputs.MARKER, "_metadata", "_common_metadata", ".keep", ".gitkeep"}


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    modified_ms: int


class Storage:
    """Thin wrapper over Hadoop's FileSystem, reached through the SparkSession's JVM."""

    def __init__(self, spark) -> None:
        self._jvm = spark.sparkContext._jvm
        self._hconf = spark.sparkContext._jsc.hadoopConfiguration()

    def _path(self, path: str):
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def _fs(self, path: str):
        from py4j.protocol import Py4JJavaError

        try:
            return self._path(path).getFileSystem(self._hconf)
        except Py4JJavaError as err:
            if "UnsupportedFileSystemException" in str(err.java_exception.getClass().getName()):
                scheme = path.split(":", 1)[0]
                raise ValueError(
                    f"{path}: no Hadoop file system is installed for the scheme '{scheme}': add its connector "
                    "to the job (for s3a: --packages org.apache.hadoop:hadoop-aws:3.3.4), or use another path"
                ) from None
            raise

    def supports(self, path: str) -> bool:
        """Whether a Hadoop file system is installed for the path's scheme."""
        from py4j.protocol import Py4JJavaError

        try:
            self._fs(path)
        except (ValueError, Py4JJavaError):  # no such scheme, or its connector's classes are missing
            return False
        return True

    def qualify(self, path: str) -> str:
        """Absolute URI of a path (file:/..., hdfs://...), as Spark resolves it."""
        return self._fs(path).makeQualified(self._path(path)).toString()

    def exists(self, path: str) -> bool:
        return self._fs(path).exists(self._path(path))

    def is_file(self, path: str) -> bool:
        fs = self._fs(path)
        return fs.exists(self._path(path)) and fs.getFileStatus(self._path(path)).isFile()

    def delete(self, path: str) -> None:
        if self.exists(path):
            self._fs(path).delete(self._path(path), True)

    def rename(self, src: str, dst: str) -> None:
        if not self._fs(src).rename(self._path(src), self._path(dst)):
            raise OSError(f"could not rename {src} to {dst}")

    def write_text(self, path: str, text: str) -> None:
        stream = self._fs(path).create(self._path(path), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def read_text(self, path: str) -> str:
        stream = self._fs(path).open(self._path(path))
        try:
            return self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()

    def pattern(self, path: str) -> str:
        """The glob that means `path`: a path that exists as written is taken literally, its glob
        characters escaped (a directory `logs[1]`); any other path is a glob (`logs/dt=*/`)."""
        if _GLOB_CHARACTERS.search(path) and self.exists(path):
            return _GLOB_CHARACTERS.sub(r"\\\1", path)
        return path

    def literal_directory(self, path: str) -> str:
        """The qualified directory a path or glob starts from: the path itself, or what precedes its
        first wildcard."""
        wildcard = _GLOB_CHARACTERS.search(path) if self.pattern(path) == path else None
        literal = path[: wildcard.start()].rsplit("/", 1)[0] if wildcard else path
        return self.qualify(literal or "/").rstrip("/")

    def list_files(self, path: str) -> list[FileInfo]:
        """Data files under a path or glob, sorted: what Spark reads there. Hidden files and those
        in hidden directories (names starting with `_` or `.`: _SUCCESS, .crc, _temporary/) are
        skipped, as Spark skips them (`listing` names them too)."""
        return self.listing(path)[0]

    def listing(self, path: str) -> tuple[list[FileInfo], list[str]]:
        """The data files under a path or glob (`list_files`), and the files there that Spark does
        not read for their hidden names, less the bookkeeping of Hadoop, Spark, Parquet and this
        project; in one listing."""
        found = self._walk(path)
        hidden = [f.path for f, is_hidden in found
                  if is_hidden and not f.path.endswith(".crc") and f.path.rsplit("/", 1)[-1] not in _BOOKKEEPING]
        return [f for f, is_hidden in found if not is_hidden], hidden

    def _walk(self, path: str) -> list[tuple[FileInfo, bool]]:
        fs = self._fs(path)
        statuses = fs.globStatus(self._path(self.pattern(path))) or []
        found: list[tuple[FileInfo, bool]] = []
        for status in statuses:
            if status.isDirectory():
                base = status.getPath().toString().rstrip("/")
                it = fs.listFiles(status.getPath(), True)
                while it.hasNext():
                    info = _info(it.next())
                    relative = info.path[len(base) + 1:] if info.path.startswith(base + "/") else info.path
                    found.append((info, any(part.startswith(("_", ".")) for part in relative.split("/"))))
            else:
                found.append((_info(status), status.getPath().getName().startswith(("_", "."))))
        return sorted(found, key=lambda pair: pair[0].path)

    def fingerprint(self, path: str) -> str:
        """Identity of an input by file names, sizes and modification times (not contents)."""
        files = self.list_files(path)
        blob = "\n".join(f"{f.path}\t{f.size}\t{f.modified_ms}" for f in files)
        return hashlib.sha256(blob.encode()).hexdigest()

    def siblings(self, path: str, prefix: str) -> list[str]:
        parent = self._path(path).getParent()
        fs = self._fs(path)
        if parent is None or not fs.exists(parent):
            return []
        return [
            s.getPath().toString()
            for s in fs.listStatus(parent)
            if s.getPath().getName().startswith(prefix)
        ]

    @contextmanager
    def atomic_output(self, dest: str, stage: str, key: str) -> Iterator[str]:
        """Yield a temporary directory; on success swap it into `dest` with a _SUCCESS marker.
        `key` is the config key that named `dest`, for the messages."""
        dest = self.qualify(dest).rstrip("/")
        if self.is_file(dest):  # an output is a directory: a file there is someone else's, never replaced
            raise FileExistsError(f"{dest} is a file, not an output directory: choose another {key}")
        if self.exists(dest) and not self.exists(f"{dest}/{outputs.MARKER}") and self.list_all(dest):
            raise outputs.not_ours(dest, key)
        name = dest.rsplit("/", 1)[-1]
        parent = dest[: -len(name) - 1]
        with lease.held(dest, stage, lease=HadoopLease(self, f"{parent}/.{name}.lease"), key=key):
            for stale in self.siblings(dest, f".{name}.tmp-"):
                log.warning("removing leftover temporary output of an earlier failed run: %s", stale)
                self.delete(stale)
            tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
            try:
                yield tmp
                self.write_text(f"{tmp}/{outputs.MARKER}", outputs.marker_text(stage))
                self.write_text(f"{tmp}/{SUCCESS}", "")
                old = f"{parent}/.{name}.old-{uuid.uuid4().hex[:12]}"
                if self.exists(dest):
                    self.rename(dest, old)
                self.rename(tmp, dest)
                self.delete(old)
                log.info("committed %s", dest)
            except Exception as err:
                if "No space left on device" not in str(err):
                    raise
                # Spark's error is a stack from a task, whose first line names neither cause nor place
                raise OSError(f"{NO_SPACE} while writing {dest}: free space on its file system (or in Spark's "
                              f"scratch space, spark.local.dir), or choose another {key}; {dest} is as it was"
                              ) from None
            finally:
                self.delete(tmp)

    def list_all(self, path: str) -> list[str]:
        """Names of everything directly in a directory, hidden files included."""
        return [s.getPath().getName() for s in self._fs(path).listStatus(self._path(path))]

    def is_committed(self, path: str) -> bool:
        return self.exists(f"{path.rstrip('/')}/{SUCCESS}")


@dataclass(frozen=True)
class HadoopLease:
    """A lease file on a Hadoop file system (deepfm/lease.py's LeaseFile)."""

    storage: Storage
    path: str

    def __str__(self) -> str:
        return self.path

    @property
    def exclusive(self) -> bool:
        # Hadoop's create(overwrite=False) is atomic on HDFS and local disks; S3A and GCS check, then write
        return not is_object_store(self.path)

    def create(self, text: str) -> bool:
        from py4j.protocol import Py4JJavaError

        fs = self.storage._fs(self.path)
        try:
            stream = fs.create(self.storage._path(self.path), False)  # exclusive on local and HDFS
        except Py4JJavaError as err:
            java = err.java_exception
            if "FileAlreadyExistsException" in java.getClass().getName():
                return False
            # "Permission denied": a local FileNotFoundException, or HDFS's AccessControlException
            message = str(java.getMessage() or "")
            if "AccessControlException" in java.getClass().getName() or "Permission denied" in message:
                raise PermissionError(13, "Permission denied", self.path) from None
            raise
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()
        return True

    def write(self, text: str) -> None:
        self.storage.write_text(self.path, text)

    def read(self) -> str | None:
        return self.storage.read_text(self.path) if self.storage.exists(self.path) else None

    def delete(self) -> None:
        self.storage.delete(self.path)


def _info(status) -> FileInfo:
    return FileInfo(status.getPath().toString(), status.getLen(), status.getModificationTime())
