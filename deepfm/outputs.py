"""Which directories the project may replace: only those it wrote.

Every output directory a stage commits (preprocess output, score partition, evaluation report)
carries `_DEEPFM_OUTPUT`, written before the directory is swapped in. A rerun replaces a directory
only when it holds that marker, or nothing at all; anything else at an output path (a user's
data, another tool's output, an output from before the marker existed) stops the job with exit 2
and is left as it is. The leading underscore keeps Spark and pyarrow from reading it as data.
"""

from __future__ import annotations

import datetime as dt
import json

MARKER = "_DEEPFM_OUTPUT"


def marker_text(stage: str) -> str:
    return json.dumps({"written_by": "deepfm-pipeline", "stage": stage,
                       "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})


def not_ours(path: object, key: str) -> FileExistsError:
    return FileExistsError(f"{path} exists and was not written by deepfm-pipeline (it has no {MARKER}): it is never "
                           f"replaced; choose another {key}, or move it away yourself")
