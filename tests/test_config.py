import re
from pathlib import Path

import pytest

from deepfm.config import ConfigError, config_hash, load_config
from tests.conftest import REPO_ROOT

CONF = REPO_ROOT / "conf"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_configs_load_and_layer():
    cfg = load_config([CONF / "base.yaml", CONF / "datasets/criteo.yaml", CONF / "env/local.yaml"])
    columns = cfg.dataset.input.resolved_columns
    assert [c.name for c in columns][:3] == ["label", "I1", "I2"]
    assert len(columns) == 40 and columns[-1].name == "C26"
    # criteo.yaml overrides base.yaml's min_count; base.yaml's other vocab keys survive the merge
    assert cfg.preprocess.vocab.min_count == 2
    assert cfg.preprocess.vocab.broadcast_max_entries == 2_000_000
    assert cfg.spark.master == "local[*]"
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == 8


@pytest.mark.parametrize("name", ["obd.yaml", "synthetic.yaml", "synthetic_joined.yaml"])
def test_every_dataset_config_validates(name):
    cfg = load_config([CONF / "base.yaml", CONF / "datasets" / name])
    assert cfg.dataset.feature_columns


def test_set_overrides_after_files_and_keeps_dotted_spark_keys():
    cfg = load_config(
        [CONF / "base.yaml", CONF / "datasets/criteo.yaml"],
        ["preprocess.vocab.min_count=7", "spark.conf.spark.sql.shuffle.partitions=3", "dataset.split.seed=1"],
    )
    assert cfg.preprocess.vocab.min_count == 7
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == 3
    assert cfg.dataset.split.seed == 1


def test_unknown_key_names_key_and_file(tmp_path):
    bad = _write(tmp_path, "bad.yaml", "preprocess:\n  output: x\n  vocab:\n    min_cout: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config([CONF / "base.yaml", bad])
    assert f"preprocess.vocab.min_cout (set in {bad}): unknown key; did you mean 'preprocess.vocab.min_count'?" in str(
        err.value)


@pytest.mark.parametrize(("typo", "nearest"), [
    ("train.model.hiden=[4]", "train.model.hidden"),
    ("dataset.input.columns=[{name: label, role: label, dtyp: int}]", "dataset.input.columns.0.dtype"),
    ("tune.space={train.lr: {lw: 0.1, high: 1}}", "tune.space.train.lr.low"),
])
def test_an_unknown_key_suggests_the_nearest_valid_one_within_lists_and_mappings(typo, nearest):
    with pytest.raises(ConfigError, match=f"unknown key; did you mean '{re.escape(nearest)}'"):
        load_config([CONF / "base.yaml", CONF / "datasets/criteo.yaml"], [typo, "tune.output=t"])


def test_an_unknown_key_like_no_valid_one_points_to_the_reference():
    with pytest.raises(ConfigError, match="train.xyzzy .*unknown key; check the spelling against the configuration"):
        load_config([CONF / "base.yaml"], ["train.xyzzy=1"])


def test_wrong_type_names_key_and_file(tmp_path):
    bad = _write(tmp_path, "bad.yaml", "preprocess:\n  output: x\n  max_reject_rate: lots\n")
    with pytest.raises(ConfigError) as err:
        load_config([bad])
    assert "preprocess.max_reject_rate" in str(err.value) and str(bad) in str(err.value)


def test_a_search_range_outside_its_train_setting_names_the_key_and_only_its_file(tmp_path):
    bad = _write(tmp_path, "bad.yaml", "tune:\n  space:\n    train.model.dropout: {low: 0.0, high: 1.5}\n")
    with pytest.raises(ConfigError) as err:
        load_config([CONF / "base.yaml", CONF / "datasets" / "criteo.yaml", CONF / "tune.yaml", bad])
    assert str(err.value).splitlines()[1].strip() == (
        f"tune.space.train.model.dropout (set in {bad}): the value 1.5 is not a valid train.model.dropout "
        "(Input should be less than 1)")


def test_missing_required_value(tmp_path):
    bad = _write(tmp_path, "bad.yaml", "dataset:\n  name: x\n  input:\n    columns: []\n")
    with pytest.raises(ConfigError) as err:
        load_config([bad])
    assert "dataset.input.path" in str(err.value) and "Field required" in str(err.value)


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match="train \\+ valid \\+ test must be 1"):
        load_config([CONF / "base.yaml", CONF / "datasets/criteo.yaml"], ["dataset.split.train=0.5"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([tmp_path / "nope.yaml"])
    broken = _write(tmp_path, "broken.yaml", "a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([broken])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config([CONF / "base.yaml"], ["preprocess.output"])


def test_label_and_roles_are_checked(tmp_path):
    bad = _write(
        tmp_path,
        "bad.yaml",
        "dataset:\n  name: x\n  input:\n    path: p\n    columns:\n      - {name: a, role: categorical}\n",
    )
    with pytest.raises(ConfigError, match="exactly one column with role 'label'"):
        load_config([bad])


def test_name_ranges_expand():
    cfg = load_config([CONF / "base.yaml", CONF / "datasets/obd.yaml"])
    names = [c.name for c in cfg.dataset.all_columns]
    assert "user-item_affinity_0" in names and "user-item_affinity_79" in names
    assert "user-item_affinity_80" not in names
    # the side table's join key is not repeated among the joined columns
    assert names.count("item_id") == 1 and "item_feature_3" in names


def test_config_hash_is_stable_and_sensitive():
    a = load_config([CONF / "base.yaml", CONF / "datasets/criteo.yaml"])
    b = load_config([CONF / "base.yaml", CONF / "datasets/criteo.yaml"])
    c = load_config([CONF / "base.yaml", CONF / "datasets/criteo.yaml"], ["dataset.split.seed=3"])
    assert config_hash(a.dataset) == config_hash(b.dataset) != config_hash(c.dataset)


def test_relative_paths_become_absolute_from_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config([CONF / "base.yaml", CONF / "datasets/criteo.yaml"],
                      ["train.data=out/shards", "score.output=s3a://bucket/scores", "evaluate.data=file:///x/test"])
    assert cfg.train.data == str(tmp_path / "out" / "shards")
    assert cfg.preprocess.output == str(tmp_path / "out" / "criteo")
    assert cfg.dataset.input.path == str((tmp_path / "../shared/data/criteo/criteo_kaggle_head10k.tsv").resolve())
    assert cfg.score.output == "s3a://bucket/scores"  # URIs are kept as written
    assert cfg.evaluate.data == "file:///x/test"


def test_conf_names_fall_back_to_the_packaged_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(["conf/base.yaml", "datasets/obd.yaml"])
    assert cfg.dataset.name == "obd"
    with pytest.raises(ConfigError) as err:
        load_config(["conf/datasets/nope.yaml"])
    assert "conf/datasets/nope.yaml" in str(err.value) and "datasets/obd.yaml" in str(err.value)


def test_packaged_configuration_is_overridable(tmp_path, monkeypatch):
    (tmp_path / "datasets").mkdir()
    _write(tmp_path, "datasets/obd.yaml", "dataset:\n  name: mine\n")
    monkeypatch.setenv("DEEPFM_CONF_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path / "datasets")
    with pytest.raises(ConfigError) as err:  # found in DEEPFM_CONF_DIR, and validated
        load_config(["conf/datasets/obd.yaml"])
    assert "dataset.input" in str(err.value) and str(tmp_path / "datasets/obd.yaml") in str(err.value)


def test_yaml_that_is_not_utf8_or_a_bad_set_value_names_the_source(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("preprocess:\n  output: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"{bad}: not UTF-8"):
        load_config([bad])
    with pytest.raises(ConfigError, match=r"--set train.lr=\[0.1: the value is not valid YAML"):
        load_config([CONF / "base.yaml"], ["train.lr=[0.1"])


def test_the_run_date_fills_every_dated_value(tmp_path):
    daily = _write(tmp_path, "daily.yaml", "preprocess:\n  output: out/criteo/run_date={run_date}\n"
                                           "train:\n  data: out/criteo/run_date={run_date}\n")
    files = [CONF / "base.yaml", CONF / "datasets/criteo.yaml", daily]
    cfg = load_config(files, ["score.output=s3://bucket/scores/{run_date}/x"], run_date="2026-11-27")
    assert cfg.preprocess.output.endswith("/out/criteo/run_date=2026-11-27")
    assert cfg.train.data == cfg.preprocess.output
    assert cfg.score.output == "s3://bucket/scores/2026-11-27/x"
    with pytest.raises(ConfigError, match=rf"preprocess.output \(set in {daily}\) uses {{run_date}}: pass "
                                          "--run-date YYYY-MM-DD"):
        load_config(files)


def test_the_tracking_store_is_a_directory_a_database_or_a_server(tmp_path, monkeypatch):
    from deepfm.config import TrackingConfig

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert TrackingConfig().destination() == (f"sqlite:///{tmp_path}/mlruns/mlflow.db",
                                              (tmp_path / "mlruns" / "artifacts").as_uri())
    assert TrackingConfig(uri="file:/srv/ml").destination() == ("sqlite:////srv/ml/mlflow.db", "file:///srv/ml/artifacts")
    assert TrackingConfig(uri="sqlite:////srv/ml/t.db").destination()[1] == "file:///srv/ml/artifacts"
    assert TrackingConfig(uri="http://mlflow:5000").destination() == ("http://mlflow:5000", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert TrackingConfig().destination()[0] == "http://from-env:5000"
    assert TrackingConfig(uri="store").destination()[0] == f"sqlite:///{tmp_path}/store/mlflow.db"


def test_a_key_set_twice_in_one_file_is_refused_naming_the_key_the_file_and_both_lines(tmp_path):
    bad = _write(tmp_path, "twice.yaml", "preprocess:\n  output: a\n  max_reject_rate: 0.1\n  output: b\n")
    with pytest.raises(ConfigError) as err:
        load_config([CONF / "base.yaml", bad])
    assert str(err.value) == f"{bad}: the key 'output' is set twice in one mapping, on lines 2 and 4: keep one"
    # the same key in two mappings, or in two files (layering), is no duplicate
    layered = _write(tmp_path, "layered.yaml", "preprocess:\n  output: a\ntrain:\n  output: b\n  data: a\n")
    assert load_config([CONF / "base.yaml", layered, layered]).train.output.endswith("/b")


@pytest.mark.parametrize("key", ["train.output", "preprocess.output", "score.output"])
def test_an_empty_output_path_is_refused_naming_the_key(key):
    with pytest.raises(ConfigError) as err:
        load_config([CONF / "base.yaml", CONF / "datasets/criteo.yaml"],
                    [f"{key}="])
    assert f"{key} (set in --set {key}=): an empty path: name a file or directory" in str(err.value)


def test_an_engine_key_of_earlier_versions_is_refused_naming_the_file_and_what_to_do(tmp_path):
    """preprocess/score.parse and .encode chose Arrow or Spark SQL; the pipeline now does."""
    old = _write(tmp_path, "old.yaml", "score:\n  parse: spark\n")
    with pytest.raises(ConfigError) as err:
        load_config([CONF / "base.yaml", old])
    assert str(err.value).startswith(f"score.parse (set in {old}) is no longer a setting: rows are parsed and "
                                     "encoded in Arrow")
    assert str(err.value).endswith(": delete it")
    with pytest.raises(ConfigError, match=r"preprocess\.encode \(set in --set preprocess\.encode=spark\)"):
        load_config([CONF / "base.yaml"], ["preprocess.encode=spark"])


def test_petastorm_is_refused_at_once_on_a_stack_that_cannot_run_it(tmp_path):
    """The named stack runs it; the current one (STACK=current) refuses it when the config is read,
    naming the setting and the stack, before Spark or a worker starts."""
    from deepfm.stack import why_not_petastorm
    from tests.conftest import CLI, run_cli

    result = run_cli([*CLI, "train", "--set", "train.reader=petastorm", "--set", f"train.data={tmp_path / 'absent'}"])
    assert result.returncode == 2
    if why_not_petastorm() is None:
        assert "train.reader" not in result.stderr and "absent" in result.stderr  # past the config, to the data
    else:
        assert re.search(r"train\.reader 'petastorm': this stack \(pyspark 4\.\S+, pyarrow \d+\S*, numpy 2\.\S+, "
                         r"pandas \S+, torch \S+\) has no working Petastorm.*use train\.reader 'native'", result.stderr)
