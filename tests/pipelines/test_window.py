"""A training window: `{run_date-Nd..run_date}` in the input path reads those days, each of them."""

import shutil

import pytest

from deepfm.config import load_config
from deepfm.errors import DO_NOT_RETRY, exit_code
from deepfm.features.preprocess_output import PreprocessOutput
from pipelines.drift import generate_stream
from pipelines.preprocess import run_preprocess
from pipelines.read import InputError, alternatives
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    out = tmp_path_factory.mktemp("window") / "raw"
    from deepfm.config import GenerateConfig

    generate_stream(GenerateConfig(output=str(out), rows=2_000, days=4, cardinality_scale=0.01,
                                   start_date="2026-11-01"))
    return out


def _config(raw, output, run_date, window="{run_date-2d..run_date}"):
    return load_config([REPO_ROOT / "conf/base.yaml", REPO_ROOT / "conf/datasets/drifting.yaml"],
                       [f"dataset.input.path={raw}/dt={window}", f"preprocess.output={output}/run_date={{run_date}}",
                        "preprocess.vocab.min_count=1"], run_date=run_date)


def test_a_window_reads_its_days_and_fits_the_vocabulary_on_them(spark, stream, tmp_path):
    cfg = _config(stream, tmp_path / "shards", "2026-11-04")
    assert cfg.dataset.input.path.endswith("/dt={2026-11-02,2026-11-03,2026-11-04}")
    run_preprocess(spark, cfg)
    output = PreprocessOutput.open(tmp_path / "shards" / "run_date=2026-11-04")
    manifest = output.manifest
    assert manifest.inputs["input"].files == 3 and manifest.rows.input == 6_000
    one_day = _config(stream, tmp_path / "one", "2026-11-04", window="{run_date}")
    run_preprocess(spark, one_day)
    # The window's vocabulary holds the values of all three days: more than one day's.
    sizes = PreprocessOutput.open(tmp_path / "one" / "run_date=2026-11-04").feature_map.vocab_sizes
    assert sum(output.feature_map.vocab_sizes.values()) > 1.3 * sum(sizes.values())


def test_a_window_with_a_day_without_logs_is_refused_naming_the_day(spark, stream, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(stream, raw)
    shutil.rmtree(raw / "dt=2026-11-03")
    with pytest.raises(InputError, match=r"input: no input files at \S+/dt=2026-11-03, one of the paths \S+ stands "
                                         r"for \(a window reads every one of its days") as err:
        run_preprocess(spark, _config(raw, tmp_path / "shards", "2026-11-04"))
    assert exit_code(err.value) == DO_NOT_RETRY
    assert not (tmp_path / "shards" / "run_date=2026-11-04").exists()


def test_alternatives_of_a_glob():
    assert alternatives("a/{x,y}/b{1,2}") == ["a/x/b1", "a/x/b2", "a/y/b1", "a/y/b2"]
    assert alternatives("a/dt=*/") == ["a/dt=*/"]
