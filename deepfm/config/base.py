"""What every configuration model shares: strict models, paths made absolute once, the error
types, and dotted settings applied to a plain configuration (`--set`, a tuning trial's values)."""

from __future__ import annotations

import json
import os
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration problem, phrased for the person who wrote the YAML."""


_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def absolute_path(path: str) -> str:
    """The one rule for every key that names a file or directory: a URI (`hdfs://`, `s3a://`,
    `file:/`) is kept as it is; a relative path is relative to the current directory of the command
    that loads the configuration, and becomes absolute at once, so that Spark executors and spawned
    training workers (whose current directories differ) all see the same location. An empty path
    is refused: it would mean the current directory, where a stage would then write its output."""
    if not path.strip():
        raise ValueError("an empty path: name a file or directory")
    if _URI.match(path):
        return path
    return os.path.abspath(os.path.expanduser(path))


# A file, directory or glob: local, or any URI a file system is installed for.
PathStr = Annotated[str, AfterValidator(absolute_path)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)




class SettingError(ValueError):
    """A model validator's complaint about one key (`loc`, below the model's own place), so that the
    error names that key and the file that set it, as a field's own error would."""

    def __init__(self, loc: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _is_field(model: type[BaseModel], path: list[str]) -> bool:
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    if len(path) == 1:
        return True
    nested = field.annotation
    return isinstance(nested, type) and issubclass(nested, BaseModel) and _is_field(nested, path[1:])


def with_settings(plain: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A copy of a config dict with each dotted key of `settings` (below its section) set."""
    out = json.loads(json.dumps(plain))
    for key, value in settings.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str) -> int:
    """Bytes in a size written as Spark writes them: 512m, 8g, 1.5g, 2048 (bytes)."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (e.g. 512m, 8g)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
