"""train.precision bf16: the MLP's products in bfloat16 where the hardware has bf16 units, the
model records it so every later forward pass (score, pyfunc, export) computes the same way, and
training refuses it where it would be slower than fp32."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from deepfm.config import TrainConfig
from deepfm.model import DeepFM
from deepfm.serving.export import example_inputs, export_torchscript
from deepfm.training.launch import run_training
from deepfm.training.model_versions import open_model_version
from deepfm.training.precision import ALLOW_SLOW_BF16, Bf16Support, PrecisionError, bf16_support, refuse_slow_bf16
from tests.conftest import CLI, run_cli

SMALL = {"embedding_dim": 8, "hidden": [64, 32]}


def _train(data, output, precision):
    return run_training(TrainConfig.model_validate({
        "data": str(data), "output": str(output), "epochs": 2, "batch_size": 256, "model": SMALL, "threads": 1,
        "precision": precision}))


@pytest.fixture(scope="module")
def both(criteo_shards, tmp_path_factory):
    """The same training run in fp32 and bf16 (bf16 numerics are checked on any CPU)."""
    root = tmp_path_factory.mktemp("precision")
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ALLOW_SLOW_BF16, "1")
        return {precision: _train(criteo_shards, root / precision, precision) for precision in ("fp32", "bf16")}


def test_bf16_training_runs_the_mlp_in_bfloat16_and_keeps_fp32_quality(both):
    md = open_model_version(both["bf16"].model)
    assert md.config.precision == "bf16"
    assert json.loads((Path(both["bf16"].model) / "model.json").read_text())["train"]["precision"] == "bf16"
    model = md.load()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    seen = {}
    model.deep.mlp[0].register_forward_hook(lambda _m, _i, out: seen.update(mlp=out.dtype))
    model.fm.register_forward_hook(lambda _m, _i, out: seen.update(fm=out.dtype))
    logits = model(*example_inputs(md, 32))
    assert seen == {"mlp": torch.bfloat16, "fm": torch.float32} and logits.dtype == torch.float32
    # Same seed, same data: only the arithmetic differs, so quality must too by no more than noise.
    assert abs(both["bf16"].result.test["auc"] - both["fp32"].result.test["auc"]) < 0.005
    assert abs(both["bf16"].result.test["logloss"] - both["fp32"].result.test["logloss"]) < 0.005


def test_a_bf16_model_scores_and_exports_in_bf16(both):
    md = open_model_version(both["bf16"].model)
    model = md.load()
    as_fp32 = DeepFM(dataclasses.replace(md.config, precision="fp32"))
    as_fp32.load_state_dict(model.state_dict())
    ids, dense = example_inputs(md, 2000)
    with torch.no_grad():
        bf16 = torch.sigmoid(model(ids, dense))
        fp32 = torch.sigmoid(as_fp32.eval()(ids, dense))
        first_rows = torch.sigmoid(model(ids[:300], dense[:300]))
    difference = (bf16 - fp32).abs().max().item()
    assert 0 < difference < 0.01  # the loaded model computes in bf16, and bf16 is close
    assert (first_rows - bf16[:300]).abs().max() < 1e-6  # nor does a row's score depend on its batch
    _, exported_difference = export_torchscript(md, Path(both["bf16"].model).parent / "exported.pt")
    assert exported_difference <= 1e-6  # the traced model keeps the bf16 casts


def test_bf16_is_refused_naming_the_key_where_the_hardware_lacks_bf16_units():
    slow = Bf16Support(False, "this CPU (Example CPU) has neither AMX nor AVX512-BF16")
    with pytest.raises(PrecisionError, match=r"^train\.precision is bf16 but this CPU \(Example CPU\) has neither "
                                             r"AMX nor AVX512-BF16.*set train\.precision: fp32"):
        refuse_slow_bf16("bf16", slow, "train.precision")
    refuse_slow_bf16("fp32", slow, "train.precision")
    refuse_slow_bf16("bf16", Bf16Support(True, "AMX on Example CPU"), "train.precision")


def test_the_train_command_trains_bf16_or_exits_2_as_this_cpu_decides(criteo_shards, tmp_path):
    support = bf16_support("cpu")
    result = run_cli([*CLI, "train", "--set", f"train.data={criteo_shards}", "--set", f"train.output={tmp_path}/m",
                      "--set", "train.precision=bf16", "--set", "train.epochs=1", "--set", "train.model.hidden=[16]",
                      "--set", "train.device=cpu"])
    if support.fast:
        assert result.returncode == 0, result.stderr[-2000:]
        assert open_model_version(tmp_path / "m").config.precision == "bf16"
    else:
        assert result.returncode == 2
        last = result.stderr.strip().splitlines()[-1]
        assert "train.precision is bf16" in last and support.unit in last and "Traceback" not in result.stderr
