"""The Python environment that executors run, and the proof that it runs this driver's code.

On a cluster the executors' interpreter is either the shipped archive (`make package`,
spark-submit.sh --ship-env) or an environment installed once on every worker
(scripts/install_worker_env.sh, spark-submit.sh --worker-env). Either can hold other code than the
driver's: an archive built before the last edit, a worker installed last week. Such executors would
parse, encode or score with other transforms than the driver's and nothing would fail, so a stage
on a cluster first asks its executors for the digest of the project's code they import and stops
when it differs.

`python -m deepfm.environment` imports what executors import and prints the digest: the smoke test
of an unpacked archive (package.sh, install_worker_env.sh).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import sys
import threading
from pathlib import Path

# What the wheel ships (pyproject's packages and package-data): the digest covers exactly that.
PACKAGES = ("deepfm", "pipelines", "jobs")
CODE_SUFFIXES = (".py", ".yaml", ".properties")
# What Python workers import on executors: parsing and encoding, scoring, the training processes.
EXECUTOR_MODULES = ("numpy", "pyarrow.parquet", "pandas", "torch", "torch.distributed", "sklearn.metrics",
                    "horovod.torch", "pipelines.score", "deepfm.training.train", "deepfm.training.readers")


def code_digest() -> str:
    """A digest of the project's code as this interpreter imports it (file names and bytes)."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        root = Path(importlib.util.find_spec(package).origin).parent
        files = sorted(p for p in root.rglob("*") if p.suffix in CODE_SUFFIXES and "__pycache__" not in p.parts
                       and p.is_file())
        for path in files:
            digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:16]


def identity(_=None) -> dict:
    """Run on an executor: which interpreter it is and which code it imports. Kept free of heavy
    imports so that the check costs the executor a Python worker start and no more."""
    try:
        code = code_digest()
    except (ImportError, AttributeError, OSError) as err:  # the project is not installed there
        code = f"unimportable: {type(err).__name__}: {err}"
    return {"python": sys.executable, "prefix": sys.prefix, "code": code, "host": os.uname().nodename}


class NoExecutorsError(ConnectionError):
    """No executor ran a stage's first tasks in time: a cluster without free cores or memory for the
    application. It may pass (exit 1, for the scheduler's retry)."""


def check_executors(spark, wait_s: float = 300.0) -> None:
    """On a cluster, every executor that answers must import the driver's code; no executor within
    `wait_s` is transient. Local masters run the driver's own interpreter and are not asked."""
    from deepfm.config import ConfigError

    context = spark.sparkContext
    if context.master.startswith("local") or context.applicationId in _checked:
        return
    conf = context.getConf()
    try:
        answers = _ask_executors(context, max(context.defaultParallelism, 1), wait_s)
    except TimeoutError:
        memory, cores = conf.get("spark.executor.memory", "1g"), conf.get("spark.executor.cores", "all of a worker")
        raise NoExecutorsError(
            f"no executor ran the stage's first tasks in {wait_s:g} s (spark.executor_wait_s): the cluster has no "
            f"free cores or memory for this application (spark.executor.memory={memory}, spark.executor.cores="
            f"{cores}): free some, or ask for less") from None
    except Exception as err:  # a worker whose interpreter cannot even start pyspark's worker
        python = conf.get("spark.pyspark.python", os.environ.get("PYSPARK_PYTHON", "python3"))
        raise ConfigError(f"spark.pyspark.python={python}: the executors cannot run it ({_reason(str(err))}): "
                          "ship the environment (spark-submit.sh --ship-env) or install it on every worker "
                          "(scripts/install_worker_env.sh, then --worker-env)") from None
    mine = code_digest()
    stale = {(a["host"], a["prefix"], a["code"]) for a in answers if a["code"] != mine}
    if stale:
        host, prefix, code = sorted(stale)[0]
        raise ConfigError(
            f"the executors' Python environment {prefix} on {host} holds other code than this driver's "
            f"(code digest {code}, the driver's {mine}): rebuild the archive with 'make package' "
            "(spark-submit.sh --ship-env), or reinstall the workers' environment with "
            "scripts/install_worker_env.sh (--worker-env)")
    _checked.add(context.applicationId)


def _ask_executors(context, tasks: int, wait_s: float) -> list[dict]:
    """`identity` from `tasks` tasks, as a job of its own group, cancelled after `wait_s`: Spark
    itself waits forever for executors that no worker has room for."""
    group, outcome = f"deepfm-environment-{context.applicationId}", {}

    def run() -> None:  # pinned-thread mode: the job group is this thread's
        context.setJobGroup(group, "deepfm: check the executors' Python environment", interruptOnCancel=True)
        try:
            outcome["answers"] = context.parallelize(range(tasks), tasks).map(identity).collect()
        except Exception as err:
            outcome["error"] = err

    thread = threading.Thread(target=run, name="deepfm-environment-check", daemon=True)
    thread.start()
    thread.join(wait_s)
    if thread.is_alive():
        context.cancelJobGroup(group)
        thread.join(30)
        raise TimeoutError(group)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["answers"]


_checked: set[str] = set()  # applications whose executors answered with this driver's code


def _reason(text: str) -> str:
    """The innermost error a failed check job reports, without Spark's wrapping."""
    found = re.findall(r"((?:[\w.]+\.)?\w+(?:Error|Exception)): ([^\n]+)", text)
    inner = [f for f in found if not f[0].endswith(("Py4JJavaError", "SparkException"))]
    name, message = (inner or found or [("error", text[:300])])[-1]
    return f"{name.rsplit('.', 1)[-1]}: {message.strip()}"


def main() -> int:
    """Import what executors import; print this environment's identity as one JSON line."""
    from deepfm.stack import carries_petastorm

    modules = [*EXECUTOR_MODULES, *(["petastorm"] if carries_petastorm() else [])]
    for module in modules:
        importlib.import_module(module)
    print(json.dumps({**identity(), "imported": modules}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
