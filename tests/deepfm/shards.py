"""The embedded Criteo sample preprocessed as the training tests read it.

Made once per test session, or ahead of time for a machine without Java or Spark (the GPU machine
of `bench/gpu_check.sh --from-pack`, which points DEEPFM_TEST_SHARDS at them):

    python -m tests.deepfm.shards OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.preprocess import run_preprocess
from tests.conftest import criteo_dataset, local_spark_session, make_config


def preprocess_criteo(spark, out: Path) -> Path:
    run_preprocess(spark, make_config(criteo_dataset(), str(out), vocab={"min_count": 2},
                                      shards={"rows_per_row_group": 1000}))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.deepfm.shards OUT")
    session = local_spark_session()
    try:
        preprocess_criteo(session, Path(sys.argv[1]))
    finally:
        session.stop()
