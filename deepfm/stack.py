"""Which of the two tested dependency stacks this is, and what only one of them can run.

The named stack (constraints.txt: pyspark 3.5, pyarrow 14, numpy 1) runs every component; the
current Spark line (constraints-current.txt: pyspark 4, current pyarrow, numpy 2) runs all but
Petastorm, whose last release imports `pyarrow.filesystem` (gone since pyarrow 16) and was never
released for numpy 2. Choosing a component this stack cannot run is refused when the configuration
is read, naming the setting and the stack, not deep inside a job.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util


def versions() -> dict[str, str]:
    """The versions that tell the stacks apart."""
    return {name: _version(name) for name in ("pyspark", "pyarrow", "numpy", "pandas", "torch")}


def describe() -> str:
    return ", ".join(f"{name} {version}" for name, version in versions().items())


def carries_petastorm() -> bool:
    """Whether this stack is one Petastorm runs on (the named one), so it must be installed."""
    return int(_version("pyarrow").split(".")[0]) < 15


def why_not_petastorm() -> str | None:
    """Why this stack cannot run the Petastorm reader; None when it can."""
    if not carries_petastorm() or importlib.util.find_spec("petastorm") is None:
        return (f"this stack ({describe()}) has no working Petastorm: 0.12.1, its last release, needs pyarrow < 15 "
                "and numpy 1 (constraints.txt, the default `make setup`)")
    return None


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"
