"""Model versions: each train run builds a new version beside the ones in use and commits it whole.

    <train.output>/               the model's root
        2026-11-27/               a version: a complete model directory (deepfm/model_dir.py)
        2026-11-28/
        LATEST                    the name of the newest complete version
        .building-2026-11-29/     a run in progress, or one that was killed: --resume continues it
            training_signature    the input and config of the run that builds it (--resume auto)

A version is named by the run date (`--run-date`), else by the UTC time its run started, so names
sort by age. It is built in `.building-<version>/`, marked complete by `version.json` (its run date
and the signature of its input and config), and then renamed into place on a local or HDFS root.
An object store has no rename: the files are copied, with `version.json` last. `LATEST` moves
only after that, to the newest complete version; a backfill of an older date does not move it back.
A run that fails or is killed leaves every version and `LATEST` as they were.

Readers name a version directory, the root (meaning its latest version), or `<root>/latest`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from deepfm import strict_json
from deepfm.checkpoint import CHECKPOINT, MODEL_CONFIG
from deepfm.fs import Location, Where

log = logging.getLogger(__name__)

LATEST = "LATEST"
RECORD = "version.json"
BUILDING = ".building-"
BUILD_SIGNATURE = "training_signature"


class VersionError(ValueError):
    """A model root or version that cannot be used as asked."""


@dataclass(frozen=True)
class ModelRoot:
    path: Location

    @classmethod
    def of(cls, where: Where) -> ModelRoot:
        return cls(Location.of(where))

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        return sorted(name for name in self.path.subdirs()
                      if not name.startswith((".", "_")) and (self.path / name / RECORD).is_file())

    def latest(self) -> str | None:
        """The version LATEST names; a pointer that is not the name of a complete version of this
        root (unreadable, a path, `..`, a version that is gone) is refused, never followed."""
        pointer = self.path / LATEST
        if not pointer.is_file():
            return None
        try:
            name = pointer.read_text().strip()
        except UnicodeDecodeError:
            raise VersionError(f"{pointer} is not text: it must hold the name of a version in {self.path} (one of "
                               f"{self.versions() or 'none yet'}); write one there, or delete it") from None
        if (not name or "/" in name or "\\" in name or name.startswith((".", "_"))
                or not (self.path / name / RECORD).is_file()):  # what versions() lists, without listing them
            raise VersionError(f"{pointer} names {name[:80]!r}, which is not a complete version in {self.path} "
                               f"(versions: {self.versions() or 'none yet'}): write one of them there, or delete it")
        return name

    def _pointer_text(self) -> str | None:
        pointer = self.path / LATEST
        return pointer.read_bytes().decode("utf-8", errors="replace").strip() if pointer.is_file() else None

    def record(self, version: str) -> dict[str, Any] | None:
        """What a complete version records of its run; None when the version is not complete."""
        path = self.path / version / RECORD
        return json.loads(path.read_text()) if path.is_file() else None

    def new_version_name(self, run_date: str | None) -> str:
        """The run date, else the UTC time (with -2, -3... when a run of the same second exists)."""
        if run_date:
            return run_date
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
        taken = {n.removeprefix(BUILDING) for n in self.path.subdirs()}
        return next(name for name in (stamp, *(f"{stamp}-{i}" for i in range(2, 10_000))) if name not in taken)

    def building(self, version: str) -> Location:
        return self.path / f"{BUILDING}{version}"

    def check_replaceable(self, version: str) -> None:
        """A directory of a version's name that is not a complete version (a user's, another tool's)
        is never replaced: committing the version would delete it."""
        dest = self.path / version
        if dest.exists() and not (dest / RECORD).is_file():
            raise VersionError(f"{dest} exists and is not a model version written by deepfm-pipeline (it has no "
                               f"{RECORD}): it is never replaced; move it away yourself, or choose another "
                               "train.output or --run-date")

    def start_build(self, version: str, signature: str) -> Location:
        """An empty build of `version` (a failed run's is dropped), marked with the signature of the
        input and config that will fill it."""
        self.check_replaceable(version)
        build = self.building(version)
        build.delete_dir()
        build.mkdir()
        (build / BUILD_SIGNATURE).write_text(signature + "\n")
        return build

    def resumable_with(self, signature: str, version: str | None = None) -> str | None:
        """`version` (else the newest interrupted build) when a run of this same input and config
        left it with a checkpoint; None otherwise."""
        version = version or self.resumable()
        if version is None or not (self.building(version) / CHECKPOINT).is_file():
            return None
        marked = self.building(version) / BUILD_SIGNATURE
        return version if marked.is_file() and marked.read_text().strip() == signature else None

    def resumable(self) -> str | None:
        """The newest version whose build was left with a checkpoint (a killed or failed run)."""
        names = [n.removeprefix(BUILDING) for n in self.path.subdirs() if n.startswith(BUILDING)]
        return max((n for n in names if (self.building(n) / CHECKPOINT).is_file()), default=None)

    def check_is_root(self) -> None:
        """A model directory of the earlier, unversioned layout is not a root: never build inside it."""
        if (self.path / MODEL_CONFIG).is_file():
            raise VersionError(f"train.output {self.path} is a model directory, not a model root: versions are "
                               f"written under train.output, so choose a new one (e.g. {self.path.parent}/models/"
                               f"<name>); score and evaluate still read {self.path} as it is")

    def commit(self, version: str, record: dict[str, Any]) -> Location:
        """Make the build of `version` a complete version (replacing one of that name), then move LATEST."""
        build, dest = self.building(version), self.path / version
        self.check_replaceable(version)  # checked at the start too; a directory may appear while training
        (build / CHECKPOINT).unlink()  # only an interrupted run resumes: a version is never trained further
        (build / BUILD_SIGNATURE).unlink()  # version.json records it
        (build / RECORD).write_text(strict_json.dumps(record, indent=2, sort_keys=True))
        if self.path.can_rename:
            replaced = self.path / f".replaced-{version}-{uuid.uuid4().hex[:8]}"
            if dest.exists():
                dest.rename_to(replaced)
            build.rename_to(dest)
            replaced.delete_dir()
        else:
            (dest / RECORD).unlink()  # a version being replaced is incomplete until its record is back
            for name in build.tree():
                if name != RECORD:
                    (build / name).copy_to(dest / name)
            (build / RECORD).copy_to(dest / RECORD)
            build.delete_dir()
        newest = self.versions()[-1]
        if self._pointer_text() != newest:  # a damaged LATEST is mended by the next version
            (self.path / LATEST).write_text(newest + "\n")
        log.info("committed model version %s; %s is %s", dest, LATEST, newest)
        return dest


def resolve(where: Where) -> Location:
    """The model directory a reader means: a version (or any model directory) as it is, a root's
    latest version, or `<root>/latest`."""
    path = Location.of(where)
    if (path / MODEL_CONFIG).is_file():
        if (path.parent / LATEST).is_file() and not (path / RECORD).is_file():
            raise VersionError(f"{path} is not a complete version ({RECORD} is missing): it is being written, or "
                               f"its copy was cut short; use {path.parent}/latest")
        return path
    root = ModelRoot(path.parent if path.name == "latest" else path)
    latest = root.latest()
    if latest is not None:
        return root.path / latest
    if path.name == "latest" or any(n.startswith(BUILDING) for n in root.path.subdirs()):
        raise VersionError(f"{root.path} has no complete model version yet ({LATEST} is missing): wait for its "
                           "first `deepfm-pipeline train` to finish")
    return path
