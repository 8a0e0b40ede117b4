"""Model versions under a root: dated runs, up-to-date reruns, backfills, LATEST, and what readers resolve."""

import logging
import shutil

import pytest

from deepfm.config import TrainConfig
from deepfm.features.preprocess_output import PreprocessOutput
from deepfm.training.distributed import make_backend
from deepfm.training.launch import run_training, training_signature
from deepfm.training.model_versions import ModelRoot, ModelVersionError, open_model_version
from deepfm.training.train import train


@pytest.fixture
def shards(criteo_shards):
    return criteo_shards


def _cfg(data, output, **kw):
    return TrainConfig.model_validate({"data": str(data), "output": str(output), "epochs": 1, "batch_size": 512,
                                       "model": {"embedding_dim": 4, "hidden": [16]}, "threads": 1, **kw})


def test_dated_runs_make_versions_and_latest_follows_the_newest(shards, tmp_path):
    root = ModelRoot.of(tmp_path / "models" / "criteo")
    first = run_training(_cfg(shards, root.path), run_date="2026-11-27")
    assert (first.version, first.up_to_date) == ("2026-11-27", False)
    assert root.versions() == ["2026-11-27"] and root.latest() == "2026-11-27"
    record = root.record("2026-11-27")
    assert record.run_date == "2026-11-27" and record.test == first.result.test

    # A retry of the same date with the same input and config trains nothing.
    again = run_training(_cfg(shards, root.path), run_date="2026-11-27")
    assert again.up_to_date and again.result.test == first.result.test and again.model == first.model

    second = run_training(_cfg(shards, root.path), run_date="2026-11-28")
    assert root.versions() == ["2026-11-27", "2026-11-28"] and root.latest() == "2026-11-28"
    latest = root.path / "2026-11-28"
    assert open_model_version(root.path).path == open_model_version(root.path / "latest").path == latest
    assert open_model_version(root.path / "2026-11-27").path == root.path / "2026-11-27"

    # A backfill of an earlier date with another config replaces that version; LATEST stays on the newest.
    weights_before = (root.path / "2026-11-27" / "model.pt").read_bytes()
    backfill = run_training(_cfg(shards, root.path, seed=7), run_date="2026-11-27")
    assert not backfill.up_to_date and root.latest() == "2026-11-28"
    assert (root.path / "2026-11-27" / "model.pt").read_bytes() != weights_before
    assert root.record("2026-11-27").signature != record.signature
    assert sorted(p.name for p in root.path.local_path.iterdir() if p.name.startswith(".")) == []  # nothing left aside
    assert second.version == root.latest()


def test_without_a_run_date_a_changed_config_makes_a_new_version_and_an_unchanged_one_is_up_to_date(shards,
                                                                                                      tmp_path):
    root = ModelRoot.of(tmp_path / "m")
    first = run_training(_cfg(shards, root.path))
    assert run_training(_cfg(shards, root.path)).up_to_date
    assert run_training(_cfg(shards, root.path), force=True).version != first.version
    changed = run_training(_cfg(shards, root.path, lr=3e-3))
    assert not changed.up_to_date and root.latest() == changed.version and len(root.versions()) == 3


def test_a_model_directory_is_not_a_root_and_an_incomplete_version_is_refused(shards, tmp_path):
    root = ModelRoot.of(tmp_path / "m")
    version = run_training(_cfg(shards, root.path), run_date="2026-11-27").model
    with pytest.raises(ModelVersionError, match="is a model directory, not a model root"):
        run_training(_cfg(shards, version))
    # A version whose copy was cut short (no version.json) is not read, even by name.
    shutil.copytree(version, root.path.local_path / "2026-11-28")
    (root.path.local_path / "2026-11-28" / "version.json").unlink()
    with pytest.raises(ModelVersionError, match="2026-11-28 is not a complete version"):
        open_model_version(root.path / "2026-11-28")
    assert root.versions() == ["2026-11-27"]
    # A root whose first run has not finished has no latest version to read.
    (tmp_path / "new" / ".building-2026-11-29").mkdir(parents=True)
    with pytest.raises(ModelVersionError, match="has no complete model version yet"):
        open_model_version(tmp_path / "new")
    assert root.latest() == "2026-11-27"


def test_resume_auto_continues_only_an_interrupted_run_of_the_same_input_and_config(shards, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    root = ModelRoot.of(tmp_path / "models")
    cfg = _cfg(shards, root.path, checkpoint_every_steps=5)

    def interrupted(version: str, run_cfg: TrainConfig) -> None:
        """A build left with its checkpoint, as a killed run leaves it (commit would drop it)."""
        build = root.start_build(version, training_signature(PreprocessOutput.open(run_cfg.data), run_cfg))
        train(run_cfg.model_copy(update={"output": str(build)}), make_backend("none"))
        assert (build / "checkpoint.pt").is_file()

    interrupted("2026-11-27", cfg.model_copy(update={"lr": 1e-2}))  # then the config changed: not continued
    assert root.resumable_with(training_signature(PreprocessOutput.open(cfg.data), cfg), "2026-11-27") is None
    caplog.clear()
    run_training(cfg, resume="auto", run_date="2026-11-27")
    assert "training as usual" in caplog.text and "resumed from" not in caplog.text

    interrupted("2026-11-28", cfg)
    newest_interrupted = root.resumable_with(training_signature(PreprocessOutput.open(cfg.data), cfg))
    assert newest_interrupted == "2026-11-28"
    caplog.clear()
    trained = run_training(cfg, resume="auto", run_date="2026-11-28")
    assert "continuing the interrupted run of model version 2026-11-28" in caplog.text
    assert "resumed from" in caplog.text and trained.version == "2026-11-28"
    assert root.versions() == ["2026-11-27", "2026-11-28"] and not [n for n in root.path.subdirs() if n.startswith(".")]


def test_a_users_directory_named_like_the_run_date_is_refused_and_kept(shards, tmp_path):
    root = ModelRoot.of(tmp_path / "m")
    mine = root.path.local_path / "2026-11-27"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ModelVersionError, match=r"2026-11-27 exists and is not a model version written by deepfm-"):
        run_training(_cfg(shards, root.path), run_date="2026-11-27")
    assert (mine / "notes.txt").read_text() == "mine" and root.versions() == []
    assert not any(p.name.startswith(".building") for p in root.path.local_path.iterdir())  # refused before training


@pytest.mark.parametrize("pointer", [b"\xff\xfe\x00garbage", b"../other/2026-11-27\n", b"2026-12-01\n", b""])
def test_a_latest_pointer_that_is_not_a_version_of_its_root_is_refused_naming_it(shards, tmp_path, pointer):
    """Garbage, a path out of the root (which held another root's model), or a version that is gone."""
    other = ModelRoot.of(tmp_path / "other")
    run_training(_cfg(shards, other.path), run_date="2026-11-27")
    root = ModelRoot.of(tmp_path / "m")
    run_training(_cfg(shards, root.path), run_date="2026-11-28")
    (root.path.local_path / "LATEST").write_bytes(pointer)
    with pytest.raises(ModelVersionError) as err:
        open_model_version(root.path)
    assert str(root.path / "LATEST") in str(err.value) and "2026-11-28" in str(err.value)
    # the next version mends it
    run_training(_cfg(shards, root.path), run_date="2026-11-29")
    assert root.latest() == "2026-11-29"
