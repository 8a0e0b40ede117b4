"""Progress of a long job, one log line when each step starts and one with its time when it ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("pipelines")


@contextmanager
def step(what: str) -> Iterator[None]:
    log.info("%s ...", what)
    start = time.perf_counter()
    yield
    log.info("%s: done in %.1fs", what, time.perf_counter() - start)
