"""Fixtures shared by the score, evaluate and export tests: one small model trained on the Criteo
sample (with a row id and a passthrough column added), and its scores, built once per session."""

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from deepfm.config import Config, TrainConfig
from deepfm.training.launch import run_training
from deepfm.training.model_versions import open_model_version
from pipelines.preprocess import run_preprocess
from pipelines.score import run_score
from tests.conftest import CRITEO_SAMPLE, criteo_dataset

COLUMNS = [
    {"name": "row_id", "role": "id", "dtype": "int"},
    {"name": "day", "role": "passthrough"},
    {"name": "label", "role": "label"},
    # Half the numeric fields as value-scaled embeddings (training statistics), half bucketized.
    {"names": ["I{1..6}"], "role": "numeric", "dtype": "int", "transform": "log1p_standardize"},
    {"names": ["I{7..13}"], "role": "numeric", "dtype": "int", "transform": "log_bucketize"},
    {"names": ["C{1..26}"], "role": "categorical"},
]
UNSEEN_ID, MISSING_ID_ROW = 10_000_001, 10_000_002


@pytest.fixture(scope="session")
def trained(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    logs = root / "logs"
    logs.mkdir()
    lines = CRITEO_SAMPLE.read_text().splitlines()
    (logs / "part-0.tsv").write_text("".join(f"{i}\t{i % 3}\t{line}\n" for i, line in enumerate(lines)))
    dataset = criteo_dataset(logs / "part-0.tsv")
    dataset["input"]["columns"] = COLUMNS
    cfg = {"dataset": dataset, "preprocess": {"output": str(root / "prep"), "vocab": {"min_count": 2},
                                              "shards": {"rows_per_row_group": 2000}}}
    run_preprocess(spark, Config.model_validate(cfg))
    trained = run_training(TrainConfig.model_validate({
        "data": str(root / "prep"), "output": str(root / "model"), "epochs": 1, "batch_size": 256,
        "model": {"embedding_dim": 8, "hidden": [32, 16]}, "threads": 1}))
    # New logs: the sample, one row of never-seen values and one row of missing values.
    new_logs = root / "new_logs"
    new_logs.mkdir()
    shutil.copy(logs / "part-0.tsv", new_logs / "part-0.tsv")
    unseen = [str(UNSEEN_ID), "1", "0", *([""] * 13), *(["zz-never-seen"] * 26)]
    missing = [str(MISSING_ID_ROW), "2", "1", *([""] * 39)]
    (new_logs / "part-1.tsv").write_text("\t".join(unseen) + "\n" + "\t".join(missing) + "\n")
    # "model": the version directory; root / "model" is the model's root (its latest version)
    return {"root": root, "cfg": cfg, "logs": new_logs, "model": Path(trained.model)}


def in_process_probabilities(model_dir: Path, table: pa.Table) -> np.ndarray:
    """The reference: the eager model run directly on encoded columns, no scoring code involved."""
    md = open_model_version(model_dir)
    model = md.load()
    fmap = md.feature_map
    ids = torch.from_numpy(np.stack([table[f.name].to_numpy() for f in fmap.categorical], axis=1))
    dense = torch.from_numpy(np.stack([table[f.name].to_numpy() for f in fmap.dense], axis=1))
    with torch.no_grad():
        return torch.sigmoid(model(ids, dense)).numpy()


@pytest.fixture(scope="session")
def scored(spark, trained):
    result = run_score(spark, Config.model_validate({**trained["cfg"], "score": {
        "model": str(trained["root"] / "model"), "output": str(trained["root"] / "scores"),
        "input_path": str(trained["logs"]), "batch_rows": 1000}}), "2026-11-27")
    return result, pq.read_table(Path(result.partition.removeprefix("file:")))


