"""Committing an output directory: the one protocol every stage that writes a directory follows.

A job builds its output in a hidden sibling (`.<name>.tmp-<id>`) while it holds the output's lease
(deepfm/storage/lease.py), writes `_DEEPFM_OUTPUT` and then `_SUCCESS` into it, and swaps it into
place: by rename where the file system has one (local, HDFS), else by copying its files with
`_SUCCESS` last (an object store, where a directory is complete once `_SUCCESS` is there). A job
that fails or is killed leaves the destination as it was; the next run removes its leftover
temporary sibling. A second job into the same output exits 2 naming the first.

Only a directory the project wrote (it holds `_DEEPFM_OUTPUT`) or an empty one is ever replaced:
anything else at an output path (a user's data, another tool's output) stops the job with exit 2
and is left as it is. The leading underscores keep Spark and pyarrow from reading either marker as
data. The same swap (`swap_into_place`) commits a model version (deepfm/training/model_versions.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from deepfm.storage import lease
from deepfm.storage.files import NO_SPACE, Files

log = logging.getLogger(__name__)

MARKER = "_DEEPFM_OUTPUT"
SUCCESS = "_SUCCESS"


def marker_text(stage: str) -> str:
    return json.dumps({"written_by": "deepfm-pipeline", "stage": stage,
                       "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})


def not_ours(path: object, key: str) -> FileExistsError:
    return FileExistsError(f"{path} exists and was not written by deepfm-pipeline (it has no {MARKER}): it is never "
                           f"replaced; choose another {key}, or move it away yourself")


def check_replaceable(files: Files, dest: str, key: str) -> str:
    """The qualified destination, after checking that it may be replaced: nothing there, an empty
    directory, or an output this project committed. `key` is the config key that named it."""
    dest = files.qualify(dest).rstrip("/")
    if files.is_file(dest):  # an output is a directory: a file there is someone else's, never replaced
        raise FileExistsError(f"{dest} is a file, not an output directory: choose another {key}")
    if files.exists(dest) and not files.exists(f"{dest}/{MARKER}") and files.list_names(dest):
        raise not_ours(dest, key)
    return dest


def is_committed(files: Files, path: str) -> bool:
    return files.exists(f"{path.rstrip('/')}/{SUCCESS}")


@contextmanager
def committed_directory(files: Files, dest: str, stage: str, key: str) -> Iterator[str]:
    """Yield a temporary directory to fill; on success it becomes `dest`, whole."""
    dest = check_replaceable(files, dest, key)
    parent, name = dest.rsplit("/", 1)
    with lease.held(dest, stage, lease=files.lease(f"{parent}/.{name}.lease"), key=key):
        for stale in files.siblings(dest, f".{name}.tmp-"):
            log.warning("removing leftover temporary output of an earlier failed run: %s", stale)
            files.delete(stale)
        tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
        files.mkdir(tmp)
        try:
            yield tmp
            files.write_text(f"{tmp}/{MARKER}", marker_text(stage))
            files.write_text(f"{tmp}/{SUCCESS}", "")
            swap_into_place(files, tmp, dest, last=SUCCESS)
            log.info("committed %s", dest)
        except Exception as err:
            if NO_SPACE not in str(err).lower():
                raise
            # Spark's error is a stack from a task, whose first line names neither cause nor place
            raise OSError(f"{NO_SPACE} while writing {dest}: free space on its file system (or in Spark's "
                          f"scratch space, spark.local.dir), or choose another {key}; {dest} is as it was") from None
        finally:
            files.delete(tmp)


def swap_into_place(files: Files, build: str, dest: str, last: str) -> None:
    """Make the complete directory `build` be `dest`, replacing what is there; `last` is the file
    whose presence marks `dest` complete. A reader sees the old directory or the whole new one
    (where the store cannot rename: an incomplete one, without `last`)."""
    if files.can_rename(dest):
        parent, name = dest.rsplit("/", 1)
        old = f"{parent}/.{name}.old-{uuid.uuid4().hex[:12]}"
        if files.exists(dest):
            files.rename(dest, old)
        files.rename(build, dest)
        files.delete(old)
        return
    files.delete(dest)
    names = files.tree(build)
    for relative in sorted(names, key=lambda n: n == last):
        files.copy(f"{build}/{relative}", f"{dest}/{relative}")
    files.delete(build)
