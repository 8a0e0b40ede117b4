"""The feature map: the one contract between preprocessing, training and scoring.

Preprocessing fits it on the training split and writes it into `manifest.json`; training builds
the model from it; scoring re-applies exactly these transforms. Plain JSON, no pickles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from deepfm import strict_json

MISSING_ID = 0  # the field's value was absent
OOV_ID = 1  # present, but rare in training or never seen (unless the field has oov_buckets)
FIRST_VALUE_ID = 2
# A missing dense value: 0.0 is the training mean after standardization, so it neither pushes nor pulls.
MISSING_DENSE_VALUE = 0.0

# The version of the encodings (parsing, tokens, log buckets, hashing, dense transforms) that turn
# raw values into model inputs. A model applies only to inputs encoded by the same version: bump it
# with any change to what a raw value encodes to (tests/pipelines/test_transforms_golden.py fails
# until then). 2: log_bucketize keeps 3 and 4 apart from the bucket of 1.
TRANSFORMS_VERSION = 2


class TransformsVersionError(ValueError):
    """Inputs or a model encoded by another version of the transforms than this code applies."""


@dataclass(frozen=True)
class FeatureField:
    """One model input field.

    `kind` is what the model sees: "categorical" (an id in [0, vocab_size)) or "dense" (a float
    that scales the field's embedding). `source_role` and `transform` say how it was derived.
    """

    name: str
    kind: Literal["categorical", "dense"]
    source_role: Literal["categorical", "numeric"]
    transform: str | None = None
    clip: tuple[float, float] | None = None
    # categorical
    vocab_size: int | None = None
    hash_buckets: int | None = None
    min_count: int | None = None
    top_k: int | None = None
    # the last oov_buckets ids of a looked-up field: its tail values, hashed (pipelines/vocab.py)
    oov_buckets: int | None = None
    # dense: statistics of the transformed training values
    mean: float | None = None
    std: float | None = None

    @property
    def first_oov_bucket(self) -> int:
        """The id of the first tail bucket: the vocabulary's values come before the buckets."""
        return int(self.vocab_size or 0) - int(self.oov_buckets or 0)


@dataclass(frozen=True)
class FeatureMap:
    label: str
    fields: tuple[FeatureField, ...]
    passthrough: tuple[str, ...] = ()
    vocab_fingerprint: str = ""
    hash_seed: int = 0
    missing_id: int = MISSING_ID
    oov_id: int = OOV_ID
    # 0: written before the transforms were versioned
    transforms_version: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def categorical(self) -> tuple[FeatureField, ...]:
        return tuple(f for f in self.fields if f.kind == "categorical")

    @property
    def dense(self) -> tuple[FeatureField, ...]:
        return tuple(f for f in self.fields if f.kind == "dense")

    @property
    def vocab_sizes(self) -> dict[str, int]:
        return {f.name: int(f.vocab_size or 0) for f in self.categorical}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fields"] = [asdict(f) for f in self.fields]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureMap:
        fields = tuple(
            FeatureField(**{**f, "clip": tuple(f["clip"]) if f.get("clip") else None})
            for f in data["fields"]
        )
        return cls(**{**data, "fields": fields, "passthrough": tuple(data.get("passthrough", ()))})

    def to_json(self) -> str:
        return strict_json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def check_transforms(self, source: object) -> None:
        """Refuse a feature map (from `source`, named in the error) that this code would encode differently."""
        if self.transforms_version != TRANSFORMS_VERSION:
            written = (f"version {self.transforms_version} of the transforms" if self.transforms_version
                       else "transforms from before they were versioned")
            raise TransformsVersionError(
                f"{source} was made with {written}; this code applies version {TRANSFORMS_VERSION}, which encodes "
                "some values differently: re-run preprocess and train with this version")
