"""Files named by string, on either of the project's two ways to reach a file system.

The Spark stages (preprocess, score, evaluate) reach their outputs through Hadoop's FileSystem
(deepfm/storage/hadoop.py), so that `hdfs://`, `s3a://` and `gs://` paths use Spark's own
connectors and credentials. The torch side and the jobs without Spark (train, generate, the
report) reach them through pyarrow (`ArrowFiles`, over deepfm/storage/location.py). Both serve
`Files`, the operations the stage contracts and the commit protocol (deepfm/storage/commit.py)
are written against, once.
"""

from __future__ import annotations

from typing import Protocol

from deepfm.storage.lease import LeaseFile, LocationLease
from deepfm.storage.location import NO_SPACE, Location

__all__ = ["ARROW_FILES", "NO_SPACE", "ArrowFiles", "Files"]


class Files(Protocol):
    def qualify(self, path: str) -> str:
        """The absolute form of a path, as the file system names it."""

    def exists(self, path: str) -> bool: ...

    def is_file(self, path: str) -> bool: ...

    def list_names(self, path: str) -> list[str]:
        """Names of everything directly in a directory, hidden files included."""

    def siblings(self, path: str, prefix: str) -> list[str]:
        """The paths beside `path` whose names start with `prefix`."""

    def tree(self, path: str) -> list[str]:
        """Relative paths of every file under a directory."""

    def read_text(self, path: str) -> str: ...

    def write_text(self, path: str, text: str) -> None:
        """Write a file whole (a reader sees the old file or the new one)."""

    def mkdir(self, path: str) -> None: ...

    def delete(self, path: str) -> None:
        """Remove a file or a directory tree; nothing when it does not exist."""

    def can_rename(self, path: str) -> bool:
        """Whether a directory there moves in one step (an object store copies every object)."""

    def rename(self, src: str, dst: str) -> None: ...

    def copy(self, src: str, dst: str) -> None: ...

    def lease(self, path: str) -> LeaseFile: ...


class ArrowFiles:
    """`Files` on every file system pyarrow reaches (deepfm/storage/location.py)."""

    def qualify(self, path: str) -> str:
        return Location.of(path).uri

    def exists(self, path: str) -> bool:
        return Location.of(path).exists()

    def is_file(self, path: str) -> bool:
        return Location.of(path).is_file()

    def list_names(self, path: str) -> list[str]:
        directory = Location.of(path)
        return [f.name for f in directory.files()] + directory.subdirs()

    def siblings(self, path: str, prefix: str) -> list[str]:
        parent = Location.of(path).parent
        return [str(parent / name) for name in self.list_names(str(parent)) if name.startswith(prefix)]

    def tree(self, path: str) -> list[str]:
        return Location.of(path).tree()

    def read_text(self, path: str) -> str:
        return Location.of(path).read_text()

    def write_text(self, path: str, text: str) -> None:
        Location.of(path).write_text(text)

    def mkdir(self, path: str) -> None:
        Location.of(path).mkdir()

    def delete(self, path: str) -> None:
        location = Location.of(path)
        if location.is_dir():
            location.delete_dir()
        else:
            location.unlink()

    def can_rename(self, path: str) -> bool:
        return Location.of(path).can_rename

    def rename(self, src: str, dst: str) -> None:
        Location.of(src).rename_to(Location.of(dst))

    def copy(self, src: str, dst: str) -> None:
        Location.of(src).copy_to(Location.of(dst))

    def lease(self, path: str) -> LeaseFile:
        return LocationLease(Location.of(path))


ARROW_FILES: Files = ArrowFiles()
