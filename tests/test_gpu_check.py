"""bench/gpu_check.sh, the one script a GPU machine runs, kept working where no GPU is."""

import json
import os

import pytest

from tests.conftest import REPO_ROOT, run_cli

SCRIPT = str(REPO_ROOT / "bench" / "gpu_check.sh")


def test_an_unknown_argument_exits_2_naming_it():
    result = run_cli(["bash", SCRIPT, "--cpu-dry"])
    assert result.returncode == 2
    assert "unknown argument '--cpu-dry'" in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_the_cpu_dry_run_sets_up_runs_the_gpu_tests_and_the_step_bench(tmp_path):
    result = run_cli(["bash", SCRIPT, "--cpu-dry-run"], env={**os.environ, "GPU_CHECK_OUT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "environment.json").read_text())["torch"]
    assert " passed" in (tmp_path / "tests.log").read_text()
    single = json.loads((tmp_path / "bench_step.json").read_text())
    ddp = json.loads((tmp_path / "bench_step_ddp.json").read_text())
    assert {(c["batch_size"], c["precision"], c["embedding_gradients"]) for c in single["cases"]} == {
        (b, p, g) for b in (512, 2048) for p in ("fp32", "bf16") for g in ("sparse", "dense")}
    assert ddp["ddp"] and all(c["embedding_gradients"] == "dense" for c in ddp["cases"])
    assert all(c["samples_per_s"] > 0 and c["breakdown_ms"] for c in single["cases"] + ddp["cases"])
    assert "samples/s" in result.stdout  # the summary table


@pytest.mark.parametrize("flag", ["--pack", "--from-pack"])
def test_a_pack_flag_without_its_folder_exits_2_naming_it(flag):
    result = run_cli(["bash", SCRIPT, flag])
    assert result.returncode == 2
    assert f"{flag} needs a folder" in result.stderr.strip().splitlines()[-1]
