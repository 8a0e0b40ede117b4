"""The promotion gate: its decisions at the boundaries, and a broken day turned down for real."""

import json
import random
import signal
import sys

import pytest

from deepfm.config import PromoteConfig, TrainConfig
from deepfm.errors import GATE_REJECTED, PromotionRejected, exit_code
from deepfm.training.launch import run_training
from deepfm.training.model_versions import ModelRoot
from deepfm.training.promotion import RowsJudged, reasons_to_reject
from pipelines.preprocess import run_preprocess
from tests.conftest import CRITEO_SAMPLE, criteo_dataset, make_config, run_cli

GATE = PromoteConfig(gate=True, max_auc_drop=0.005, calibration=(0.8, 1.25), max_serving_auc_drop=0.05)


def _judged(candidate_auc, serving_auc=0.8, calibration=1.0):
    return RowsJudged("day", 1000, {"auc": candidate_auc, "logloss": 0.4, "calibration": calibration},
                      {"auc": serving_auc, "logloss": 0.4, "calibration": 1.0})


@pytest.mark.parametrize(("candidate_auc", "calibration", "turned_down"), [
    (0.795, 1.0, False),  # exactly max_auc_drop below: may serve
    (0.79499, 1.0, True),  # just beyond it
    (0.9, 1.0, False),
    (0.8, 0.8, False), (0.8, 1.25, False),  # the calibration bounds are inclusive
    (0.8, 0.7999, True), (0.8, 1.2501, True),
    (float("nan"), 1.0, False),  # one class in the rows: no AUC, no verdict from them
])
def test_decisions_at_the_boundaries(candidate_auc, calibration, turned_down):
    assert bool(reasons_to_reject(GATE, [_judged(candidate_auc, calibration=calibration)])) == turned_down


def test_broken_labels_show_as_the_serving_model_falling_on_the_new_rows():
    """Shuffled labels: both models at 0.5 on the new rows, the candidate passes the first rule."""
    reasons = reasons_to_reject(GATE, [_judged(0.5, serving_auc=0.5), _judged(0.6, serving_auc=0.75)])
    assert len(reasons) == 1 and "is 0.5000, 0.2500 below its 0.7500" in reasons[0]
    assert "labels look broken" in reasons[0]


@pytest.mark.parametrize(("serving_on_new", "turned_down"), [(0.70, False), (0.6999, True)])
def test_the_serving_models_fall_at_the_boundary(serving_on_new, turned_down):
    judged = [_judged(serving_on_new, serving_auc=serving_on_new), _judged(0.7, serving_auc=0.75)]
    assert bool(reasons_to_reject(GATE, judged)) == turned_down


def test_a_candidate_behind_on_the_serving_models_own_rows_is_not_held_to_them():
    """The serving model's home advantage on its own day: a day of drift costs a sound candidate there."""
    assert reasons_to_reject(GATE, [_judged(0.866, serving_auc=0.862), _judged(0.848, serving_auc=0.854)]) == []


@pytest.fixture(scope="module")
def days(spark, tmp_path_factory):
    """A sound day (the Criteo sample) and a broken one: the same rows, their labels shuffled."""
    base = tmp_path_factory.mktemp("gate")
    lines = CRITEO_SAMPLE.read_text().splitlines()
    labels = [line.split("\t", 1)[0] for line in lines]
    random.Random(0).shuffle(labels)
    broken = base / "broken.tsv"
    broken.write_text("".join(f"{label}\t{line.split(chr(9), 1)[1]}\n" for label, line in zip(labels, lines,
                                                                                             strict=True)))
    outputs = []
    for name, raw in (("sound", CRITEO_SAMPLE), ("broken", broken)):
        run_preprocess(spark, make_config(criteo_dataset(raw), str(base / name), vocab={"min_count": 2},
                                          shards={"rows_per_row_group": 1000}))
        outputs.append(base / name)
    return outputs


def _cfg(data, output):
    return TrainConfig.model_validate({"data": str(data), "output": str(output), "epochs": 2, "batch_size": 512,
                                       "model": {"embedding_dim": 4, "hidden": [16]}, "threads": 1})


def test_a_broken_day_is_turned_down_and_latest_stays(days, tmp_path):
    sound, broken = days
    root = ModelRoot.of(tmp_path / "models")
    first = run_training(_cfg(sound, root.path), run_date="2026-11-01", promote=GATE)
    assert first.promotion.decision == "first" and root.latest() == "2026-11-01"

    with pytest.raises(PromotionRejected, match=r"turned down version 2026-11-02 \(.*labels look broken.*LATEST "
                                                r"stays on 2026-11-01") as err:
        run_training(_cfg(broken, root.path), run_date="2026-11-02", promote=GATE)
    assert exit_code(err.value) == GATE_REJECTED
    assert root.latest() == "2026-11-01" and root.versions() == ["2026-11-01", "2026-11-02"]
    record = root.record("2026-11-02")
    assert record.rejected and record.promotion["serving"] == "2026-11-01"
    on_sound_rows = [j for j in record.promotion["judged"] if j["rows"].endswith("sound")][0]
    assert on_sound_rows["serving"]["auc"] - on_sound_rows["candidate"]["auc"] > 0.05
    assert root.promoted() == ["2026-11-01"]

    # An operator's --promote force moves LATEST, the figures still recorded.
    forced = run_training(_cfg(broken, root.path), run_date="2026-11-02", promote=GATE, force=True,
                          force_promotion=True)
    assert forced.promotion.decision == "forced" and forced.promotion.reasons
    assert root.latest() == "2026-11-02"


def test_a_rejected_rerun_of_the_serving_date_keeps_the_serving_version(days, tmp_path):
    sound, broken = days
    root = ModelRoot.of(tmp_path / "models")
    run_training(_cfg(sound, root.path), run_date="2026-11-01", promote=GATE)
    weights = (root.path.local_path / "2026-11-01" / "model.pt").read_bytes()
    with pytest.raises(PromotionRejected, match="retrained version 2026-11-01, which serves"):
        run_training(_cfg(broken, root.path), run_date="2026-11-01", promote=GATE)
    assert (root.path.local_path / "2026-11-01" / "model.pt").read_bytes() == weights
    assert root.latest() == "2026-11-01" and not [n for n in root.path.subdirs() if n.startswith(".")]


# A train process that SIGKILLs itself at a point of its commit: once the gate has decided and before
# anything is committed, or once the version is in place and before LATEST moves.
_KILLED_AT = {
    "gate decided": "model_versions.ModelRoot.commit = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)",
    "version in place": "swap = model_versions.swap_into_place\n"
                        "def swap_then_die(*a, **k):\n"
                        "    swap(*a, **k)\n"
                        "    os.kill(os.getpid(), signal.SIGKILL)\n"
                        "model_versions.swap_into_place = swap_then_die",
}


def _train_cli(data, root, run_date, killed_at=None, *extra):
    injection = _KILLED_AT[killed_at] if killed_at else ""
    script = ("import os, signal, sys\nfrom deepfm.training import model_versions\n"
              f"{injection}\nfrom jobs.cli import main\nsys.exit(main(sys.argv[1:]))")
    settings = {"train.data": data, "train.output": root, "train.epochs": 2, "train.batch_size": 512,
                "train.model.embedding_dim": 4, "train.model.hidden": "[16]", "train.threads": 1,
                "promote.gate": "true"}
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    return run_cli([sys.executable, "-c", script, "train", "--run-date", run_date, *sets, *extra])


@pytest.mark.stack_neutral
@pytest.mark.parametrize("killed_at", ["gate decided", "version in place"])
def test_a_train_killed_after_the_gate_leaves_latest_as_it_was(days, tmp_path, killed_at):
    """Killed after the gate turned a broken day down, or after it passed a sound one: LATEST stays on
    the serving version, and the rerun a scheduler or operator makes ends as an unbroken run would."""
    sound, broken = days
    root = ModelRoot.of(tmp_path / "models")
    assert _train_cli(sound, root.path, "2026-11-01").returncode == 0
    assert root.latest() == "2026-11-01"

    for data, run_date in ((broken, "2026-11-02"), (sound, "2026-11-03")):
        killed = _train_cli(data, root.path, run_date, killed_at)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        assert root.latest() == "2026-11-01"
        assert root.versions() == (["2026-11-01"] if killed_at == "gate decided" else
                                   ["2026-11-01", "2026-11-02"] + (["2026-11-03"] if run_date == "2026-11-03" else []))

    # The broken day's rerun is turned down again (exit 3, whether it retrains or finds its version
    # up to date); the sound day's makes it serve. A rerun that finds versions in place points LATEST
    # at the newest promoted one, whichever date it reruns.
    rerun = _train_cli(broken, root.path, "2026-11-02")
    assert rerun.returncode == GATE_REJECTED, rerun.stderr[-3000:]
    assert "labels look broken" in rerun.stderr
    assert root.latest() == ("2026-11-01" if killed_at == "gate decided" else "2026-11-03")
    rerun = _train_cli(sound, root.path, "2026-11-03")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads(rerun.stdout.splitlines()[-1])["up_to_date"] == (killed_at == "version in place")
    assert root.latest() == "2026-11-03" and root.promoted() == ["2026-11-01", "2026-11-03"]
    assert not [n for n in root.path.subdirs() if n.startswith(".building")]


def test_forcing_a_rejected_version_needs_no_retraining(days, tmp_path):
    sound, broken = days
    root = ModelRoot.of(tmp_path / "models")
    run_training(_cfg(sound, root.path), run_date="2026-11-01", promote=GATE)
    with pytest.raises(PromotionRejected):
        run_training(_cfg(broken, root.path), run_date="2026-11-02", promote=GATE)
    weights = (root.path.local_path / "2026-11-02" / "model.pt").read_bytes()
    forced = run_training(_cfg(broken, root.path), run_date="2026-11-02", promote=GATE, force_promotion=True)
    assert forced.up_to_date and forced.promotion.decision == "forced" and "labels look broken" in \
        forced.promotion.reasons[0]
    assert root.record("2026-11-02").promotion["decision"] == "forced"
    assert (root.path.local_path / "2026-11-02" / "model.pt").read_bytes() == weights
    assert root.latest() == "2026-11-02" and root.promoted() == ["2026-11-01", "2026-11-02"]
