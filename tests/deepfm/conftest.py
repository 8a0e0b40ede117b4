import pytest

from pipelines.preprocess import run_preprocess
from tests.conftest import criteo_dataset, make_config


@pytest.fixture(scope="session")
def criteo_shards(spark, tmp_path_factory):
    """The embedded Criteo sample, preprocessed once for every training test (read-only)."""
    out = tmp_path_factory.mktemp("train") / "criteo"
    run_preprocess(spark, make_config(criteo_dataset(), str(out), vocab={"min_count": 2},
                                      shards={"rows_per_row_group": 1000}))
    return out
