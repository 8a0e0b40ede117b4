"""Benchmark data made through the pipeline's own CLI: synthetic logs, generated then preprocessed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF_FILES = [str(ROOT / "conf" / name) for name in ("base.yaml", "datasets/synthetic.yaml", "env/local.yaml")]
CONF_ARGS = [arg for path in CONF_FILES for arg in ("--conf", path)]


def command(stage: str, *args: str) -> list[str]:
    """The `deepfm-pipeline STAGE` command line on the synthetic data set's configuration."""
    return [sys.executable, "-m", "jobs.cli", stage, *CONF_ARGS, *args]


def run_stage(stage: str, *args: str, quiet: bool = False) -> None:
    subprocess.run(command(stage, *args), cwd=ROOT, check=True, stdout=subprocess.DEVNULL if quiet else None)


def settings(*pairs: str) -> list[str]:
    """--set arguments: settings("a=1", "b=2") -> ["--set", "a=1", "--set", "b=2"]."""
    return [arg for pair in pairs for arg in ("--set", pair)]


def generate(rows: int, raw: Path, *overrides: str, quiet: bool = False) -> None:
    run_stage("generate", "--rows", str(rows), "--output", str(raw), *settings(*overrides), quiet=quiet)


def preprocess_args(raw: Path, out: Path, *overrides: str, force: bool = False) -> list[str]:
    return [*(["--force"] if force else []),
            *settings(f"dataset.input.path={raw}", f"preprocess.output={out}", *overrides)]


def preprocess(raw: Path, out: Path, *overrides: str, force: bool = False, quiet: bool = False) -> None:
    run_stage("preprocess", *preprocess_args(raw, out, *overrides, force=force), quiet=quiet)
