import itertools

import pytest
import torch

from deepfm.model import DeepFM, DeepFMConfig

VOCABS = (5, 7, 3, 11)
B, FD, D = 6, 2, 4


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, v, (B,), generator=gen) for v in VOCABS], 1).int()
    dense = torch.randn(B, FD, generator=gen)
    return ids, dense


def _model(**kw):
    torch.manual_seed(0)
    model = DeepFM(DeepFMConfig(vocab_sizes=VOCABS, num_dense=FD, embedding_dim=D, hidden=(8, 8), **kw))
    with torch.no_grad():  # larger than the initial scale, so the pairwise term is not ~0
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


def test_shapes():
    model = _model()
    ids, dense = _inputs()
    e, w = model.embeddings(ids, dense)
    assert e.shape == (B, len(VOCABS) + FD, D) and w.shape == (B, len(VOCABS) + FD)
    assert model(ids, dense).shape == (B,)


def test_fm_equals_brute_force_over_all_field_pairs():
    model = _model(use_deep=False)
    ids, dense = _inputs()
    offsets = [0, *itertools.accumulate(VOCABS)][:-1]
    vectors, weights = model.embeddings.table.weight[:, :-1], model.embeddings.table.weight[:, -1:]
    expected = []
    for b in range(B):
        e = [vectors[offsets[f] + ids[b, f]] for f in range(len(VOCABS))]
        w = [weights[offsets[f] + ids[b, f], 0] for f in range(len(VOCABS))]
        e += [model.embeddings.dense_vectors[j] * dense[b, j] for j in range(FD)]
        w += [model.embeddings.dense_weights[j] * dense[b, j] for j in range(FD)]
        pairs = sum(torch.dot(e[i], e[j]) for i, j in itertools.combinations(range(len(e)), 2))
        expected.append(model.fm.bias[0] + sum(w) + pairs)
    assert torch.allclose(model(ids, dense), torch.stack(expected), atol=1e-5)


def test_field_pair_weights_weigh_each_pair_and_start_as_the_plain_fm():
    weighted, plain = _model(use_deep=False, field_pair_weights=True), _model(use_deep=False)
    ids, dense = _inputs()
    e, w = weighted.embeddings(ids, dense)
    r = weighted.fm.pair_weights
    pairs = sum(r[i, j] * (e[:, i] * e[:, j]).sum(1) for i, j in itertools.combinations(range(e.shape[1]), 2))
    assert torch.allclose(weighted(ids, dense), weighted.fm.bias + w.sum(1) + pairs, atol=1e-5)
    pairs.sum().backward()
    assert r.grad is not None and r.grad.triu(1).abs().sum() > 0
    # As built (every r_ij 1), the plain FM of the same embeddings.
    fresh = DeepFM(DeepFMConfig(vocab_sizes=VOCABS, num_dense=FD, embedding_dim=D, hidden=(8, 8), use_deep=False,
                                field_pair_weights=True))
    fresh.load_state_dict({**plain.state_dict(), "fm.pair_weights": fresh.fm.pair_weights.detach()})
    assert torch.allclose(fresh(ids, dense), plain(ids, dense), atol=1e-5)


def test_logit_is_fm_plus_deep():
    model = _model()
    ids, dense = _inputs()
    e, w = model.embeddings(ids, dense)
    assert torch.allclose(model(ids, dense), model.fm(e, w) + model.deep(e), atol=1e-6)


def test_both_parts_send_gradients_to_the_same_shared_embeddings():
    model = _model()
    ids, dense = _inputs()
    e, w = model.embeddings(ids, dense)
    table = model.embeddings.table.weight
    grad_fm = torch.autograd.grad(model.fm(e, w).sum(), table, retain_graph=True)[0]
    grad_deep = torch.autograd.grad(model.deep(e).sum(), table)[0]
    used = (ids.long() + model.embeddings.offsets).unique()
    assert grad_fm[used].abs().sum() > 0 and grad_deep[used].abs().sum() > 0
    unused = torch.ones(table.shape[0], dtype=torch.bool)
    unused[used] = False
    assert grad_fm[unused].abs().sum() == 0 and grad_deep[unused].abs().sum() == 0


def test_sparse_embeddings_give_sparse_gradients():
    model = _model(sparse_embeddings=True)
    ids, dense = _inputs()
    model(ids, dense).sum().backward()
    assert all(p.grad.is_sparse for p in model.embedding_parameters())
    assert not any(p.grad is not None and p.grad.is_sparse for p in model.dense_parameters())


def test_ablations_and_validation():
    ids, dense = _inputs()
    assert _model(use_fm=False).fm is None and _model(use_deep=False).deep is None
    assert _model(use_fm=False)(ids, dense).shape == (B,)
    with pytest.raises(ValueError, match="use_fm and use_deep"):
        DeepFMConfig(vocab_sizes=VOCABS, use_fm=False, use_deep=False)
    with pytest.raises(ValueError, match="activation"):
        DeepFMConfig(vocab_sizes=VOCABS, activation="swish")


def test_batch_norm_and_dropout_build():
    model = DeepFM(DeepFMConfig(vocab_sizes=VOCABS, num_dense=FD, hidden=(8,), batch_norm=True, dropout=0.5))
    names = [type(m).__name__ for m in model.deep.mlp]
    assert names == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]


def test_flops_match_the_issue_figure():
    """39 fields, D=16, MLP 400-400-400: about 3.4 MFLOP to train on one sample."""
    model = DeepFM(DeepFMConfig(vocab_sizes=(10,) * 39, embedding_dim=16, hidden=(400, 400, 400)))
    assert 3.3e6 < model.train_flops_per_sample() < 3.5e6


def test_config_round_trip():
    cfg = DeepFMConfig(vocab_sizes=VOCABS, num_dense=FD, hidden=(3, 2))
    assert DeepFMConfig.from_dict(cfg.to_dict()) == cfg


def test_unique_lookup_path_matches_plain_lookup():
    model = _model(sparse_embeddings=True)
    ids, dense = _inputs()
    ids[1] = ids[0]  # repeated rows exercise the de-duplication
    model.train()
    trained = model(ids, dense)
    model.eval()
    assert torch.allclose(trained, model(ids, dense), atol=1e-6)


def test_count_features_feed_the_mlp_each_values_log_frequency_and_ship_in_the_state_dict():
    model = _model(count_features=True)
    assert model.deep.mlp[0].in_features == (len(VOCABS) + FD) * D + len(VOCABS)
    counts = torch.full((sum(VOCABS),), float("nan"))
    counts[VOCABS[0] + 2] = 99.0  # field 1, id 2, seen 99 times in 9,999 rows
    model.set_value_counts(counts, train_rows=9_999)
    assert model.log_frequencies[VOCABS[0] + 2] == pytest.approx(0.5)  # log(100) / log(10,000)
    assert int((model.log_frequencies != 0).sum()) == 1  # an uncounted row reads as never seen

    ids, dense = _inputs()
    ids[:, 1] = 2
    before = model(ids, dense)
    model.set_value_counts(torch.full((sum(VOCABS),), float("nan")), train_rows=9_999)
    assert not torch.allclose(before, model(ids, dense))  # the MLP reads the frequency

    model.set_value_counts(counts, train_rows=9_999)
    reloaded = DeepFM(model.config)
    reloaded.load_state_dict(model.state_dict())  # strict: the frequencies are part of the model
    assert torch.equal(reloaded(ids, dense), before)


def test_mixed_dimensions_give_rarer_values_fewer_dimensions():
    model = _model(mixed_dim_exponent=0.5)
    counts = torch.full((sum(VOCABS),), float("nan"))
    counts[2:5] = torch.tensor([100.0, 10.0, 1.0])  # field 0's ids 2-4; its top value is seen 100 times
    model.set_value_counts(counts, train_rows=1_000)
    # D (c / c_max)^0.5 = 4, 4 x 0.32, 4 x 0.1 -> 4, 2, 1 dimensions; uncounted rows keep all 4
    assert model.embeddings.row_dims.tolist() == [4, 4, 4, 2, 1] + [D] * (sum(VOCABS) - 5)
    assert torch.count_nonzero(model.embeddings.table.weight[4, :D - 1][1:]) == 0  # unused dims zeroed

    ids, dense = _inputs()
    ids[:, 0] = torch.tensor([2, 3, 4, 4, 3, 2], dtype=torch.int32)
    e, _ = model.embeddings(ids, dense)
    assert torch.count_nonzero(e[2, 0, 1:]) == 0 and torch.count_nonzero(e[1, 0, 2:]) == 0
    assert torch.count_nonzero(e[0, 0]) == D
    model(ids, dense).sum().backward()
    grad = model.embeddings.table.weight.grad
    assert torch.count_nonzero(grad[4, 1:D]) == 0 and torch.count_nonzero(grad[4, 0]) == 1  # only dim 0 learns

    reloaded = DeepFM(model.config)
    reloaded.load_state_dict(model.state_dict())
    assert torch.equal(reloaded.embeddings.row_dims, model.embeddings.row_dims)
