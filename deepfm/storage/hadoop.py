"""`Files` on any Hadoop file system (local, HDFS, S3A, GCS), reached through the SparkSession's JVM.

What the Spark stages read and write: Spark's own connectors and credentials apply, and nothing
beyond them is needed. Besides `Files` (deepfm/storage/files.py), it lists input files as Spark
reads them (hidden names skipped) and fingerprints an input by their names, sizes and times.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from deepfm.storage.commit import MARKER, SUCCESS
from deepfm.storage.location import is_object_store

_GLOB_CHARACTERS = re.compile(r"([\\*?\[\]{}])")
_BOOKKEEPING = {SUCCESS, MARKER, "_metadata", "_common_metadata", ".keep", ".gitkeep"}


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    modified_ms: int


class HadoopFiles:
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

    def list_names(self, path: str) -> list[str]:
        return [s.getPath().getName() for s in self._fs(path).listStatus(self._path(path))]

    def tree(self, path: str) -> list[str]:
        base = self.qualify(path).rstrip("/") + "/"
        it = self._fs(path).listFiles(self._path(path), True)
        names = []
        while it.hasNext():
            names.append(it.next().getPath().toString().removeprefix(base))
        return sorted(names)

    def mkdir(self, path: str) -> None:
        self._fs(path).mkdirs(self._path(path))

    def can_rename(self, path: str) -> bool:
        return True  # Hadoop's connectors emulate a directory rename where the store has none

    def copy(self, src: str, dst: str) -> None:
        self._jvm.org.apache.hadoop.fs.FileUtil.copy(self._fs(src), self._path(src), self._fs(dst), self._path(dst),
                                                     False, self._hconf)

    def lease(self, path: str) -> HadoopLease:
        return HadoopLease(self, path)


@dataclass(frozen=True)
class HadoopLease:
    """A lease file on a Hadoop file system (deepfm/storage/lease.py's LeaseFile)."""

    storage: HadoopFiles
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
