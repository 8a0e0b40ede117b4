"""The two tested stacks give the same answers on the embedded Criteo sample.

constraints.txt (pyspark 3.5, pyarrow 14, numpy 1) and constraints-current.txt (pyspark 4, current
pyarrow, numpy 2) run the same code: preprocess must write the same rows, ids and vocabularies; the
same seed must train to the same test AUC (within 1e-6); the score job must give the same
probabilities. Run by `make test-cross-stack`, which sets both stacks up (marker `cross_stack`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.conftest import CLI_ENV, REPO_ROOT, run_cli

pytestmark = pytest.mark.cross_stack

STACKS = {"named": os.environ.get("DEEPFM_NAMED_VENV", str(REPO_ROOT / ".venv")),
          "current": os.environ.get("DEEPFM_CURRENT_VENV", str(REPO_ROOT / ".venv-current"))}
RUN_DATE = "2026-12-01"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Preprocess, train and score on each stack, each in its own folder, as a user runs them."""
    done = {}
    for stack, venv in STACKS.items():
        python = Path(venv) / "bin" / "python"
        if not python.exists():
            pytest.fail(f"no {stack} stack at {venv}: run `make test-cross-stack`, which sets both up")
        work = tmp_path_factory.mktemp(stack)
        settings = [f"preprocess.output={work / 'prep'}", f"train.data={work / 'prep'}",
                    f"train.output={work / 'model'}", "train.epochs=2", f"score.model={work / 'model'}",
                    f"score.output={work / 'scores'}", "tracking.enabled=false"]
        env = {**CLI_ENV, "PYSPARK_PYTHON": str(python)}
        for stage in ("preprocess", "train", "score"):
            result = run_cli([str(python), "-m", "jobs.cli", stage, "--run-date", RUN_DATE,
                              *(arg for s in settings for arg in ("--set", s))], env=env)
            assert result.returncode == 0, f"{stack} {stage}: {result.stderr[-3000:]}"
        done[stack] = work
    return done


def _rows(path: Path) -> pa.Table:
    """Every row of a Parquet folder, in one order that does not depend on how Spark split the files."""
    table = pq.read_table(path)
    return table.sort_by([(name, "ascending") for name in table.column_names])


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_preprocess_writes_the_same_rows_and_ids(runs, split):
    named, current = (_rows(runs[s] / "prep" / split) for s in STACKS)
    assert named.schema.names == current.schema.names
    assert named.num_rows == current.num_rows > 0
    for name in named.column_names:
        assert named.column(name).to_pylist() == current.column(name).to_pylist(), name


def test_preprocess_writes_the_same_vocabularies_and_counts(runs):
    named, current = (runs[s] / "prep" for s in STACKS)
    assert _rows(named / "vocab").to_pylist() == _rows(current / "vocab").to_pylist()
    manifests = [json.loads((prep / "manifest.json").read_text()) for prep in (named, current)]
    assert manifests[0]["rows"] == manifests[1]["rows"]  # accepted, rejected by reason, per split
    summaries = [json.loads((prep / "vocab_summary.json").read_text()) for prep in (named, current)]
    assert summaries[0] == summaries[1]


def test_the_same_seed_trains_to_the_same_test_auc(runs):
    named, current = (json.loads((runs[s] / "model" / RUN_DATE / "metrics.json").read_text()) for s in STACKS)
    assert abs(named["test"]["auc"] - current["test"]["auc"]) <= 1e-6, (named["test"], current["test"])


def test_the_score_job_gives_the_same_probabilities(runs):
    # The score output keeps the label beside each probability and no row key: the two are compared
    # as sorted lists, one per label, with the model that scored them.
    scored = {}
    for stack in STACKS:
        table = pq.read_table(runs[stack] / "scores" / f"run_date={RUN_DATE}")
        scored[stack] = ({(v, d) for v, d in zip(table.column("model_version").to_pylist(),
                                                 table.column("model_digest").to_pylist(), strict=True)},
                         {label: np.sort(table.filter(pc.equal(table.column("label"), label))
                                         .column("probability").to_numpy()) for label in (0.0, 1.0)})
    (versions, named), (current_versions, current) = scored["named"], scored["current"]
    assert versions == current_versions and len(versions) == 1
    for label in (0.0, 1.0):
        assert len(named[label]) == len(current[label]) > 0
        assert np.abs(named[label] - current[label]).max() <= 1e-6, label
