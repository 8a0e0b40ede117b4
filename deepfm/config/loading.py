"""The root configuration, and how YAML files and `--set` overrides become it: layered left to right,
every error naming the offending key and the file that set it, raised before Spark starts."""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import importlib.resources
import json
import os
import re
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError, model_validator

from deepfm.config.base import ConfigError, SettingError, _Strict, with_settings
from deepfm.config.continual import DriftChecksConfig, NextDayConfig, PromoteConfig
from deepfm.config.dataset import DatasetConfig
from deepfm.config.stages import (
    EvaluateConfig,
    GenerateConfig,
    PreprocessConfig,
    ScoreConfig,
    SparkConfig,
    TrackingConfig,
    TrainConfig,
    TuneConfig,
)


class Config(_Strict):
    spark: SparkConfig = SparkConfig()
    tracking: TrackingConfig = TrackingConfig()
    dataset: DatasetConfig | None = None
    preprocess: PreprocessConfig | None = None
    generate: GenerateConfig | None = None
    train: TrainConfig | None = None
    promote: PromoteConfig = PromoteConfig()
    drift: DriftChecksConfig = DriftChecksConfig()
    next_day: NextDayConfig | None = None
    score: ScoreConfig | None = None
    evaluate: EvaluateConfig | None = None
    tune: TuneConfig | None = None

    @model_validator(mode="after")
    def _search_space_fits_train(self) -> Config:
        """Every bound and choice of tune.space makes a valid train config, checked before any trial."""
        if self.tune is None or self.train is None:
            return self
        plain = self.train.model_dump(mode="json")
        for key, dimension in self.tune.space.items():
            for value in dimension.candidates():
                try:
                    TrainConfig.model_validate(with_settings(plain, {key.removeprefix("train."): value}))
                except ValidationError as err:
                    problem = err.errors()[0]
                    raise SettingError(("tune", "space", key), f"the value {value!r} is not a valid {key} "
                                                               f"({problem['msg']})") from None
        return self

    def require(self, section: str) -> Any:
        value = getattr(self, section)
        if value is None:
            raise ConfigError(f"missing section '{section}': add it to one of the --conf files")
        return value




def packaged_conf_dir() -> Path:
    """The default configuration: $DEEPFM_CONF_DIR when set, else the YAML shipped in this package."""
    override = os.environ.get("DEEPFM_CONF_DIR")
    return Path(override) if override else Path(str(importlib.resources.files("deepfm") / "conf"))


def find_conf(name: str | Path) -> Path:
    """A --conf argument: a file, else the packaged configuration of that name (`datasets/obd.yaml`,
    or `conf/datasets/obd.yaml` as the docs write it), so the commands work from any directory."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = packaged_conf_dir()
    if not path.is_absolute():
        relative = Path(*path.parts[1:]) if path.parts[:1] == ("conf",) and len(path.parts) > 1 else path
        if (packaged / relative).is_file():
            return packaged / relative
    shipped = sorted(str(p.relative_to(packaged)) for p in packaged.rglob("*.yaml"))
    raise ConfigError(f"config file not found: {name} (not a file, nor one of the packaged configurations "
                      f"in {packaged}: {', '.join(shipped)})")


RUN_DATE = "{run_date}"


def load_config(paths: Sequence[str | Path], overrides: Iterable[str] = (), run_date: str | None = None) -> Config:
    """Layer YAML files and `key.path=value` overrides, put the run date in for `{run_date}`, then validate.

    Raises:
        ConfigError: naming the key and the file (or override) that set it.
    """
    merged: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    for name in paths:
        path = find_conf(name)
        _merge(merged, _read_yaml(path), (), origin, str(path))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        try:
            value = yaml.load(raw, _UniqueKeyLoader) if raw else ""  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({_first_line(err)})") from err
        nested: dict[str, Any] = value
        for part in reversed(_key_path(key)):
            nested = {part: nested}
        _merge(merged, nested, (), origin, f"--set {item}")
    _fill_run_date(merged, run_date, (), origin)
    _refuse_removed_keys(origin)
    try:
        return Config.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_describe(err, origin)) from err


# Keys of earlier versions, with what to do instead: naming the file that still sets one.
_REMOVED_KEYS = {
    (section, key): "rows are parsed and encoded in Arrow, and in Spark SQL only where Arrow cannot (Parquet input, "
                    "timestamp columns, a vocabulary over preprocess.vocab.broadcast_max_entries): delete it"
    for section in ("preprocess", "score") for key in ("parse", "encode")
}


def _refuse_removed_keys(origin: dict[tuple[str, ...], str]) -> None:
    for key, what_to_do in _REMOVED_KEYS.items():
        if key in origin:
            raise ConfigError(f"{'.'.join(key)} (set in {origin[key]}) is no longer a setting: {what_to_do}")


# {run_date}, a day before or after it ({run_date-1d}), or a window of days ({run_date-6d..run_date}).
_DATED = re.compile(r"\{run_date(?:([+-])(\d+)d)?(?:\.\.run_date(?:([+-])(\d+)d)?)?\}")
MAX_WINDOW_DAYS = 366


def _fill_run_date(node: Any, run_date: str | None, path: tuple[str, ...],
                   origin: dict[tuple[str, ...], str]) -> Any:
    """Put the run date in every string value (dated layouts: `out/scores/run_date={run_date}`).

    `{run_date-Nd}` (or `+Nd`) is the date N days before (after) it. A window,
    `{run_date-6d..run_date}`, becomes the glob of its dates, `{2026-11-27,...,2026-12-03}`: an
    input path `logs/dt={run_date-6d..run_date}/` reads the seven days up to the run date, and
    the reader refuses a window with a day that has no files (pipelines/read.py).
    """
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = _fill_run_date(value, run_date, (*path, str(key)), origin)
    elif isinstance(node, list):
        return [_fill_run_date(v, run_date, path, origin) for v in node]
    elif isinstance(node, str) and _DATED.search(node):
        source = _source_of(path, origin)
        where = f"{'.'.join(path)}{f' (set in {source})' if source else ''}"
        if run_date is None:
            raise ConfigError(f"{where} uses {_DATED.search(node).group(0)}: pass --run-date YYYY-MM-DD")
        return _DATED.sub(lambda match: _dates(match, dt.date.fromisoformat(run_date), where), node)
    return node


def _dates(match: re.Match[str], run_date: dt.date, where: str) -> str:
    def day(sign: str | None, days: str | None) -> dt.date:
        return run_date + dt.timedelta(days=(-1 if sign == "-" else 1) * int(days or 0))

    first = day(match.group(1), match.group(2))
    if ".." not in match.group(0):
        return first.isoformat()
    last = day(match.group(3), match.group(4))
    count = (last - first).days + 1
    if not 1 <= count <= MAX_WINDOW_DAYS:
        raise ConfigError(f"{where}: the window {match.group(0)} is {first} .. {last}; give its first day, then its "
                          f"last, at most {MAX_WINDOW_DAYS} days apart")
    dates = [(first + dt.timedelta(days=d)).isoformat() for d in range(count)]
    return dates[0] if count == 1 else "{" + ",".join(dates) + "}"


def parse_run_date(text: str) -> str:
    """A run date (an Airflow logical date, `{{ ds }}`): YYYY-MM-DD, a real calendar day."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError
        dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--run-date must be a date as YYYY-MM-DD, got {text!r}") from None
    return text


# Mappings whose own keys contain dots (Spark properties): `--set spark.conf.spark.x.y=1`.
_DOTTED_KEY_MAPPINGS = (("spark", "conf"),)


def _key_path(key: str) -> list[str]:
    parts = key.split(".")
    for prefix in _DOTTED_KEY_MAPPINGS:
        if tuple(parts[: len(prefix)]) == prefix and len(parts) > len(prefix):
            return [*prefix, ".".join(parts[len(prefix):])]
    return parts


def config_hash(section: BaseModel, exclude: set[str] | None = None) -> str:
    """A stable fingerprint of a config section (sorted-key JSON, sha256), without the `exclude` keys."""
    blob = json.dumps(section.model_dump(mode="json", exclude=exclude), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split())


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that sets one key twice: PyYAML keeps the last
    silently, so the first setting a person reads in the file would not be the one in force."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise ConfigError(f"{key_node.start_mark.name}: the key '{key}' is set twice in one mapping, on "
                                  f"lines {first_line[key]} and {line}: keep one")
            first_line[key] = line
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as text:  # a stream, so that a mark names the file
            data = yaml.load(text, _UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_first_line(err)}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def _merge(
    into: dict[str, Any],
    new: dict[str, Any],
    prefix: tuple[str, ...],
    origin: dict[tuple[str, ...], str],
    source: str,
) -> None:
    """Deep-merge mappings; lists and scalars replace. Records which source set each key."""
    for key, value in new.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, path, origin, source)
        else:
            into[key] = value
            origin[path] = source
            for stale in [p for p in origin if p[: len(path)] == path and p != path]:
                del origin[stale]
        origin.setdefault(path, source)


def _describe(err: ValidationError, origin: dict[tuple[str, ...], str]) -> str:
    lines = []
    for item in err.errors():
        loc = tuple(str(p) for p in item["loc"] if not str(p).startswith("function-after"))
        raised = (item.get("ctx") or {}).get("error")
        if isinstance(raised, SettingError):
            loc = (*loc, *raised.loc)
        key = ".".join(loc) or "(top level)"
        source = _source_of(loc, origin)
        where = f" (set in {source})" if source else ""
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            nearest = _nearest_key(loc)
            msg = (f"unknown key; did you mean '{nearest}'?" if nearest else
                   "unknown key; check the spelling against the configuration reference, docs/configuration.md")
        lines.append(f"{key}{where}: {msg}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _nearest_key(loc: tuple[str, ...]) -> str | None:
    """The valid key beside an unknown one (`loc`) that is spelled most like it, as a full key path."""
    model: Any = Config
    keyed = False  # the next part of loc is a mapping's key or a list's index, not a field
    for part in loc[:-1]:
        if keyed:
            keyed = False
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        model, keyed = _model_within(field.annotation)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    nearest = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.6)
    return ".".join((*loc[:-1], nearest[0])) if nearest else None


def _model_within(annotation: Any) -> tuple[Any, bool]:
    """The config model an annotation holds (in an Optional, a list or a dict's values), and whether
    it is held in a list or dict."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    container = typing.get_origin(annotation) in (list, dict)
    for argument in typing.get_args(annotation):
        model, keyed = _model_within(argument)
        if model is not None:
            return model, keyed or container
    return None, False


def _source_of(loc: tuple[str, ...], origin: dict[tuple[str, ...], str]) -> str | None:
    # List indices are not tracked; walk up to the nearest key that a file set.
    for end in range(len(loc), 0, -1):
        if loc[:end] in origin:
            return origin[loc[:end]]
    sources = sorted({src for path, src in origin.items() if path[: len(loc)] == loc})
    return ", ".join(sources) or None
