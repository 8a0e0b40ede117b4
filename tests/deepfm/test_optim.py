import copy

import pytest
import torch
from torch.nn import functional as F

from deepfm.model import DeepFM, DeepFMConfig
from deepfm.training.optim import RowSparseAdam, RowWiseAdagrad, make_optimizers


def _train(model: DeepFM, table_optimizer: torch.optim.Optimizer, steps: int, seed: int = 0) -> None:
    dense_optimizer = torch.optim.Adam(model.dense_parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        # Zipf-like ids: a few rows in most samples, so rows repeat within and across batches
        ids = (torch.rand(256, 3, generator=generator) ** 4 * torch.tensor([500, 80, 7])).long()
        label = torch.rand(256, generator=generator).round()
        loss = F.binary_cross_entropy_with_logits(model(ids, torch.rand(256, 1, generator=generator)), label)
        dense_optimizer.zero_grad()
        table_optimizer.zero_grad()
        loss.backward()
        dense_optimizer.step()
        table_optimizer.step()


def _model() -> DeepFM:
    torch.manual_seed(0)
    return DeepFM(DeepFMConfig(vocab_sizes=(500, 80, 7), num_dense=1, embedding_dim=8, hidden=(16,),
                                sparse_embeddings=True))


def test_row_sparse_adam_takes_the_steps_of_torchs_sparse_adam():
    ours, torchs = _model(), _model()
    ours_optimizer = RowSparseAdam(ours.embedding_parameters(), lr=1e-2)
    torchs_optimizer = torch.optim.SparseAdam(torchs.embedding_parameters(), lr=1e-2)
    start = ours.embeddings.table.weight.detach().clone()
    _train(ours, ours_optimizer, steps=20)
    _train(torchs, torchs_optimizer, steps=20)

    table, reference = ours.embeddings.table.weight.detach(), torchs.embeddings.table.weight.detach()
    touched = (table != start).any(1)
    assert 0 < int(touched.sum()) < len(table), "some rows move, the rows no batch touched do not"
    assert torch.equal(table[~touched], start[~touched])
    torch.testing.assert_close(table, reference, rtol=0, atol=1e-6)
    ours_state, torchs_state = ours_optimizer.state_dict()["state"][0], torchs_optimizer.state_dict()["state"][0]
    assert ours_state["step"] == torchs_state["step"] == 20
    for moment in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(ours_state[moment], torchs_state[moment], rtol=0, atol=1e-7)


def test_row_sparse_adam_continues_from_a_sparse_adam_checkpoint():
    """Checkpoints written before RowSparseAdam (torch's SparseAdam state) resume into it, and back."""
    model = _model()
    torchs = torch.optim.SparseAdam(model.embedding_parameters(), lr=1e-2)
    _train(model, torchs, steps=5)
    continued, reference = copy.deepcopy(model), copy.deepcopy(model)
    ours = RowSparseAdam(continued.embedding_parameters(), lr=1e-2)
    ours.load_state_dict(copy.deepcopy(torchs.state_dict()))
    reference_optimizer = torch.optim.SparseAdam(reference.embedding_parameters(), lr=1e-2)
    reference_optimizer.load_state_dict(copy.deepcopy(torchs.state_dict()))
    _train(continued, ours, steps=5, seed=1)
    _train(reference, reference_optimizer, steps=5, seed=1)
    torch.testing.assert_close(continued.embeddings.table.weight, reference.embeddings.table.weight, rtol=0, atol=1e-6)
    assert torch.optim.SparseAdam(model.embedding_parameters()).load_state_dict(ours.state_dict()) is None


def test_row_sparse_adam_counts_an_empty_or_element_indexed_gradient_as_a_step():
    """Horovod's broadcast_optimizer_state initializes a SparseAdam with a zero `dense.to_sparse()`
    gradient (indexed by element, not by row): the step counts, and nothing moves."""
    table = torch.nn.Parameter(torch.randn(6, 3))
    start = table.detach().clone()
    optimizer = RowSparseAdam([table])
    table.grad = torch.zeros(6, 3).to_sparse()
    optimizer.step()
    assert optimizer.state[table]["step"] == 1 and torch.equal(table.detach(), start)
    table.grad = torch.tensor([[0.0, 0, 0], [0, 0, 0], [1, -1, 2], [0, 0, 0], [0, 0, 0], [0, 0, 0]]).to_sparse()
    optimizer.step()
    moved = (table.detach() != start).any(1)
    assert moved.tolist() == [False, False, True, False, False, False]


def test_row_sparse_adam_refuses_a_dense_gradient():
    table = torch.nn.Parameter(torch.randn(6, 3))
    table.grad = torch.ones(6, 3)
    with pytest.raises(RuntimeError, match="dense gradients"):
        RowSparseAdam([table]).step()


def test_sparse_tables_get_row_sparse_adam():
    optimizers = make_optimizers(_model(), lr=1e-3, embedding_lr=1e-2)
    assert [type(o) for o in optimizers] == [torch.optim.Adam, RowSparseAdam]


def _rowwise_adagrad_oracle(table: torch.Tensor, grads: list[torch.Tensor], lr: float, eps: float) -> torch.Tensor:
    """FBGEMM's exact row-wise Adagrad, row by row in float64, from dense gradients."""
    table, total = table.double().clone(), torch.zeros(len(table), dtype=torch.float64)
    for grad in grads:
        for row in range(len(table)):
            g = grad[row].double()
            if bool((g != 0).any()):
                total[row] += g.square().mean()
                table[row] -= lr * g / (total[row].sqrt() + eps)
    return table


def test_rowwise_adagrad_takes_fbgemms_exact_rowwise_steps_and_keeps_one_float_a_row():
    model = _model()
    start = model.embeddings.table.weight.detach().clone()
    optimizer = RowWiseAdagrad(model.embedding_parameters(), lr=5e-2)
    grads = []
    original_step = optimizer.step

    def recording_step():
        grads.append(model.embeddings.table.weight.grad.to_dense().clone())
        return original_step()

    optimizer.step = recording_step
    _train(model, optimizer, steps=12)

    table = model.embeddings.table.weight.detach()
    torch.testing.assert_close(table.double(), _rowwise_adagrad_oracle(start, grads, lr=5e-2, eps=1e-8),
                               rtol=0, atol=1e-5)
    touched = (table != start).any(1)
    assert 0 < int(touched.sum()) < len(table) and torch.equal(table[~touched], start[~touched])
    state = optimizer.state_dict()["state"][0]
    assert list(state) == ["sum"] and state["sum"].shape == (len(table),)
    assert bool((state["sum"][~touched] == 0).all()) and bool((state["sum"][touched] > 0).all())


def test_rowwise_adagrad_moves_a_table_alike_from_sparse_or_dense_gradients():
    """NCCL's DDP gives the tables dense gradients: a row outside the batch must not move there either."""
    sparse, dense = _model(), _model()
    dense.embeddings.table.sparse = False
    _train(sparse, RowWiseAdagrad(sparse.embedding_parameters(), lr=5e-2), steps=8)
    _train(dense, RowWiseAdagrad(dense.embedding_parameters(), lr=5e-2), steps=8)
    torch.testing.assert_close(sparse.embeddings.table.weight, dense.embeddings.table.weight, rtol=0, atol=1e-6)


def test_rowwise_adagrad_resumes_from_its_state_dict():
    model = _model()
    optimizer = RowWiseAdagrad(model.embedding_parameters(), lr=5e-2)
    _train(model, optimizer, steps=4)
    resumed_model = copy.deepcopy(model)
    resumed = RowWiseAdagrad(resumed_model.embedding_parameters(), lr=5e-2)
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    _train(model, optimizer, steps=4, seed=1)
    _train(resumed_model, resumed, steps=4, seed=1)
    assert torch.equal(model.embeddings.table.weight, resumed_model.embeddings.table.weight)


def test_rowwise_adagrad_takes_horovods_zero_element_indexed_gradient():
    table = torch.nn.Parameter(torch.randn(6, 3))
    start = table.detach().clone()
    optimizer = RowWiseAdagrad([table], lr=0.1)
    table.grad = torch.zeros(6, 3).to_sparse()
    optimizer.step()
    assert torch.equal(table.detach(), start) and torch.equal(optimizer.state[table]["sum"], torch.zeros(6))


def test_the_tables_optimizer_is_a_setting():
    optimizers = make_optimizers(_model(), lr=1e-3, embedding_lr=1e-2, embedding_optimizer="rowwise_adagrad")
    assert [type(o) for o in optimizers] == [torch.optim.Adam, RowWiseAdagrad]


def test_each_tables_optimizer_has_its_own_default_learning_rate():
    from deepfm.config import TrainConfig
    from deepfm.training.train import ROWWISE_ADAGRAD_LR, resolve_regularization

    def embedding_lr(**settings) -> float:
        return resolve_regularization(TrainConfig(data="-", output="-", **settings), 10_000, 1)["embedding_lr"]

    assert embedding_lr(lr=2e-4, embedding_optimizer="adam") == pytest.approx(2e-3)  # 10x the dense layers'
    assert embedding_lr(lr=2e-4) == ROWWISE_ADAGRAD_LR == 0.03  # the default row-wise Adagrad's own
    assert embedding_lr(embedding_optimizer="rowwise_adagrad", embedding_lr=0.01) == 0.01


def test_stochastic_rounding_to_bf16_is_unbiased_and_exact_on_bf16_values():
    from deepfm.training.precision import round_stochastically

    torch.manual_seed(0)
    exact = torch.randn(1000).bfloat16().float()
    assert torch.equal(round_stochastically(exact, torch.bfloat16).float(), exact)  # nothing to round
    # 1 + 1/1000 lies between two bf16 values 1/128 apart: nearest rounding always gives 1.0
    value = torch.full((200_000,), 1.0 + 1e-3)
    assert torch.equal(value.bfloat16(), torch.ones(200_000, dtype=torch.bfloat16))
    rounded = round_stochastically(value, torch.bfloat16).float()
    assert set(rounded.unique().tolist()) == {1.0, 1.0 + 2**-7}
    assert float(rounded.mean()) == pytest.approx(1.0 + 1e-3, abs=1e-4)
    assert torch.equal(round_stochastically(value, torch.float32), value)


def test_rowwise_adagrad_steps_a_bf16_table_as_an_fp32_one_on_average():
    """Steps far below a bf16 row's last bit (2^-8 just under 1): nearest rounding would leave the
    rows where they were; rounded stochastically they move as fp32 rows do, on average over rows."""
    torch.manual_seed(0)
    start = torch.ones(4000, 3)
    touched = torch.arange(0, 4000, 2)
    tables = {dtype: torch.nn.Parameter(start.to(dtype, copy=True)) for dtype in (torch.float32, torch.bfloat16)}
    optimizers = {dtype: RowWiseAdagrad([p], lr=1e-4) for dtype, p in tables.items()}
    for _ in range(300):
        for dtype, p in tables.items():
            p.grad = torch.sparse_coo_tensor(touched.unsqueeze(0), torch.ones(len(touched), 3, dtype=dtype), (4000, 3))
            optimizers[dtype].step()
    moved = {dtype: (start - p.detach().float())[touched] for dtype, p in tables.items()}
    assert tables[torch.bfloat16].dtype == torch.bfloat16
    assert float(moved[torch.float32].mean()) > 0.003  # 300 steps of 1e-4 / sqrt(step)
    assert float(moved[torch.bfloat16].mean()) == pytest.approx(float(moved[torch.float32].mean()), rel=0.03)
    assert torch.equal(tables[torch.bfloat16].detach()[1::2].float(), start[1::2])  # untouched rows stay
