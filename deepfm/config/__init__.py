"""Typed, validated configuration: the one place where YAML becomes objects.

Files are layered left to right (`--conf base.yaml --conf datasets/criteo.yaml ...`), then
`--set key.path=value` overrides apply. Every error names the offending key and the file that set
it, and is raised before Spark starts.

base      strict models, paths made absolute once, the error types, dotted settings
dataset   the data set: tables, columns, joins, the split
stages    each stage's section (preprocess, generate, train, score, evaluate, spark, tune, tracking)
continual drift checks, the promotion gate, next-day evaluation
loading   the root `Config`, and `load_config`: YAML files and overrides into it
"""

from deepfm.config.base import ConfigError, PathStr, SettingError, absolute_path, with_settings
from deepfm.config.continual import DriftChecksConfig, NextDayConfig, PromoteConfig
from deepfm.config.dataset import ClickJoin, Column, ColumnSpec, DatasetConfig, SideTable, SplitConfig, TableSpec
from deepfm.config.loading import (
                                   RUN_DATE,
                                   Config,
                                   config_hash,
                                   find_conf,
                                   load_config,
                                   packaged_conf_dir,
                                   parse_run_date,
)
from deepfm.config.stages import (
                                   DriftConfig,
                                   EvaluateConfig,
                                   GenerateConfig,
                                   ModelConfig,
                                   PreprocessConfig,
                                   ScoreConfig,
                                   SearchRange,
                                   ShardConfig,
                                   SparkConfig,
                                   TrackingConfig,
                                   TrainConfig,
                                   TuneConfig,
                                   VocabConfig,
)

__all__ = [
    "RUN_DATE", "ClickJoin", "Column", "ColumnSpec", "Config", "ConfigError", "DatasetConfig", "DriftChecksConfig",
    "DriftConfig", "EvaluateConfig", "GenerateConfig", "ModelConfig", "NextDayConfig", "PathStr", "PreprocessConfig",
    "PromoteConfig", "ScoreConfig", "SearchRange", "SettingError", "ShardConfig", "SideTable", "SparkConfig",
    "SplitConfig", "TableSpec", "TrackingConfig", "TrainConfig", "TuneConfig", "VocabConfig", "absolute_path",
    "config_hash", "find_conf", "load_config", "packaged_conf_dir", "parse_run_date", "with_settings",
]
