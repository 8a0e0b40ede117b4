"""Model versions: what the train stage writes and the score, evaluate, export and tracking stages read.

One version (a `ModelVersion`, read and written only here):

    model.pt                  weights (a plain state dict: loads with weights_only=True)
    model.json                model config, feature map, vocabulary fingerprint, training config, data
    metrics.json              the `TrainingResult`: test metrics and the per-epoch history
    version.json              the `VersionRecord`: run date, the signature of its input and config
    training_curves.png       loss and validation AUC against step
    vocab/vocabulary.parquet  the exact vocabulary the model was trained with
    model.torchscript.pt      after `deepfm-pipeline export`

Versions live in a model root (`ModelRoot`), each train run building a new one beside those in use:

    <train.output>/               the model's root
        2026-11-27/               a version
        2026-11-28/
        LATEST                    the name of the newest complete version
        .building-2026-11-29/     a run in progress, or one that was killed: --resume continues it
            training_signature    the input and config of the run that builds it (--resume auto)

A version is named by the run date (`--run-date`), else by the UTC time its run started, so names
sort by age. It is built in `.building-<version>/`, marked complete by `version.json`, and then
renamed into place on a local or HDFS root. An object store has no rename: the files are copied,
with `version.json` last. `LATEST` moves only after that, to the newest complete version; a
backfill of an older date does not move it back. A run that fails or is killed leaves every
version and `LATEST` as they were.

Readers name a version directory, the root (meaning its latest version), or `<root>/latest`; they
get a `ModelVersion`, checked for completeness, and never unpickle anything from it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import math
import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from deepfm import strict_json
from deepfm.errors import first_line
from deepfm.features.feature_map import FeatureMap
from deepfm.features.preprocess_output import PreprocessOutput
from deepfm.model import DeepFM, DeepFMConfig
from deepfm.storage.commit import swap_into_place
from deepfm.storage.files import ARROW_FILES
from deepfm.storage.location import Location, Where
from deepfm.training import checkpoint as ckpt
from deepfm.training.sharding import TABLE_KEY, StripedTable, assemble, place, stripe_file

log = logging.getLogger(__name__)

WEIGHTS = "model.pt"
MODEL_CONFIG = "model.json"
METRICS = "metrics.json"
VOCABULARY = "vocab/vocabulary.parquet"
CURVES = "training_curves.png"
TORCHSCRIPT = "model.torchscript.pt"
LATEST = "LATEST"
RECORD = "version.json"
BUILDING = ".building-"
BUILD_SIGNATURE = "training_signature"
# RowWiseAdagrad's sum for each table row at the end of training (deepfm/training/optim.py), for a
# warm start to take over with the rows; a sharded table's in stripes named after ACCUMULATOR_STEM.
ACCUMULATOR = "table_accumulator.pt"
ACCUMULATOR_STEM = "table_accumulator"


class ModelVersionError(ValueError):
    """A model root or version that is missing, incomplete or inconsistent, or cannot be used as asked."""


@dataclass(frozen=True)
class TrainingResult:
    """What a training run reports: rank 0 writes it as the version's metrics.json."""

    valid_auc_best: float  # NaN where the validation split has one class (see early_stopping_on)
    early_stopping_on: str  # "auc", or "-logloss"
    stopped: bool  # ended by the caller's stop_after_epoch (the tuner's pruning)
    test: dict[str, float]  # deepfm/training/metrics.py's binary_metrics on the test split
    epochs: int
    steps: int
    history: list[dict[str, Any]]  # per epoch: train_loss, valid_auc, valid_logloss, samples_per_s, lr
    workers: int
    regularization: dict[str, Any]  # the strengths as resolved for this data and batch
    replica_fingerprints: list[list[float]] = field(default_factory=list)
    warm_start: dict[str, Any] | None = None  # what was taken over from which version (deepfm/training/warm_start.py)

    def to_json(self) -> str:
        return strict_json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, directory: Where) -> TrainingResult:
        """The result in a version (or in the build of one: rank 0 writes it there)."""
        return cls.from_json((Location.of(directory) / METRICS).read_text())

    @classmethod
    def from_json(cls, text: str) -> TrainingResult:
        data = json.loads(text)
        # Strict JSON writes an undefined figure (the AUC of one class) as null: it reads back as NaN.
        return cls(**{**data, "valid_auc_best": _nan_for_null(data["valid_auc_best"]),
                      "test": {k: _nan_for_null(v) for k, v in data["test"].items()},
                      "history": [{k: _nan_for_null(v) for k, v in epoch.items()} for epoch in data["history"]]})


def _nan_for_null(value: Any) -> Any:
    return math.nan if value is None else value


@dataclass(frozen=True)
class VersionRecord:
    """version.json: written last when a version is committed, so its presence marks it complete."""

    version: str
    run_date: str | None
    signature: str  # of the preprocess output and training config (deepfm/training/launch.py's training_signature)
    data: str
    test: dict[str, float]
    committed_at: str
    # the version it was warm-started from (path, name, weights digest) and the embedding rows taken over
    warm_start: dict[str, Any] | None = None
    # the promotion gate's decision, figures and reasons (deepfm/training/promotion.py); None: before the gate
    promotion: dict[str, Any] | None = None

    @property
    def rejected(self) -> bool:
        """Kept as a version, but never LATEST: the promotion gate turned it down."""
        return self.promotion is not None and self.promotion.get("decision") == "rejected"

    def to_json(self) -> str:
        return strict_json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VersionRecord:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class ModelVersion:
    path: Location
    config: DeepFMConfig
    feature_map: FeatureMap
    vocab_fingerprint: str
    weights_digest: str  # content hash of the weights: two models with equal digests score identically
    train_config: dict[str, Any]  # the training config that trained it (even when the run was resumed)
    # Trained with sharded tables: the table is in this many stripe files beside the weights
    # (deepfm/training/sharding.py), which hold everything else. 0: the weights hold it all.
    table_stripes: int = 0

    @property
    def name(self) -> str:
        """The version's name (its run date or start time): its directory's name."""
        return self.path.name

    @property
    def weights(self) -> Location:
        return self.path / WEIGHTS

    @property
    def vocabulary(self) -> Location:
        return self.path / VOCABULARY

    @property
    def weight_files(self) -> list[Location]:
        """Every file of the weights: the weights and the table's stripes, if any."""
        return [self.weights, *(self.path / stripe_file(r, self.table_stripes) for r in range(self.table_stripes))]

    def state_dict(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The whole model's weights, the table put together from its stripes where it has them."""
        state = ckpt.load_torch(self.weights, device)
        if self.table_stripes:
            state[TABLE_KEY] = assemble([ckpt.load_torch(f, device) for f in self.weight_files[1:]])
        return state

    def weights_and_table_rows(self, rows: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Every weight but the table, and the table's `rows` alone (a warm start's; None: none),
        reading a sharded version's stripes one at a time, so that the whole table is never in memory."""
        state = ckpt.load_torch(self.weights, "cpu")
        whole = state.pop(TABLE_KEY, None)
        if rows is None or whole is not None:
            return state, None if rows is None else whole[rows]
        return state, _rows_of_stripes(self.weight_files[1:], rows)

    @property
    def accumulator_files(self) -> list[Location]:
        """The files of the table's row-wise optimizer state (ACCUMULATOR), striped as the table is."""
        if not self.table_stripes:
            return [self.path / ACCUMULATOR]
        return [self.path / stripe_file(r, self.table_stripes, ACCUMULATOR_STEM) for r in range(self.table_stripes)]

    def accumulator_rows(self, rows: torch.Tensor) -> torch.Tensor | None:
        """The row-wise optimizer's sums of the table's `rows` (a warm start's); None where the version
        keeps none (its tables trained with Adam)."""
        files = self.accumulator_files
        if not all(f.is_file() for f in files):
            return None
        if not self.table_stripes:
            return ckpt.load_torch(files[0], "cpu")[rows]
        return _rows_of_stripes(files, rows)

    def weights_bytes(self) -> bytes:
        """The whole model's weights as one `torch.save` file, for the readers that take bytes."""
        if not self.table_stripes:
            return self.weights.read_bytes()
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        return buffer.getvalue()

    @property
    def weights_size(self) -> int:
        """Bytes of all its weight files."""
        return sum(f.size for f in self.weight_files)

    def load(self, device: str | torch.device = "cpu", mapped_from: Sequence[str | Path] | None = None) -> DeepFM:
        """The model in eval mode, weights loaded with weights_only=True; with `mapped_from` (local
        copies of `weight_files`), memory-mapped from those instead of read (`map_model`).

        Score and evaluate call this on the driver before any input work, so that a corrupt or
        foreign model.pt fails in a second with its name, not in every executor minutes later.
        """
        try:
            if mapped_from is not None:
                return map_model(self.config, mapped_from).to(device)
            model = DeepFM(self.config)
            model.load_state_dict(self.state_dict(device))
        except pickle.UnpicklingError:
            # torch's message advises weights_only=False, which would run whatever code the file holds.
            raise ModelVersionError(f"{self.weights} holds objects other than tensors and was refused (loading it "
                                    "could run code): use a model.pt written by `deepfm-pipeline train`") from None
        except (RuntimeError, EOFError, KeyError, TypeError, ValueError) as err:
            raise ModelVersionError(f"{self.weights} is not a readable state dict of the model in "
                                    f"{self.path / MODEL_CONFIG} ({first_line(err)}): retrain, or copy the model "
                                    "directory again") from None
        return model.to(device).eval()

    def training_result(self) -> TrainingResult:
        return TrainingResult.read(self.path)

    def record(self) -> VersionRecord | None:
        """What the version records of its run; None for a model directory outside a model root."""
        path = self.path / RECORD
        return VersionRecord.from_json(path.read_text()) if path.is_file() else None


def map_model(config: DeepFMConfig, files: Sequence[str | Path]) -> DeepFM:
    """The model in eval mode over its weight files memory-mapped (`files`: local copies of a
    version's `weight_files`, in that order). Nothing is read until used, and the embedding table
    only where a batch looks it up: a process scores with a table bigger than its memory, and the
    Python workers of one machine share the pages. The table stays on the CPU (StripedTable)."""
    state = torch.load(files[0], map_location="cpu", mmap=True, weights_only=True)
    stripes = ([state.pop(TABLE_KEY)] if TABLE_KEY in state
               else [torch.load(f, map_location="cpu", mmap=True, weights_only=True) for f in files[1:]])
    rows, table = sum(config.vocab_sizes), StripedTable(stripes)
    if rows and table.rows != rows:
        raise ValueError(f"the table has {table.rows} rows, the model's fields {rows}")
    model = DeepFM(config, table if rows else None)
    model.load_state_dict(state, assign=True)  # assign: the mapped tensors themselves, not copies
    return model.eval()


def open_model_version(where: Where) -> ModelVersion:
    """Read and check a model version (a local path or URI), or a model root's latest version;
    every problem names the file to look at."""
    return _read_version(resolve(where))


def _read_version(path: Location) -> ModelVersion:
    missing = [name for name in (MODEL_CONFIG, WEIGHTS) if not (path / name).is_file()]
    if len(missing) == 2 and not path.is_dir():  # an object store has no directories, only its files
        raise ModelVersionError(f"model directory {path} does not exist (train one with `deepfm-pipeline train`)")
    if missing:
        raise ModelVersionError(f"{path / missing[0]} is missing: {path} is not a complete model directory")
    try:
        meta = json.loads((path / MODEL_CONFIG).read_text())
        config = DeepFMConfig.from_dict(meta["model"])
        fmap = FeatureMap.from_dict(meta["feature_map"])
        fingerprint = meta["vocab_fingerprint"]
    except (ValueError, KeyError, TypeError) as err:
        raise ModelVersionError(f"{path / MODEL_CONFIG} is unreadable: {err!r}") from err
    fmap.check_transforms(path / MODEL_CONFIG)
    stripes = int(meta.get("table_stripes", 0))
    version = ModelVersion(path, config, fmap, fingerprint, "", meta["train"], stripes)
    missing = [f for f in version.weight_files if not f.is_file()]
    if missing:
        raise ModelVersionError(f"{missing[0]} is missing: {path} is not a complete model directory")
    hashes = [_file_hash(f) for f in version.weight_files]
    digest = hashlib.sha256("".join(hashes).encode()).hexdigest() if stripes else hashes[0]
    return replace(version, weights_digest=digest[:16])


def write_model_version(out: Location, model: DeepFM, data: PreprocessOutput, train_config: dict[str, Any],
                        result: TrainingResult, table_stripes: int = 0) -> None:
    """Rank 0 writes everything but the weights (saved as training improves) and the curves."""
    ckpt.save_json({
        **({"table_stripes": table_stripes} if table_stripes else {}),
        "model": model.config.to_dict(),
        "feature_map": data.feature_map.to_dict(),
        "vocab_fingerprint": data.vocab_fingerprint,
        "data": str(data.location),
        "train": train_config,
    }, out / MODEL_CONFIG)
    (out / METRICS).write_text(result.to_json())
    if data.vocabulary.is_file():  # the scorer needs the exact vocabulary the model was trained with
        data.vocabulary.copy_to(out / VOCABULARY)


def _rows_of_stripes(files: list[Location], rows: torch.Tensor) -> torch.Tensor:
    """Global `rows` of a tensor kept in stripes (one file per worker, sharding.place), reading one
    stripe at a time."""
    owner, local = place(rows, len(files))
    picked = None
    for stripe_index, path in enumerate(files):
        stripe = ckpt.load_torch(path, "cpu")
        if picked is None:
            picked = stripe.new_empty((len(rows), *stripe.shape[1:]))
        here = owner == stripe_index
        picked[here] = stripe[local[here]]
    return picked


@dataclass(frozen=True)
class ModelRoot:
    path: Location

    @classmethod
    def of(cls, where: Where) -> ModelRoot:
        return cls(Location.of(where))

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        return sorted(name for name in self.path.subdirs()
                      if not name.startswith((".", "_")) and (self.path / name / RECORD).is_file())

    def promoted(self) -> list[str]:
        """Complete versions that the promotion gate did not turn down, oldest first: what LATEST and
        `train.warm_start: latest` choose from."""
        return [name for name in self.versions() if not self.record(name).rejected]

    def latest(self) -> str | None:
        """The version LATEST names; a pointer that is not the name of a complete version of this
        root (unreadable, a path, `..`, a version that is gone) is refused, never followed."""
        pointer = self.path / LATEST
        if not pointer.is_file():
            return None
        try:
            name = pointer.read_text().strip()
        except UnicodeDecodeError:
            raise ModelVersionError(f"{pointer} is not text: it must hold the name of a version in {self.path} (one of "
                               f"{self.versions() or 'none yet'}); write one there, or delete it") from None
        if (not name or "/" in name or "\\" in name or name.startswith((".", "_"))
                or not (self.path / name / RECORD).is_file()):  # what versions() lists, without listing them
            raise ModelVersionError(f"{pointer} names {name[:80]!r}, which is not a complete version in {self.path} "
                               f"(versions: {self.versions() or 'none yet'}): write one of them there, or delete it")
        return name

    def _pointer_text(self) -> str | None:
        pointer = self.path / LATEST
        return pointer.read_bytes().decode("utf-8", errors="replace").strip() if pointer.is_file() else None

    def record(self, version: str) -> VersionRecord | None:
        """What a complete version records of its run; None when the version is not complete."""
        path = self.path / version / RECORD
        return VersionRecord.from_json(path.read_text()) if path.is_file() else None

    def new_version_name(self, run_date: str | None) -> str:
        """The run date, else the UTC time (with -2, -3... when a run of the same second exists)."""
        if run_date:
            return run_date
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
        taken = {n.removeprefix(BUILDING) for n in self.path.subdirs()}
        return next(name for name in (stamp, *(f"{stamp}-{i}" for i in range(2, 10_000))) if name not in taken)

    def building(self, version: str) -> Location:
        return self.path / f"{BUILDING}{version}"

    def open_build(self, version: str) -> ModelVersion:
        """The trained, not yet committed, version in its build: what the promotion gate judges."""
        return _read_version(self.building(version))

    def check_replaceable(self, version: str) -> None:
        """A directory of a version's name that is not a complete version (a user's, another tool's)
        is never replaced: committing the version would delete it."""
        dest = self.path / version
        if dest.exists() and not (dest / RECORD).is_file():
            raise ModelVersionError(f"{dest} exists and is not a model version written by deepfm-pipeline (it has no "
                               f"{RECORD}): it is never replaced; move it away yourself, or choose another "
                               "train.output or --run-date")

    def start_build(self, version: str, signature: str) -> Location:
        """An empty build of `version` (a failed run's is dropped), marked with the signature of the
        input and config that will fill it."""
        self.check_replaceable(version)
        build = self.building(version)
        build.delete_dir()
        build.mkdir()
        (build / BUILD_SIGNATURE).write_text(signature + "\n")
        return build

    def resumable_with(self, signature: str, version: str | None = None) -> str | None:
        """`version` (else the newest interrupted build) when a run of this same input and config
        left it with a checkpoint; None otherwise."""
        version = version or self.resumable()
        if version is None or not (self.building(version) / ckpt.CHECKPOINT).is_file():
            return None
        marked = self.building(version) / BUILD_SIGNATURE
        return version if marked.is_file() and marked.read_text().strip() == signature else None

    def resumable(self) -> str | None:
        """The newest version whose build was left with a checkpoint (a killed or failed run)."""
        names = [n.removeprefix(BUILDING) for n in self.path.subdirs() if n.startswith(BUILDING)]
        return max((n for n in names if (self.building(n) / ckpt.CHECKPOINT).is_file()), default=None)

    def check_is_root(self) -> None:
        """A model directory of the earlier, unversioned layout is not a root: never build inside it."""
        if (self.path / MODEL_CONFIG).is_file():
            raise ModelVersionError(f"train.output {self.path} is a model directory, not a model root: versions are "
                               f"written under train.output, so choose a new one (e.g. {self.path.parent}/models/"
                               f"<name>); score and evaluate still read {self.path} as it is")

    def commit(self, version: str, record: VersionRecord) -> Location:
        """Make the build of `version` a complete version (replacing one of that name), then move LATEST."""
        build, dest = self.building(version), self.path / version
        self.check_replaceable(version)  # checked at the start too; a directory may appear while training
        (build / ckpt.CHECKPOINT).unlink()  # only an interrupted run resumes: a version is never trained further
        (build / BUILD_SIGNATURE).unlink()  # version.json records it
        (build / RECORD).write_text(record.to_json())
        swap_into_place(ARROW_FILES, str(build), str(dest), last=RECORD)
        newest = self.point_latest()
        log.info("committed model version %s%s; %s is %s", dest, " (rejected by the promotion gate)"
                 if record.rejected else "", LATEST, newest)
        return dest

    def point_latest(self) -> str | None:
        """Point LATEST at the newest promoted version and return it. A commit ends with this, and a
        rerun of a version that is up to date starts with it: a run killed between its commit and
        this step left LATEST on the version before, and a damaged LATEST is mended too."""
        promoted = self.promoted()
        newest = promoted[-1] if promoted else None
        if newest is not None and self._pointer_text() != newest:
            (self.path / LATEST).write_text(newest + "\n")
        elif newest is None:  # the root's only versions were turned down: nothing serves
            (self.path / LATEST).unlink(missing_ok=True)
        return newest

    def force_promotion(self, version: str) -> VersionRecord:
        """An operator's `--promote force` of a version the gate turned down: its record says so (the
        gate's figures and reasons kept), and LATEST moves unless a newer version serves."""
        record = self.record(version)
        if record is None or not record.rejected:
            raise ModelVersionError(f"{self.path / version} is not a version the promotion gate turned down")
        record = replace(record, promotion={**record.promotion, "decision": "forced"})
        (self.path / version / RECORD).write_text(record.to_json())  # atomic: a temporary file renamed over it
        log.info("model version %s promoted by force; %s is %s", version, LATEST, self.point_latest())
        return record


def resolve(where: Where) -> Location:
    """The model directory a reader means: a version (or any model directory) as it is, a root's
    latest version, or `<root>/latest`."""
    path = Location.of(where)
    if (path / MODEL_CONFIG).is_file():
        if (path.parent / LATEST).is_file() and not (path / RECORD).is_file():
            raise ModelVersionError(f"{path} is not a complete version ({RECORD} is missing): it is being written, or "
                               f"its copy was cut short; use {path.parent}/latest")
        return path
    root = ModelRoot(path.parent if path.name == "latest" else path)
    latest = root.latest()
    if latest is not None:
        return root.path / latest
    if path.name == "latest" or any(n.startswith(BUILDING) for n in root.path.subdirs()):
        raise ModelVersionError(f"{root.path} has no complete model version yet ({LATEST} is missing): wait for its "
                           "first `deepfm-pipeline train` to finish")
    return path


def _file_hash(path: Location) -> str:
    digest = hashlib.sha256()
    with path.filesystem.open_input_stream(path.path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
