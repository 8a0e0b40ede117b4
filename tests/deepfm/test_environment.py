"""The code digest a cluster stage compares between its driver and its executors (deepfm/environment.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from deepfm.environment import PACKAGES, code_digest
from tests.conftest import REPO_ROOT


def _digest_of(root) -> str:
    """The digest as an interpreter importing the packages from `root` computes it."""
    out = subprocess.run([sys.executable, "-c", "from deepfm.environment import code_digest; print(code_digest())"],
                         cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_the_digest_is_the_same_for_a_copy_of_the_code_and_changes_with_one_byte(tmp_path):
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert _digest_of(tmp_path) == code_digest()
    (tmp_path / "deepfm" / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "deepfm" / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"compiled")  # not code
    assert _digest_of(tmp_path) == code_digest()
    encode = tmp_path / "deepfm" / "features" / "encode.py"
    encode.write_text(encode.read_text() + "\n")
    assert _digest_of(tmp_path) != code_digest()


def test_the_smoke_check_imports_what_executors_import_and_names_the_code():
    out = subprocess.run([sys.executable, "-m", "deepfm.environment"], capture_output=True, text=True, check=True)
    identity = json.loads(out.stdout.strip().splitlines()[-1])
    assert identity["code"] == code_digest() and "horovod.torch" in identity["imported"]
