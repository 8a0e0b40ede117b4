"""The torch side on an object store: a real S3 server (moto) on loopback, reached through pyarrow.fs.

Train reads the preprocess output from s3:// and writes its model there; score and evaluate read
that model back from s3://. The same configuration with local paths is the reference.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from pyarrow import fs as pafs

from deepfm.config import Config, TrainConfig
from deepfm.storage.lease import OutputLockedError, held, lease_file
from deepfm.storage.location import Location, UnsupportedFileSystemError
from deepfm.training.checkpoint import load_torch
from deepfm.training.launch import run_training
from deepfm.training.model_versions import open_model_version
from pipelines.evaluate import run_evaluate
from pipelines.score import run_score
from tests.pipelines.conftest import in_process_probabilities
from tests.s3server import S3Server

BUCKET = "deepfm"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log").start()
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3, monkeypatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3


def test_location_reads_lists_and_replaces_files_atomically(s3_env):
    root = Location(f"s3://{BUCKET}/unit")
    (root / "b.parquet").write_bytes(b"bb")
    (root / "a.parquet").write_text("aa")
    (root / "notes.txt").write_text("x")
    assert [f.name for f in root.files(".parquet")] == ["a.parquet", "b.parquet"]
    assert root.is_dir() and (root / "a.parquet").is_file() and not (root / "zz").exists()
    assert (root / "a.parquet").read_text() == "aa"

    def fails_midway(f):
        f.write(b"half of a new file")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        (root / "a.parquet").write_with(fails_midway)
    assert (root / "a.parquet").read_text() == "aa"  # the old object, whole
    (root / "a.parquet").unlink()
    assert not (root / "a.parquet").exists()
    # Hadoop's name for the same bucket reaches the same objects.
    assert Location(f"s3a://{BUCKET}/unit/b.parquet").read_bytes() == b"bb"


def test_of_two_jobs_taking_a_free_lease_on_s3_at_once_the_later_write_holds_it(s3_env):
    """An object store has no exclusive create: a rival that found the lease free too writes it
    while this job's write settles; this job reads the rival's name back and is refused."""
    out = f"s3://{BUCKET}/leased/out"
    lease = lease_file(out)
    rival = {"host": "worker-7", "pid": 1, "job": "train", "started": time.time(), "heartbeat": time.time()}
    outcome: list[BaseException | None] = []

    def take() -> None:
        try:
            with held(out, "train", settle_s=3.0):
                outcome.append(None)
        except OutputLockedError as err:
            outcome.append(err)

    job = threading.Thread(target=take)
    job.start()
    while not lease.exists() and job.is_alive():
        time.sleep(0.01)
    lease.write_text(json.dumps(rival))  # the rival's write, landing after this job's
    job.join()
    assert isinstance(outcome[0], OutputLockedError)
    assert "taken at the same moment by train (pid 1 on worker-7" in str(outcome[0])
    assert json.loads(lease.read_text())["host"] == "worker-7"  # the holder's lease is left alone

    lease.unlink()
    with held(out, "train", settle_s=0.1) as me:  # alone, a job confirms its own lease and holds it
        assert json.loads(lease.read_text())["pid"] == me.pid
    assert not lease.exists()


def test_a_scheme_without_a_file_system_is_named():
    with pytest.raises(UnsupportedFileSystemError, match="'nosuchfs'"):
        Location("nosuchfs://bucket/model").exists()
    with pytest.raises(ValueError, match="reader 'petastorm' reads local and hdfs:// data only"):
        TrainConfig.model_validate({"data": "s3://b/prep", "output": "/tmp/m", "reader": "petastorm"})


def _train_cfg(data: str, output: str) -> TrainConfig:
    return TrainConfig.model_validate({
        "data": data, "output": output, "epochs": 1, "batch_size": 256, "threads": 1, "embedding_l2": 1e-6,
        "model": {"embedding_dim": 8, "hidden": [32, 16]}})


def test_train_from_s3_to_s3_then_score_and_evaluate_read_the_model_from_s3(spark, trained, s3_env, tmp_path):
    prep = trained["root"] / "prep"
    # One object at a time: pyarrow 14's threaded copy_files to S3 can hang.
    for file in (f for f in prep.rglob("*") if f.is_file()):
        Location(f"s3://{BUCKET}/prep/{file.relative_to(prep).as_posix()}").write_bytes(file.read_bytes())
    model_uri = f"s3://{BUCKET}/models/deepfm"

    remote = run_training(_train_cfg(f"s3://{BUCKET}/prep", model_uri))
    reference = run_training(_train_cfg(str(prep), str(tmp_path / "local-model")))
    # The same shards in the same order: the same weights, whichever store they came from.
    weights, local = load_torch(f"{remote.model}/model.pt"), load_torch(f"{reference.model}/model.pt")
    assert weights.keys() == local.keys() and all(torch.equal(weights[k], local[k]) for k in local)
    assert remote.result.test == reference.result.test
    paths = [i.path for i in s3_env.filesystem().get_file_info(pafs.FileSelector(f"{BUCKET}/models/deepfm",
                                                                                  recursive=True))]
    listed = {path.rsplit("/", 1)[-1] for path in paths}
    assert {"model.pt", "model.json", "metrics.json", "version.json", "training_curves.png",
            "vocabulary.parquet", "LATEST"} <= listed and "checkpoint.pt" not in listed
    # A version is committed by copying its objects: the build's objects are gone, no temporary ones left.
    assert not [path for path in paths if "/." in path]
    model = open_model_version(model_uri)

    test_split = str(prep / "test")
    scored = run_score(spark, Config.model_validate({**trained["cfg"], "score": {
        "model": model_uri, "output": str(tmp_path / "scores"), "preprocessed": test_split}}), "2026-11-27")
    table = pq.read_table(scored.partition.removeprefix("file:"))
    assert scored.model_version == model.name and set(table["model_version"].to_pylist()) == {model.name}
    assert scored.model_digest == model.weights_digest and set(table["model_digest"].to_pylist()) == {
        model.weights_digest}
    encoded = pq.read_table(test_split)
    expected = dict(zip(encoded["row_id"].to_pylist(), in_process_probabilities(model_uri, encoded), strict=True))
    got = dict(zip(table["row_id"].to_pylist(), table["probability"].to_numpy(), strict=True))
    assert got.keys() == expected.keys()
    assert max(abs(got[k] - expected[k]) for k in got) < 1e-5
    # Mapped in the executors: the weight files are copied from the store to the driver's disk once.
    mapped = run_score(spark, Config.model_validate({**trained["cfg"], "score": {
        "model": model_uri, "output": str(tmp_path / "mapped"), "preprocessed": test_split, "tables": "mapped"}}),
        "2026-11-27")
    assert pq.read_table(mapped.partition.removeprefix("file:")).sort_by("row_id")["probability"].equals(
        table.sort_by("row_id")["probability"])

    report_uri = f"s3://{BUCKET}/reports/2026-11-27"
    evaluated = run_evaluate(spark, Config.model_validate({**trained["cfg"], "evaluate": {
        "output": report_uri, "model": model_uri, "data": test_split}}))
    assert str(evaluated.report) == f"{report_uri}/report.html"
    page = Location(report_uri) / "report.html"
    assert page.read_text().count('src="data:image/png;base64,') == 3  # ROC, calibration, training curves
    metrics = json.loads((Location(report_uri) / "metrics.json").read_text())
    assert (metrics["model_version"], metrics["model_digest"]) == (model.name, model.weights_digest)
    assert metrics["overall"]["auc"] == pytest.approx(remote.result.test["auc"], abs=1e-6)
    assert np.isfinite(metrics["overall"]["logloss"])
