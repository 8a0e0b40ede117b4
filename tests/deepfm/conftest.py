import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def criteo_shards(request, tmp_path_factory):
    """The embedded Criteo sample, preprocessed once for every training test (read-only); made ahead
    of time where DEEPFM_TEST_SHARDS names them (a machine without Spark: tests/deepfm/shards.py)."""
    if prepared := os.environ.get("DEEPFM_TEST_SHARDS"):
        return Path(prepared)
    from tests.deepfm.shards import preprocess_criteo

    return preprocess_criteo(request.getfixturevalue("spark"), tmp_path_factory.mktemp("train") / "criteo")
