"""The preprocess output: what the preprocess stage hands to training, scoring and evaluation.

    manifest.json             the contract: inputs, row counts, the feature map, the vocabulary's fingerprint
    vocab/vocabulary.parquet  (field, value, id, count) of every kept value and tail bucket
    vocab_summary.json        per categorical field: size, hashing, min count, top k, tail buckets
    rejects/                  malformed rows with their reason
    train/ valid/ test/       encoded Parquet shards
    holdout/                  the test split's rows as parsed, before any transform: what the promotion
                              gate scores a candidate and the serving model on, each with its own encoding
    _SUCCESS                  written last, when the directory is committed

This module is the one reader and writer of these names: the preprocess job writes a `Manifest`
through `PreprocessOutput.write_manifest`, and every other stage opens a `PreprocessOutput` and reads
typed fields, never the JSON by key.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from deepfm import strict_json
from deepfm.features.feature_map import FeatureMap
from deepfm.storage.files import ARROW_FILES, Files
from deepfm.storage.location import Location, Where

MANIFEST = "manifest.json"
VOCABULARY = "vocab/vocabulary.parquet"
VOCAB_SUMMARY = "vocab_summary.json"
REJECTS = "rejects"
HOLDOUT = "holdout"
Split = Literal["train", "valid", "test"]


class ManifestError(ValueError):
    """A preprocess manifest that cannot be read."""


class _Record(BaseModel):
    # Keys written by earlier versions and no longer read (manifest_version, splits) are ignored.
    model_config = ConfigDict(extra="ignore", frozen=True)


class InputFiles(_Record):
    """One input table as the run found it; `fingerprint` (names, sizes, times) decides up-to-date."""

    path: str
    files: int
    bytes: int
    fingerprint: str


class TableRows(_Record):
    input: int
    accepted: int
    rejected: int
    rejected_by_reason: dict[str, int] = {}


class SplitRows(_Record):
    rows: int
    label_rate: float | None


class RowCounts(TableRows):
    """The main input's counts, every table's, and each split's (accepted input rows = sum of splits)."""

    tables: dict[str, TableRows]
    splits: dict[str, SplitRows]


class VocabularyFile(_Record):
    path: str
    fingerprint: str


class Manifest(_Record):
    dataset: str
    code_version: str
    transforms_version: int
    config_hash: str  # of the sections that shape the output
    created_at: str
    inputs: dict[str, InputFiles]
    label: str
    field_order: list[str]
    vocab_sizes: dict[str, int]
    vocab: VocabularyFile
    feature_map: dict[str, Any]  # FeatureMap.to_dict(); PreprocessOutput.feature_map reads it
    kept_columns: list[str]
    rows: RowCounts
    shards: dict[str, Any]
    # pipelines/drift_checks.py's figures: per field, missing rate, OOV rate and PSI against the references
    drift: dict[str, Any] | None = None

    def to_json(self) -> str:
        return strict_json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)

    @classmethod
    def parse(cls, text: str, where: object) -> Manifest:
        """The manifest in `text` (read from `where`, which errors name)."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as err:
            problem = err.errors()[0]
            where_in_file = ".".join(str(part) for part in problem["loc"])
            detail = f"{where_in_file}: {problem['msg']}" if where_in_file else problem["msg"]
            raise ManifestError(f"{where} is not a readable preprocess manifest ({' '.join(detail.split())[:120]}): "
                                "rerun preprocess with --force to rewrite the output") from None


class PreprocessOutput:
    """A committed preprocess output directory, opened and checked once."""

    def __init__(self, path: Where, manifest: Manifest, manifest_text: str) -> None:
        self.location = Location.of(path)
        self.manifest = manifest
        self._manifest_text = manifest_text

    @classmethod
    def open(cls, where: Where, files: Files | None = None) -> PreprocessOutput:
        """Read the manifest of the output at `where` (through `files`: Hadoop's file systems for the
        Spark stages, pyarrow's by default) and refuse one this code's transforms would not reproduce."""
        path = manifest_path(where)
        files = files or ARROW_FILES
        if not files.is_file(path):
            raise FileNotFoundError(f"{path} not found: {where} must be a preprocess output directory "
                                    "(run `deepfm-pipeline preprocess`)")
        text = files.read_text(path)
        output = cls(where, Manifest.parse(text, path), text)
        output.feature_map.check_transforms(path)
        return output

    @staticmethod
    def write_manifest(directory: str, manifest: Manifest, files: Files) -> None:
        files.write_text(manifest_path(directory), manifest.to_json())

    @cached_property
    def feature_map(self) -> FeatureMap:
        try:
            return FeatureMap.from_dict(self.manifest.feature_map)
        except (KeyError, TypeError, ValueError) as err:
            raise ManifestError(f"{manifest_path(self.location)} is not a readable preprocess manifest (feature_map: "
                                f"{err!r}): rerun preprocess with --force to rewrite the output") from None

    @property
    def vocabulary(self) -> Location:
        return self.location / self.manifest.vocab.path

    @property
    def vocab_fingerprint(self) -> str:
        return self.manifest.vocab.fingerprint

    def split(self, name: Split) -> Location:
        return self.location / name

    @property
    def holdout(self) -> Location | None:
        """The test split's raw rows; None in an output written before preprocess wrote them."""
        path = self.location / HOLDOUT
        return path if path.is_dir() else None

    def rows(self, split: Split) -> int:
        return self.manifest.rows.splits[split].rows

    @property
    def manifest_bytes(self) -> bytes:
        """The manifest as written: it changes with every rebuild (it records its creation time)."""
        return self._manifest_text.encode()


def manifest_path(directory: Where) -> str:
    return f"{str(directory).rstrip('/')}/{MANIFEST}"
