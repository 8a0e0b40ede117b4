"""Progress lines for logs that nobody watches live (spark-submit's log, an Airflow task log, a
training worker's stderr), where a terminal's progress bar shows nothing: a line at most every
`interval_s()` seconds with the work done, its rate and the time left.
"""

from __future__ import annotations

import logging
import os
import time


def interval_s() -> float:
    """Seconds between progress lines: $DEEPFM_PROGRESS_S, else 30."""
    return float(os.environ.get("DEEPFM_PROGRESS_S", "30"))


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Periodic:
    """Logs how far `what` is (`done` of `total` units) when the interval has passed since the last line."""

    def __init__(self, log: logging.Logger, what: str, total: int, unit: str) -> None:
        self.log, self.what, self.total, self.unit = log, what, total, unit
        self.start = self.last = time.monotonic()
        self.interval = interval_s()

    def update(self, done: int, note: str = "") -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        left = f", {duration((self.total - done) / rate)} left" if rate > 0 and self.total >= done else ""
        share = f" ({100 * done / self.total:.0f}%)" if self.total else ""
        self.log.info("%s: %d/%d %s%s, %s elapsed%s%s", self.what, done, self.total, self.unit, share,
                      duration(now - self.start), left, f"; {note}" if note else "")
