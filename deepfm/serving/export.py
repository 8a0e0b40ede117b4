"""Export a trained model to TorchScript, for serving without this package's Python code.

The eager model is traced in eval mode (the path inference takes), frozen, and checked against
the eager model on rows of a different batch size before it is written: an export that scores
differently is an error, not a file.
"""

from __future__ import annotations

import io
import warnings

import torch

from deepfm.storage.location import Location, Where
from deepfm.training.model_versions import TORCHSCRIPT, ModelVersion

TOLERANCE = 1e-6


class ExportError(RuntimeError):
    pass


def example_inputs(md: ModelVersion, rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Valid inputs: each field's ids drawn within its vocabulary, dense values standard normal."""
    gen = torch.Generator().manual_seed(seed)
    sizes = md.config.vocab_sizes
    ids = torch.stack([torch.randint(0, size, (rows,), generator=gen, dtype=torch.int32) for size in sizes], 1) \
        if sizes else torch.zeros(rows, 0, dtype=torch.int32)
    dense = torch.randn(rows, md.config.num_dense, generator=gen)
    return ids, dense


def export_torchscript(md: ModelVersion, out: Where | None = None) -> tuple[Location, float]:
    """Write the TorchScript model (default: into the model directory); returns it and the max abs
    difference of its probabilities from the eager model's on 1000 check rows."""
    model = md.load("cpu")
    # torch 2.13 marks TorchScript deprecated in favour of torch.export; TorchScript is still what
    # C++ and Java serving stacks load, so we export it knowingly.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        scripted = torch.jit.freeze(torch.jit.trace(model, example_inputs(md, 64, seed=1)))
        check = example_inputs(md, 1000, seed=2)
        difference = (torch.sigmoid(scripted(*check)) - torch.sigmoid(model(*check))).abs().max().item()
    if not difference <= TOLERANCE:
        raise ExportError(f"TorchScript model differs from the eager model by {difference:.3g} (> {TOLERANCE:g})")
    out = Location.of(out) if out is not None else md.path / TORCHSCRIPT
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        torch.jit.save(scripted, buffer)
    out.write_bytes(buffer.getvalue())
    return out, difference
