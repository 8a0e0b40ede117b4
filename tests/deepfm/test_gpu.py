"""What needs a GPU, run by `bench/gpu_check.sh` (marker `gpu`, outside the default run).

Training on the device in fp32 and bf16, the data-parallel backends on it (DDP over NCCL with
dense tables, Horovod built with NCCL), and the score job's executor code on the device equal to
the CPU's scores. `bench/gpu_check.sh --cpu-dry-run` runs the same tests on the CPU
(DEEPFM_TEST_DEVICE=cpu) to prove the script and the tests where no GPU is at hand.
"""

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from deepfm.config import TrainConfig
from deepfm.serving.inference import ArrowScorer, predict_batch
from deepfm.training.launch import run_training
from deepfm.training.model_versions import open_model_version
from deepfm.training.precision import ALLOW_SLOW_BF16

DEVICE = os.environ.get("DEEPFM_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def device_present():
    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.fail("these tests need a GPU that torch sees: run bench/gpu_check.sh on a GPU machine "
                    "(or DEEPFM_TEST_DEVICE=cpu to run them on the CPU)")


def _train(data, output, **kw):
    return run_training(TrainConfig.model_validate({
        "data": str(data), "output": str(output), "epochs": 2, "batch_size": 512, "device": DEVICE,
        "model": {"embedding_dim": 8, "hidden": [64, 32]}, **kw}))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_on_the_device_commits_a_model_that_loads_on_the_cpu(criteo_shards, tmp_path, monkeypatch,
                                                                      precision):
    monkeypatch.setenv(ALLOW_SLOW_BF16, "1")  # a dry run on a CPU without bf16 units checks the numerics
    trained = _train(criteo_shards, tmp_path / "m", precision=precision)
    assert 0.62 < trained.result.test["auc"] < 0.85
    md = open_model_version(trained.model)
    assert md.config.precision == precision
    assert all(p.device.type == "cpu" for p in md.load("cpu").parameters())


@pytest.mark.parametrize("backend", ["torch", "horovod"])
def test_the_data_parallel_backends_train_on_the_device(criteo_shards, tmp_path, backend):
    if backend == "horovod" and DEVICE == "cuda":
        import horovod.torch as hvd

        assert hvd.nccl_built(), "Horovod was built without NCCL: rerun scripts/setup.sh on the GPU machine"
    trained = _train(criteo_shards, tmp_path / "m", backend=backend, workers=1)
    assert trained.result.workers == 1 and 0.62 < trained.result.test["auc"] < 0.85
    meta = json.loads((Path(trained.model) / "model.json").read_text())
    # NCCL has no sparse allreduce: DDP on a GPU trains the tables with dense gradients.
    assert meta["model"]["sparse_embeddings"] is not (backend == "torch" and DEVICE == "cuda")


def test_the_scorer_on_the_device_equals_the_cpu(criteo_shards, tmp_path):
    md = open_model_version(_train(criteo_shards, tmp_path / "m", epochs=1).model)
    batch = pq.read_table(criteo_shards / "test").to_batches(max_chunksize=4096)[0]
    categorical = tuple(f.name for f in md.feature_map.categorical)
    dense = tuple(f.name for f in md.feature_map.dense)
    on_cpu = predict_batch(md.load("cpu"), batch, categorical, dense, "cpu")
    scorer = ArrowScorer(weights_digest=md.weights_digest, model_config=md.config.to_dict(),
                         categorical=categorical, dense=dense, keep=("label",), weights=md.weights.read_bytes,
                         device=DEVICE)
    scored = next(scorer(iter([batch]))).column("probability").to_numpy()
    assert len(scored) == batch.num_rows
    assert np.abs(scored - on_cpu).max() < 1e-5
