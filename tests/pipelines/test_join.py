from datetime import datetime, timedelta

import pytest

from deepfm.config import ClickJoin, SideTable, TableSpec
from pipelines.join import JoinError, join_side_table, label_from_clicks

T0 = datetime(2026, 1, 1, 12, 0, 0)
WINDOW = 600


def _clicks_cfg():
    table = TableSpec.model_validate({"path": "unused", "columns": [
        {"name": "imp", "role": "id"}, {"name": "click_ts", "role": "timestamp"}]})
    return ClickJoin(table=table, impression_key="imp", impression_time="ts", click_key="imp",
                     click_time="click_ts", window_seconds=WINDOW)


def test_click_attribution_window_edges_and_duplicates(spark):
    impressions = spark.createDataFrame(
        [(i, T0, f"item{i}") for i in range(1, 9)], "imp long, ts timestamp, item string"
    )
    at = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    clicks = spark.createDataFrame(
        [
            (1, at(0)),  # same second: counts
            (2, at(WINDOW)),  # exactly at the window's end: counts
            (3, at(WINDOW + 1)),  # one second late: does not count
            (4, at(-1)),  # before the impression: does not count
            (5, at(10)), (5, at(10)), (5, at(20)),  # duplicates count once
            (6, at(WINDOW + 100)), (6, at(30)),  # one late, one in time
            (99, at(5)),  # a click without an impression is ignored
            # 7 and 8: no clicks at all
        ],
        "imp long, click_ts timestamp",
    )
    labelled = label_from_clicks(impressions, clicks, _clicks_cfg())
    labels = {r["imp"]: r["label"] for r in labelled.collect()}
    assert labels == {1: 1, 2: 1, 3: 0, 4: 0, 5: 1, 6: 1, 7: 0, 8: 0}
    assert labelled.count() == impressions.count()
    assert set(labelled.columns) == {"imp", "ts", "item", "label"}


def _side(broadcast="auto"):
    table = TableSpec.model_validate({"path": "unused", "columns": [
        {"name": "item", "role": "id"}, {"name": "colour", "role": "categorical"}]})
    return SideTable(name="items", key="item", table=table, broadcast=broadcast)


@pytest.mark.parametrize("broadcast", ["auto", "always", "never"])
def test_side_table_left_join_keeps_every_row(spark, broadcast):
    rows = spark.createDataFrame([(1, "a"), (2, "b"), (3, "zzz")], "imp long, item string")
    side = spark.createDataFrame([("a", "red"), ("b", "blue"), ("c", "green")], "item string, colour string")
    joined = {r["imp"]: r["colour"] for r in join_side_table(rows, side, _side(broadcast)).collect()}
    assert joined == {1: "red", 2: "blue", 3: None}


def test_side_table_with_repeated_keys_fails(spark):
    rows = spark.createDataFrame([(1, "a")], "imp long, item string")
    side = spark.createDataFrame([("a", "red"), ("a", "blue")], "item string, colour string")
    with pytest.raises(JoinError, match="repeated values of 'item'.*'a'"):
        join_side_table(rows, side, _side())
