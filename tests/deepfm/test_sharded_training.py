"""Training with sharded embedding tables (train.embeddings=sharded): real 2-process gloo runs on the
Criteo sample, the version they commit, and resuming one."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepfm.config import TrainConfig
from deepfm.training.checkpoint import load_torch
from deepfm.training.launch import run_training
from deepfm.training.model_versions import open_model_version
from tests.conftest import REPO_ROOT, run_cli
from tests.deepfm.test_train import SMALL_MODEL, _kill_when_checkpointed, _test_auc


def _cfg(data, output, **kw):
    return TrainConfig.model_validate({"data": str(data), "output": str(output), "epochs": 2, "batch_size": 256,
                                       "model": SMALL_MODEL, "threads": 1, "backend": "torch", "workers": 2, **kw})


@pytest.mark.parametrize("tables", [{"embedding_optimizer": "adam"}, {"embedding_optimizer": "rowwise_adagrad"},
                                    {"embedding_optimizer": "rowwise_adagrad", "table_precision": "bf16"}],
                         ids=["adam", "rowwise_adagrad", "rowwise_adagrad-bf16"])
def test_sharded_training_commits_a_version_that_scores_as_the_run_evaluated(criteo_shards, tmp_path, tables):
    trained = run_training(_cfg(criteo_shards, tmp_path / "m", embeddings="sharded", embedding_l2=1.0, **tables,
                                model={**SMALL_MODEL, "count_features": True}))
    out = Path(trained.model)
    assert 0.6 < trained.result.test["auc"] < 0.85
    files = {p.name for p in out.iterdir()}
    assert {"model.pt", "model.table-0000-of-0002.pt", "model.table-0001-of-0002.pt"} <= files
    assert not [name for name in files if name.startswith("checkpoint")]  # the build's checkpoints are gone
    # Row-wise Adagrad's sums, for a warm start, striped as the table is.
    sums = {f"table_accumulator-000{r}-of-0002.pt" for r in range(2)}
    assert (sums <= files) == (tables["embedding_optimizer"] == "rowwise_adagrad")
    # Each worker wrote its own stripe, every second row; the weights file holds all else.
    total = sum(json.loads((out / "model.json").read_text())["model"]["vocab_sizes"])
    stripes = [load_torch(out / f"model.table-000{r}-of-0002.pt") for r in range(2)]
    assert [len(s) for s in stripes] == [len(range(r, total, 2)) for r in range(2)]
    assert "embeddings.table.weight" not in load_torch(out / "model.pt")
    assert {s.dtype for s in stripes} == {torch.bfloat16 if tables.get("table_precision") else torch.float32}
    # The version put together from its stripes scores the test split exactly as the sharded run did.
    version = open_model_version(out)
    assert version.table_stripes == 2
    model = version.load()
    assert torch.equal(model.embeddings.table.weight[1::2], stripes[1])
    assert trained.result.test["auc"] == pytest.approx(_test_auc(model, criteo_shards), abs=1e-6)
    # Only the replicated parameters are compared between the workers: they stayed identical.
    first, second = trained.result.replica_fingerprints
    assert first == second
    # Mapped (what score does for a big model): the stripes are read in place, not put together or copied.
    mapped = version.load(mapped_from=[f.local_path for f in version.weight_files])
    assert trained.result.test["auc"] == pytest.approx(_test_auc(mapped, criteo_shards), abs=1e-6)
    stripes_in_place = mapped.embeddings.table.stripes
    assert [_file_mapped_at(s.data_ptr()) for s in stripes_in_place] == [str(f.local_path)
                                                                        for f in version.weight_files[1:]]


def _file_mapped_at(address: int) -> str | None:
    """The file this process has mapped at `address` (/proc/self/maps), if any."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(a, 16) for a in fields[0].split("-"))
            if start <= address < end:
                return fields[5].strip() if len(fields) == 6 else None
    return None


@pytest.mark.stack_neutral
def test_sharded_and_replicated_training_from_the_same_weights_end_with_equal_weights(criteo_shards, tmp_path):
    """The same 2 workers, data and steps: a sharded table takes the steps a replicated one does.
    Both start from one version's weights (warm start: a sharded table draws its own initial rows),
    with row-wise Adagrad, whose update is the same for a row's sparse or dense gradient."""
    start = run_training(_cfg(criteo_shards, tmp_path / "start", workers=1, epochs=1))
    common = {"epochs": 1, "embedding_optimizer": "rowwise_adagrad", "warm_start": start.model, "ema_decay": 0.0}
    sharded = run_training(_cfg(criteo_shards, tmp_path / "sharded", embeddings="sharded", **common))
    replicated = run_training(_cfg(criteo_shards, tmp_path / "replicated", **common))
    sharded_state = open_model_version(sharded.model).state_dict()
    replicated_state = open_model_version(replicated.model).state_dict()
    assert sharded_state.keys() == replicated_state.keys()
    before = open_model_version(start.model).state_dict()["embeddings.table.weight"]
    assert not torch.equal(replicated_state["embeddings.table.weight"], before)  # the steps moved the rows
    for name, weight in replicated_state.items():
        torch.testing.assert_close(sharded_state[name], weight, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.stack_neutral
def test_a_killed_sharded_run_resumes_to_the_uninterrupted_result(criteo_shards, tmp_path):
    common = ["--set", f"train.data={criteo_shards}", "--set", "train.epochs=2", "--set", "train.batch_size=64",
              "--set", "train.threads=1", "--set", "train.model.embedding_dim=8", "--set", "train.model.hidden=[32]",
              "--set", "train.checkpoint_every_steps=20", "--set", "train.ema_decay=0.9",
              "--set", "train.backend=torch", "--set", "train.workers=2", "--set", "train.embeddings=sharded"]
    cli = [sys.executable, "-m", "jobs.cli", "train", "--run-date", "2026-11-27", *common]
    full = subprocess.run([*cli, "--set", f"train.output={tmp_path / 'full'}"], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-2000:]
    building = tmp_path / "cut" / ".building-2026-11-27"
    # Killed once both workers have checkpointed (their files are written at the same step).
    state = _kill_when_checkpointed([*cli, "--set", f"train.output={tmp_path / 'cut'}"],
                                    building / "checkpoint.rank1.pt", also=building / "checkpoint.pt")
    assert state["global_step"] > 0
    resumed = subprocess.run([*cli, "--set", f"train.output={tmp_path / 'cut'}", "--resume", "auto"], cwd=REPO_ROOT,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "continuing the interrupted run of model version 2026-11-27" in resumed.stderr
    full_version, resumed_version = (open_model_version(tmp_path / run / "2026-11-27") for run in ("full", "cut"))
    # Resumed from every worker's checkpoint at one step, the run takes the uninterrupted one's steps.
    full_weights, resumed_weights = full_version.state_dict(), resumed_version.state_dict()
    for name, weight in full_weights.items():
        torch.testing.assert_close(resumed_weights[name], weight, rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize(("setting", "named"), [
    (["train.backend=horovod"], "needs backend 'torch'"),
    (["train.backend=torch", "train.model.mixed_dim_exponent=0.5"], "mixed_dim_exponent"),
])
def test_sharded_settings_that_cannot_work_are_refused_with_one_line(tmp_path, setting, named):
    args = ["train", "--set", f"train.data={tmp_path}", "--set", f"train.output={tmp_path / 'm'}",
            "--set", "train.embeddings=sharded", "--set", "train.workers=2"]
    for s in setting:
        args += ["--set", s]
    result = run_cli([sys.executable, "-m", "jobs.cli", *args])
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "train.embeddings" in last or "embeddings 'sharded'" in last
    assert named in last


def test_the_memory_check_counts_a_workers_share_of_sharded_rows():
    """Sharded over 4 workers a worker holds a quarter of the rows, their state and their average;
    the prior's per-row strengths stay whole on each."""
    from deepfm.training.memory import bytes_per_row

    def parts(embeddings: str, precision: str = "fp32") -> dict:
        cfg = TrainConfig(data="-", output="-", backend="torch", workers=4, embeddings=embeddings,
                          embedding_optimizer="rowwise_adagrad", model={"embedding_dim": 16},
                          table_precision=precision)
        return bytes_per_row(cfg, ema=precision == "fp32", centred_prior=False)

    assert parts("replicated") == {"table": 68, "optimizer_state": 4, "moving_average": 68, "prior": 4}
    assert parts("sharded") == {"table": 17, "optimizer_state": 1, "moving_average": 17, "prior": 4}
    assert parts("sharded", "bf16") == {"table": 8.5, "optimizer_state": 1, "prior": 4}  # 2 bytes a float


def test_replicated_bf16_tables_stay_identical_on_both_workers_and_ship_in_bf16(criteo_shards, tmp_path):
    """Stochastic rounding draws from torch's generator, which every rank advances alike."""
    trained = run_training(_cfg(criteo_shards, tmp_path / "m", embedding_optimizer="rowwise_adagrad",
                                table_precision="bf16"))
    first, second = trained.result.replica_fingerprints
    assert first == second and 0.6 < trained.result.test["auc"] < 0.85
    assert trained.result.regularization["ema_decay"] == 0  # auto: no average of bf16 rows
    shipped = load_torch(Path(trained.model) / "model.pt")["embeddings.table.weight"]
    assert shipped.dtype == torch.bfloat16
    model = open_model_version(trained.model).load()  # an fp32 model of the bf16 values: the same scores
    assert trained.result.test["auc"] == pytest.approx(_test_auc(model, criteo_shards), abs=1e-6)


def test_bf16_tables_with_adam_are_refused_naming_the_settings(tmp_path):
    result = run_cli([sys.executable, "-m", "jobs.cli", "train", "--set", f"train.data={tmp_path}",
                      "--set", f"train.output={tmp_path / 'm'}", "--set", "train.table_precision=bf16",
                      "--set", "train.embedding_optimizer=adam"])
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "table_precision 'bf16' needs embedding_optimizer 'rowwise_adagrad'" in last
