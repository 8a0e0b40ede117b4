"""TorchScript export of a trained model: same scores as the eager model, loadable without our code."""

import numpy as np
import pyarrow.parquet as pq
import torch

from deepfm.serving.export import export_torchscript
from deepfm.training.model_versions import open_model_version
from tests.pipelines.conftest import in_process_probabilities


def test_torchscript_scores_equal_the_eager_model(trained, tmp_path):
    md = open_model_version(trained["model"])
    path, difference = export_torchscript(md, tmp_path / "model.ts")
    assert difference <= 1e-6
    scripted = torch.jit.load(str(path))
    test = pq.read_table(trained["root"] / "prep" / "test")
    fmap = md.feature_map
    ids = torch.from_numpy(np.stack([test[f.name].to_numpy() for f in fmap.categorical], axis=1))
    dense = torch.from_numpy(np.stack([test[f.name].to_numpy() for f in fmap.dense], axis=1))
    with torch.no_grad():
        got = torch.sigmoid(scripted(ids, dense)).numpy()
        single = torch.sigmoid(scripted(ids[:1], dense[:1])).numpy()
    expected = in_process_probabilities(md.path, test)
    assert np.abs(got - expected).max() < 1e-6
    assert abs(single[0] - expected[0]) < 1e-6  # any batch size, not the traced one only


def test_export_goes_into_the_model_directory_by_default(trained):
    md = open_model_version(trained["model"])
    path, _ = export_torchscript(md)
    assert path == md.path / "model.torchscript.pt" and path.local_path.stat().st_size > 0
