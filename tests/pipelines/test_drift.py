"""The dated drifting stream (`generate --days`): real files, the truth they were drawn from."""

import numpy as np
import pyarrow.csv as pacsv
import pytest
from sklearn.metrics import roc_auc_score

from deepfm.config import ConfigError, GenerateConfig, load_config
from pipelines.drift import days, generate_stream
from pipelines.generate import CAT_NAMES, CRITEO_COLUMNS


def _read(path):
    return pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=list(CRITEO_COLUMNS)),
                          parse_options=pacsv.ParseOptions(delimiter="\t"),
                          convert_options=pacsv.ConvertOptions(column_types={c: "string" for c in CAT_NAMES},
                                                               strings_can_be_null=True))


def _config(out, **drift):
    return GenerateConfig(output=str(out), rows=30_000, rows_per_file=20_000, days=5, cardinality_scale=0.01,
                          seed=3, start_date="2026-11-01", drift=drift)


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    out = tmp_path_factory.mktemp("drift") / "raw"
    return out, generate_stream(_config(out, broken_day="2026-11-04"))


def test_one_partition_a_day_each_with_the_base_ctr(stream):
    out, summary = stream
    assert sorted(p.name for p in out.glob("dt=*")) == [f"dt=2026-11-0{d}" for d in range(1, 6)]
    for day in summary["days"]:
        files = sorted((out / f"dt={day['date']}").glob("part-*.tsv"))
        assert [f.name for f in files] == ["part-00000.tsv", "part-00001.tsv"]
        rows = sum(_read(f).num_rows for f in files)
        assert rows == 30_000 and abs(day["label_rate"] - 0.22) < 0.02


def test_new_values_take_a_few_percent_of_each_day_and_the_truth_holds_on_normal_days(stream):
    out, summary = stream
    assert summary["days"][0]["new_value_traffic"] == 0
    assert all(0.005 < d["new_value_traffic"] < 0.08 for d in summary["days"][1:]), summary["days"]
    first, second = (_read(out / f"dt=2026-11-0{d}" / "part-00000.tsv") for d in (1, 2))
    # Every field of many values has tokens on day 2 that day 1 never had (fields of a few values,
    # each with over a tenth of the traffic, keep theirs).
    seen = {c: set(first.column(c).drop_null().to_pylist()) for c in CAT_NAMES}
    many = [c for c in CAT_NAMES if len(seen[c]) > 500]
    assert len(many) >= 6
    assert all(set(second.column(c).drop_null().to_pylist()) - seen[c] for c in many)
    table = _read(out / "dt=2026-11-02" / "part-00000.tsv")
    assert roc_auc_score(table.column("label"), table.column("p_true")) > 0.7


def test_the_broken_day_has_its_labels_shuffled(stream):
    out, summary = stream
    assert [d["broken"] for d in summary["days"]] == [None, None, None, "shuffled_labels", None]
    table = _read(out / "dt=2026-11-04" / "part-00000.tsv")
    assert abs(roc_auc_score(table.column("label"), table.column("p_true")) - 0.5) < 0.03


def test_an_emptied_field_is_missing_on_its_day_only(tmp_path):
    summary = generate_stream(_config(tmp_path / "raw", broken_day="2026-11-02", broken="empty_field",
                                      broken_field="C2").model_copy(update={"days": 3}))
    assert summary["days"][1]["broken"] == "empty_field (C2)"
    for day, expected_missing in (("2026-11-01", 0), ("2026-11-02", 20_000), ("2026-11-03", 0)):
        assert _read(tmp_path / "raw" / f"dt={day}" / "part-00000.tsv").column("C2").null_count == expected_missing


def test_effects_belong_to_values_and_drift_slowly(tmp_path):
    """A value's first-order effect, wherever its rank moves, correlates cos(drift x days apart)."""
    cfg = _config(tmp_path / "unused", effect_drift=0.05).model_copy(update={"days": 8})
    effects = []
    for day in days(cfg):
        head = day.teacher.first_order.shape[1]
        effects.append({(f, int(v)): day.teacher.first_order[f, r]
                        for f, order in enumerate(day.values_by_rank)
                        for r, v in enumerate(order[:min(head, int(day.teacher.signal_values[f]))])})

    def correlation(a, b):
        shared = sorted(set(a) & set(b))
        assert len(shared) > 200
        return np.corrcoef([a[k] for k in shared], [b[k] for k in shared])[0, 1]

    assert correlation(effects[0], effects[1]) > 0.99
    assert correlation(effects[0], effects[7]) == pytest.approx(np.cos(0.35), abs=0.04)


def test_the_same_configuration_writes_the_same_stream(tmp_path):
    cfg = _config(tmp_path / "a").model_copy(update={"days": 2, "rows": 2_000})
    generate_stream(cfg)
    generate_stream(cfg.model_copy(update={"output": str(tmp_path / "b")}))
    for day in ("2026-11-01", "2026-11-02"):
        assert ((tmp_path / "a" / f"dt={day}" / "part-00000.tsv").read_bytes()
                == (tmp_path / "b" / f"dt={day}" / "part-00000.tsv").read_bytes())


def test_a_broken_day_outside_the_stream_names_the_key(tmp_path):
    conf = tmp_path / "gen.yaml"
    conf.write_text("generate: {output: out, days: 3, drift: {broken_day: '2026-12-01'}}\n")
    with pytest.raises(ConfigError, match=r"generate\.drift\.broken_day .*2026-12-01 is not one of the stream's days"):
        load_config([conf])
