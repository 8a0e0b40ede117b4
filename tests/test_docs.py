"""The documentation: the configuration reference is what docs/config_reference.py writes from
deepfm/config/, the site builds with MkDocs in strict mode (no broken link, no page left out),
and the README stays a front page."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

MKDOCS = Path(sys.executable).parent / "mkdocs"


def test_the_configuration_reference_is_generated_from_the_config_models():
    generator = runpy.run_path(str(REPO_ROOT / "docs" / "config_reference.py"))
    written = (REPO_ROOT / "docs" / "configuration.md").read_text()
    assert written == generator["render"](), "docs/configuration.md is stale: run python docs/config_reference.py"
    for key in ("`spark.executor_wait_s`", "`train.model.embedding_dim`", "`dataset.input.columns[].role`",
                "`score.keep`", "`tune.space.<key>.log`"):
        assert key in written, key


def test_the_site_builds_in_strict_mode(tmp_path):
    built = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO_ROOT,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()


def test_the_readme_is_a_front_page():
    assert len((REPO_ROOT / "README.md").read_text()) <= 12_000
