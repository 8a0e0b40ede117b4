"""Progress of a long job: one log line when each step starts and one with its time when it ends,
the step's name as the Spark job description, so the UI shows "fit vocabularies", not
"collect at vocab.py:112", and while it runs, a line every so often (deepfm/progress.py) with the
tasks of its running stages done, so that a log read later has no minutes of silence."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from deepfm import progress

log = logging.getLogger("pipelines")


@contextmanager
def step(what: str) -> Iterator[None]:
    context = _active_spark_context()
    if context is not None:
        context.setJobDescription(what)
    log.info("%s ...", what)
    start = time.perf_counter()
    reporter = _StageProgress(context, what) if context is not None else None
    if reporter is not None:
        reporter.start()
    try:
        yield
    finally:
        if reporter is not None:
            reporter.stop.set()
            reporter.join()
        if context is not None:
            context.setJobDescription(None)
    log.info("%s: done in %.1fs", what, time.perf_counter() - start)


class _StageProgress(threading.Thread):
    """Logs the running stages' tasks (done of all, and the time left at their pace so far) from
    Spark's status tracker, every progress interval, until the step ends."""

    def __init__(self, context, what: str) -> None:
        super().__init__(daemon=True, name=f"progress of {what}")
        self.context, self.what = context, what
        self.stop = threading.Event()
        self.start_time = time.monotonic()
        self.first_seen: dict[int, float] = {}

    def run(self) -> None:
        while not self.stop.wait(progress.interval_s()):
            try:
                self._report()
            except Exception:  # noqa: BLE001 - progress must never fail the job (a stopping context, say)
                log.debug("no progress from Spark's status tracker", exc_info=True)

    def _report(self) -> None:
        tracker = self.context.statusTracker()
        stages = [info for info in map(tracker.getStageInfo, tracker.getActiveStageIds()) if info is not None]
        elapsed = progress.duration(time.monotonic() - self.start_time)
        if not stages:
            log.info("%s: %s elapsed (between Spark stages)", self.what, elapsed)
            return
        now = time.monotonic()
        parts = []
        for info in sorted(stages, key=lambda s: s.stageId):
            done, total = info.numCompletedTasks, info.numTasks
            # pyspark's stage info has no start time: a stage is timed from when it was first seen
            running_s = now - self.first_seen.setdefault(info.stageId, now)
            left = f", {progress.duration(running_s * (total - done) / done)} left" if done and running_s else ""
            parts.append(f"stage {info.stageId}: {done}/{total} tasks done, {info.numActiveTasks} running{left}")
        log.info("%s: %s elapsed; %s", self.what, elapsed, "; ".join(parts))


def _active_spark_context():
    from pyspark import SparkContext

    return SparkContext._active_spark_context
