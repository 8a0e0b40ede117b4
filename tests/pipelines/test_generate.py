import gzip

import numpy as np
import pyarrow.csv as pacsv
import pytest
from sklearn.metrics import roc_auc_score

from deepfm.config import GenerateConfig
from pipelines.generate import (
    CRITEO_COLUMNS,
    INTERACTING,
    NUMERIC_CROSSES,
    TRIPLES,
    Teacher,
    decode_ranks,
    generate,
    sigmoid,
)


def _read(path):
    options = pacsv.ReadOptions(column_names=list(CRITEO_COLUMNS))
    parse = pacsv.ParseOptions(delimiter="\t")
    convert = pacsv.ConvertOptions(column_types={f"C{i}": "string" for i in range(1, 27)},
                                   strings_can_be_null=True)
    return pacsv.read_csv(path, read_options=options, parse_options=parse, convert_options=convert)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "raw"
    summary = generate(GenerateConfig(output=str(out), rows=60_000, rows_per_file=25_000, seed=5))
    return out, summary


def test_shape_and_files(synthetic):
    out, summary = synthetic
    files = sorted(out.glob("part-*.tsv"))
    assert [f.name for f in files] == ["part-00000.tsv", "part-00001.tsv", "part-00002.tsv"]
    assert summary["rows"] == 60_000
    lines = files[0].read_text().splitlines()
    assert len(lines) == 25_000 and all(len(line.split("\t")) == 41 for line in lines[:100])


def test_labels_follow_the_teacher(synthetic):
    out, summary = synthetic
    table = _read(out / "part-00000.tsv")
    label = table.column("label").to_numpy()
    p_true = table.column("p_true").to_numpy()
    assert 0.20 <= label.mean() <= 0.25  # base CTR about 22%
    assert abs(p_true.mean() - label.mean()) < 0.01
    auc = roc_auc_score(label, p_true)
    assert 0.72 < auc < 0.92, auc  # informative, but not trivially separable


def test_realistic_skew_and_missing_values(synthetic):
    out, _ = synthetic
    table = _read(out / "part-00000.tsv")
    c3 = table.column("C3").drop_null().to_pylist()  # ~10M cardinality, Zipf
    values, counts = np.unique(c3, return_counts=True)
    assert counts.max() > 100 * np.median(counts)  # a heavy head
    assert len(values) > 3_000  # and a long tail
    c9 = set(table.column("C9").drop_null().to_pylist())  # cardinality 3
    assert len(c9) == 3
    assert all(len(v) == 8 and int(v, 16) >= 0 for v in values[:50])  # 8 hex digits, like Criteo
    assert 0.35 < table.column("C19").null_count / table.num_rows < 0.55
    assert table.column("I2").to_numpy(zero_copy_only=False).min() < 0  # I2 has negatives


def test_same_seed_same_bytes_other_seed_differs(tmp_path, synthetic):
    out, _ = synthetic
    again = tmp_path / "again"
    generate(GenerateConfig(output=str(again), rows=60_000, rows_per_file=25_000, seed=5))
    assert (again / "part-00001.tsv").read_bytes() == (out / "part-00001.tsv").read_bytes()
    other = tmp_path / "other"
    generate(GenerateConfig(output=str(other), rows=1_000, rows_per_file=25_000, seed=6))
    assert (other / "part-00000.tsv").read_bytes()[:5000] != (out / "part-00000.tsv").read_bytes()[:5000]


def test_gzip_and_atomic_replace(tmp_path):
    out = tmp_path / "raw"
    generate(GenerateConfig(output=str(out), rows=2_000, gzip=True))
    with gzip.open(out / "part-00000.tsv.gz", "rt") as f:
        assert sum(1 for _ in f) == 2_000
    generate(GenerateConfig(output=str(out), rows=500))  # a rerun replaces the whole directory
    assert sorted(p.name for p in out.iterdir()) == ["_DEEPFM_OUTPUT", "_SUCCESS", "part-00000.tsv"]
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no temporary leftovers, no lease


def test_a_directory_generate_did_not_write_is_never_replaced(tmp_path):
    mine = tmp_path / "raw"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="was not written by deepfm-pipeline"):
        generate(GenerateConfig(output=str(mine), rows=100))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_joined_mode_writes_three_tables(tmp_path):
    out = tmp_path / "raw"
    generate(GenerateConfig(output=str(out), rows=5_000, mode="joined"))
    assert sorted(p.name for p in out.iterdir()) == ["_DEEPFM_OUTPUT", "_SUCCESS", "clicks", "impressions", "items"]
    header = (out / "impressions" / "part-00000.tsv").read_text().splitlines()[0].split("\t")
    assert header[:3] == ["impression_id", "ts", "item_id"] and header[-1] == "p_true"
    assert (out / "clicks" / "part-00000.tsv").read_text().startswith("impression_id\tclick_ts\n")


def test_the_long_tail_teacher_puts_signal_into_values_seen_20_to_1000_times_in_1m_rows():
    rng = np.random.default_rng(0)
    for kind, rare_values in (("head", 0), ("long_tail", 20_000)):
        teacher = Teacher.create(GenerateConfig(output="unused", teacher=kind))
        shares = [np.diff(cdf, prepend=0.0) for cdf in teacher.zipf_cdfs]
        with_signal = [s[:n] for s, n in zip(shares, teacher.signal_values, strict=True)]
        rare = sum(int(((s >= 2e-5) & (s < 1e-3)).sum()) for s in with_signal)  # 20-1,000 rows in 1M
        assert (rare > rare_values) if rare_values else rare == 0
        ints, ranks, logit = teacher.sample(50_000, rng)
        share = np.stack([np.where(ranks[:, f] >= 0, shares[f][np.maximum(ranks[:, f], 0)], 1.0)
                          for f in range(ranks.shape[1])], 1)
        without_rare = teacher.logit(ints, np.where(share >= 1e-3, ranks, -1))
        unexplained = 1 - np.corrcoef(logit, without_rare)[0, 1] ** 2
        # the head teacher's rare values carry nothing; the long-tail teacher's over a tenth of the logit
        assert unexplained > 0.1 if rare_values else unexplained < 1e-9
    assert teacher.cardinalities.max() <= 1_000_000


@pytest.mark.parametrize("kind", ["field_pairs", "heavy_tail", "numeric_cross", "triples"])
def test_each_family_teacher_labels_its_logs_with_what_its_logit_says_of_the_decoded_values(tmp_path, kind):
    """The logs' p_true is the teacher's logit of the rows' values, read back from the tokens: the
    learnable reference (values masked to -1) can be computed from the logs alone."""
    cfg = GenerateConfig(output=str(tmp_path / "raw"), rows=5_000, teacher=kind, seed=3)
    generate(cfg)
    table = _read(tmp_path / "raw" / "part-00000.tsv")
    ranks = np.stack([decode_ranks(table.column(f"C{f + 1}"), f) for f in range(26)], 1)
    ints = np.stack([table.column(f"I{i + 1}").to_numpy(zero_copy_only=False).astype(float) for i in range(13)], 1)
    teacher = Teacher.create(cfg)
    np.testing.assert_allclose(sigmoid(teacher.logit(ints, ranks)), table.column("p_true").to_numpy(), atol=1e-6)
    # With every categorical value masked, only the bias and the numeric effects are left.
    numeric_only = teacher.logit(ints, np.full_like(ranks, -1))
    assert np.corrcoef(numeric_only, teacher.logit(ints, ranks))[0, 1] < 0.5


def test_the_family_adds_one_structure_each_to_the_long_tail_teacher():
    base = Teacher.create(GenerateConfig(output="unused", teacher="long_tail"))
    ints, ranks, logit = base.sample(50_000, np.random.default_rng(1))
    crossed = {"numeric_cross": [f for f, _ in NUMERIC_CROSSES], "triples": [f for t in TRIPLES for f in t],
               "field_pairs": list(INTERACTING)}
    for kind, fields in crossed.items():
        teacher = Teacher.create(GenerateConfig(output="unused", teacher=kind))
        assert np.array_equal(teacher.first_order, base.first_order)  # the base draws are kept
        added = (teacher.logit(ints, ranks) - teacher.bias) - (logit - base.bias)  # each calibrates its own bias
        assert added.std() > 0.3, kind
        # The structure lives in its fields: without their values the teacher is the base one (less
        # the base's pair terms in those fields, which field_pairs replaces).
        masked = ranks.copy()
        masked[:, fields] = -1
        np.testing.assert_allclose(teacher.logit(ints, masked) - teacher.bias, base.logit(ints, masked) - base.bias,
                                   atol=1e-9)
    heavy = Teacher.create(GenerateConfig(output="unused", teacher="heavy_tail"))
    assert heavy.signal_values.sum() > 2 * base.signal_values.sum()


def test_a_dated_stream_of_a_family_teacher_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="teacher"):
        GenerateConfig(output="unused", teacher="triples", days=3)
