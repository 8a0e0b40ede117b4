"""Progress of a long job: one log line when each step starts and one with its time when it ends,
and the step's name as the Spark job description, so the UI shows "fit vocabularies", not
"collect at vocab.py:112"."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("pipelines")


@contextmanager
def step(what: str) -> Iterator[None]:
    context = _active_spark_context()
    if context is not None:
        context.setJobDescription(what)
    log.info("%s ...", what)
    start = time.perf_counter()
    try:
        yield
    finally:
        if context is not None:
            context.setJobDescription(None)
    log.info("%s: done in %.1fs", what, time.perf_counter() - start)


def _active_spark_context():
    from pyspark import SparkContext

    return SparkContext._active_spark_context
