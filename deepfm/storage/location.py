"""Files and directories on any file system pyarrow reaches: local paths and URIs alike.

The torch side (readers, model directory, checkpoints, report, export) names every place it reads
or writes with a `Location`: `/data/criteo`, `file:///data/criteo`, `s3://bucket/criteo`,
`hdfs://namenode/criteo`, `gs://bucket/criteo`. Executors and training workers on other hosts
then read the same shards and write the same model as the driver would.

S3 (`s3://`, and Hadoop's `s3a://`/`s3n://` for the same bucket) uses the AWS default credential
chain (environment, profile, instance role), `AWS_REGION`, and `AWS_ENDPOINT_URL` for an
S3-compatible store (MinIO, Ceph, a test server), as the AWS SDKs and CLI read them. Other schemes
go to `pyarrow.fs.FileSystem.from_uri` (HDFS needs libhdfs and a JVM; GCS its credentials).

Every file write is atomic: a reader sees the old file or the whole new one. Local and HDFS files
are written to a hidden sibling and renamed into place; an object store only shows an object once
its upload completes, so the bytes are put in one upload.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import pyarrow as pa
from pyarrow import fs as pafs

_S3_SCHEMES = ("s3", "s3a", "s3n")
_OBJECT_STORES = ("s3", "gcs")  # pyarrow's type_name: no rename, uploads are atomic
_OBJECT_STORE_SCHEMES = (*_S3_SCHEMES, "gs", "gcs")


class UnsupportedFileSystemError(ValueError):
    """A URI whose scheme no installed file system handles."""


@dataclass(frozen=True)
class Location:
    """A file or directory: an absolute local path, or a URI kept as the user wrote it."""

    uri: str

    @classmethod
    def of(cls, where: Where) -> Location:
        if isinstance(where, Location):
            return where
        text = os.fspath(where)
        return cls(text if _scheme(text) else os.path.abspath(text))

    def __str__(self) -> str:
        return self.uri

    def __truediv__(self, name: str) -> Location:
        return Location(f"{self.uri.rstrip('/')}/{name}")

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        return Location(self.uri.rstrip("/").rsplit("/", 1)[0] or "/")

    @property
    def is_local(self) -> bool:
        return _scheme(self.uri) in ("", "file")

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise ValueError(f"{self.uri} is not on the local file system")
        return Path(self._resolved[1])

    @property
    def as_uri(self) -> str:
        """A fully qualified URI (file:///... for a local path), as Spark and Petastorm take it."""
        return self.local_path.as_uri() if self.is_local else self.uri

    @cached_property
    def _resolved(self) -> tuple[pafs.FileSystem, str]:
        return _resolve(self.uri)

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self._resolved[0]

    @property
    def path(self) -> str:
        """The path within `filesystem` (bucket/key for object stores)."""
        return self._resolved[1]

    # ---------------------------------------------------------------------------------- queries
    def _type(self) -> pafs.FileType:
        return self.filesystem.get_file_info(self.path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def files(self, suffix: str = "") -> list[Location]:
        """Files directly in this directory whose names end with `suffix`, sorted by name."""
        infos = self.filesystem.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        names = sorted(i.base_name for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(suffix))
        return [self / name for name in names]

    def subdirs(self) -> list[str]:
        """Names of the directories directly in this one, sorted (none when it does not exist)."""
        infos = self.filesystem.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    # ------------------------------------------------------------------------------------ reads
    def open(self) -> pa.NativeFile:
        """A seekable binary file (what pyarrow.parquet and torch.load take)."""
        return self.filesystem.open_input_file(self.path)

    @property
    def size(self) -> int:
        return self.filesystem.get_file_info(self.path).size

    def download_to(self, dest: Path) -> None:
        """Copy the file to a local path in chunks (for files too big to hold in memory), atomically."""
        with self.filesystem.open_input_stream(self.path) as source:
            _write_local(dest, lambda out: shutil.copyfileobj(source, out, 1 << 24))

    def read_bytes(self) -> bytes:
        with self.filesystem.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    # ----------------------------------------------------------------------------------- writes
    def mkdir(self) -> None:
        if self.filesystem.type_name not in _OBJECT_STORES:  # object stores have no directories
            self.filesystem.create_dir(self.path, recursive=True)

    def unlink(self, missing_ok: bool = True) -> None:
        try:
            self.filesystem.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def delete_dir(self) -> None:
        if self.is_dir():
            self.filesystem.delete_dir(self.path)

    def write_with(self, write: Callable[[BinaryIO], object]) -> None:
        """Write the file atomically with `write(binary_file)`."""
        if self.is_local:
            _write_local(self.local_path, write)
            return
        buffer = io.BytesIO()
        write(buffer)
        self.write_bytes(buffer.getvalue())

    def write_bytes(self, data: bytes) -> None:
        if self.is_local:
            _write_local(self.local_path, lambda f: f.write(data))
            return
        fs = self.filesystem
        if fs.type_name in _OBJECT_STORES:
            with fs.open_output_stream(self.path) as out:
                out.write(data)
            return
        self.parent.mkdir()
        tmp = self.parent / f".{self.name}.{uuid.uuid4().hex[:12]}"
        try:
            with fs.open_output_stream(tmp.path) as out:
                out.write(data)
            fs.move(tmp.path, self.path)
        finally:
            tmp.unlink()

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def copy_to(self, dest: Location) -> None:
        dest.write_bytes(self.read_bytes())

    @property
    def can_rename(self) -> bool:
        """Whether a directory moves in one step (local, HDFS): an object store copies every object."""
        return self.filesystem.type_name not in _OBJECT_STORES

    def rename_to(self, dest: Location) -> None:
        """Move this file or directory to `dest` (which must not exist) in one rename."""
        if not self.can_rename:
            raise ValueError(f"{self.uri}: an object store cannot rename a directory")
        self.filesystem.move(self.path, dest.path)

    def tree(self) -> list[str]:
        """Relative paths of every file under this directory, sorted."""
        infos = self.filesystem.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        base = self.path.rstrip("/") + "/"
        return sorted(i.path[len(base):] for i in infos if i.type == pafs.FileType.File)


Where = str | os.PathLike | Location  # what functions that read or write a place accept


NO_SPACE = "no space left on device"


def _write_local(path: Path, write: Callable[[BinaryIO], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    recording: _KeepsWriteErrors | None = None
    try:
        with os.fdopen(fd, "wb") as f:
            recording = _KeepsWriteErrors(f)
            write(recording)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in (err, recording and recording.error)):
            raise OSError(f"{NO_SPACE} writing {path}: free space on its file system, or write elsewhere") from None
        raise


class _KeepsWriteErrors:
    """A binary file that keeps the OSError of a failed write: torch.save reports one as
    "[enforce fail at inline_container.cc] unexpected pos", which names neither file nor cause."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self._file.flush()


@lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_object_store(uri: str) -> bool:
    """Whether a URI names an object store (no rename, no exclusive create), by its scheme alone."""
    return _scheme(uri) in _OBJECT_STORE_SCHEMES


def _scheme(uri: str) -> str:
    scheme = urlsplit(uri).scheme
    return scheme if len(scheme) > 1 else ""  # one letter: a Windows drive, not a scheme


def _resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    parts = urlsplit(uri)
    scheme = _scheme(uri)
    if scheme == "":
        return _local(), os.path.abspath(uri)
    if scheme == "file":
        return _local(), unquote(parts.path)
    if scheme in _S3_SCHEMES:
        if not parts.netloc:
            raise ValueError(f"{uri}: an S3 URI needs a bucket (s3://bucket/key)")
        return _s3(os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("AWS_REGION")
                   or os.environ.get("AWS_DEFAULT_REGION")), f"{parts.netloc}{unquote(parts.path)}".rstrip("/")
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise UnsupportedFileSystemError(
            f"{uri}: no file system for the scheme '{scheme}' ({err}); use a local path, s3://, hdfs:// or gs://"
        ) from None


@lru_cache(maxsize=1)
def _local() -> pafs.LocalFileSystem:
    return pafs.LocalFileSystem()


@lru_cache(maxsize=8)
def _s3(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    options: dict[str, object] = {}
    if endpoint:
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=url.netloc, scheme=url.scheme)
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options)
